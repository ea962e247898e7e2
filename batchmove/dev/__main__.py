"""Set-up and the two Quickstart commands, using nothing but the standard library.

    python3 -m batchmove.dev sample   # run jobs/sample.toml end to end on the embedded sandbox
    python3 -m batchmove.dev test     # lint, type-check, then the whole test suite (slow included)

Each creates `.venv/` beside `pyproject.toml` and installs the project into it the first time,
and again only when `pyproject.toml` changes (a stamp file holds its hash), so both commands are
idempotent and work on a fresh machine that has only Python 3.11 and pip. Each then byte-compiles
`batchmove/` where its sources changed (`compile_package`). Extra arguments are passed through,
e.g. `python3 -m batchmove.dev test -k ledger`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv"
STAMP = VENV / ".batchmove-installed"


def _venv_bin(name: str) -> Path:
    sub = "Scripts" if os.name == "nt" else "bin"
    return VENV / sub / name


def ensure_env() -> Path:
    """Create the virtualenv and install the project with its test extras, if not up to date."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    python = _venv_bin("python")
    if python.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return python
    if not python.exists():
        print(f"batchmove.dev: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("batchmove.dev: installing batchmove and its dependencies", file=sys.stderr)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "-e", f"{ROOT}[test]"], check=True)
    STAMP.write_text(wanted + "\n")
    return python


def compile_package(python: Path) -> None:
    """Byte-compile `batchmove/`, only the modules whose source changed (pip does this for any
    install but an editable one). Where PYTHONDONTWRITEBYTECODE is set (as on the CI machine)
    Python never writes the bytecode of an editable install itself, and every `batchmove`
    command (the test suite runs hundreds) compiled its ~90 modules again: ~0.1 s each time.
    A module that does not compile is left to the command that imports it to report."""
    subprocess.run([str(python), "-m", "compileall", "-q", str(ROOT / "batchmove")],
                   cwd=ROOT, stdout=subprocess.DEVNULL, check=False)


def _run(cmd: list[str]) -> int:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


def cmd_test(python: Path, extra: list[str]) -> int:
    """Lint, types and the full suite: what CI runs."""
    linted = [d for d in ("batchmove", "tests", "bench") if (ROOT / d).is_dir()]
    steps = [
        [str(python), "-m", "ruff", "check", *linted],
        [str(python), "-m", "mypy"],
        [str(python), "-m", "pytest", "-m", "slow or not slow", "-q", *extra],
    ]
    for step in steps:
        code = _run(step)
        if code != 0:
            return code
    return 0


def cmd_sample(python: Path, extra: list[str]) -> int:
    code = _run([str(python), "-m", "batchmove", "run", "jobs/sample.toml", "--yes", *extra])
    if code == 1:  # the sample's deliberately bad rows: exactly what it is meant to show
        print("batchmove.dev: exit 1 means 'finished with row failures': the sample has a few "
              "deliberately bad rows; see runs/sample/report.csv and failed.csv",
              file=sys.stderr)
        return 0
    return code


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"test": cmd_test, "sample": cmd_sample}
    if not args or args[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    python = ensure_env()
    compile_package(python)
    return commands[args[0]](python, args[1:])


if __name__ == "__main__":
    sys.exit(main())
