"""The console's files inside a run directory, beside the run's own.

    <workspace>/<id>/console.json   what the console knows: source, settings, digest, people
                    approval.json    who approved (or discarded) the plan: created once
                    input.csv|xlsx   the analyst's bytes, under a generated name (mode 600)
                    job.toml         the job the child runs (`batchmove run job.toml --out .`)
                    plan/            the plan's scratch ledger (invalid rows, paged)
                    console.log      the child's stdout and stderr
    <workspace>/console-id          the console's own id: its address is /c/<id>/

Ids are generated (`20261201-104512-3f9a`) or, for runs started from the CLI, the directory's
own name; either way only `[A-Za-z0-9._-]` and never a path, so no id reaches outside the
workspace.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchmove.errors import UsageError

CONSOLE_JSON = "console.json"
APPROVAL = "approval.json"  # created once, O_EXCL: the one approval (or discard) of a plan
JOB_TOML = "job.toml"
PLAN_DIR = "plan"
CHILD_LOG = "console.log"
INPUT_SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xlsm")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
INSTANCE_FILE = "console-id"
_INSTANCE = re.compile(r"[0-9a-f]{16}")


def new_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def run_path(workspace: Path, run_id: str) -> Path | None:
    """The run directory of `run_id`, or None when the id is not one (`..`, `a/b`, ...)."""
    if not _ID.fullmatch(run_id) or run_id.startswith(".."):
        return None
    path = workspace / run_id
    return path if path.parent == workspace else None


def safe_suffix(filename: str) -> str | None:
    """The input suffix a browser's file name ends with; None when it is no spreadsheet."""
    suffix = Path(filename.replace("\\", "/")).suffix.lower()
    return suffix if suffix in INPUT_SUFFIXES else None


def display_name(filename: str) -> str:
    """The file's own name for people (escaped where shown), without any directory part."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return "".join(c for c in name if c.isprintable())[:120] or "upload"


def job_name(filename: str) -> str:
    """A run name (`name` job key) from an uploaded file's name: a directory-safe stem."""
    stem = Path(display_name(filename)).stem
    safe = re.sub(r"[^\w.-]+", "_", stem).strip("._")
    return safe[:60] or "upload"


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def write_private(path: Path, data: bytes) -> Path:
    """Owner-only file, written to a temp name and renamed (no half file is ever seen)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def instance_id(workspace: Path) -> str:
    """The console's id in this workspace (its pages live under `/c/<id>/`): made once at
    random and kept, so a console started again keeps its address and bookmarks keep working.
    Published with a hard link, so two consoles starting at once agree on one id."""
    path = private_dir(workspace) / INSTANCE_FILE
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=workspace, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_hex(8) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    found = path.read_text(encoding="ascii", errors="replace").strip()
    if not _INSTANCE.fullmatch(found):
        raise UsageError(f"{path} does not hold a console id (16 hex digits): remove it and "
                         "a new one is made (the console's address changes)")
    return found


def claim(path: Path, data: dict[str, Any]) -> bool:
    """Create `path` holding `data` unless it exists: True for the one caller that created
    it (O_CREAT | O_EXCL is atomic across threads and processes)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return True


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} when it is missing, damaged or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_state(run_dir: Path) -> dict[str, Any]:
    """console.json, or {} for a run the console did not start (or a damaged file)."""
    return read_json(run_dir / CONSOLE_JSON)


def update_state(run_dir: Path, **changes: Any) -> dict[str, Any]:
    state = read_state(run_dir) | changes
    write_private(run_dir / CONSOLE_JSON,
                  json.dumps(state, ensure_ascii=False, indent=2).encode())
    return state


# --- job.toml -----------------------------------------------------------------------------------
def dump_toml(job: dict[str, Any]) -> str:
    """The job as TOML: plain keys first, then one [table] per dict (jobs nest no deeper)."""
    plain = {k: v for k, v in job.items() if not isinstance(v, dict)}
    lines = [f"{_key(k)} = {_value(v)}" for k, v in plain.items()]
    for name, table in job.items():
        if isinstance(table, dict):
            lines += ["", f"[{_key(name)}]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON escapes are TOML basic-string ones
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} into a job file")
