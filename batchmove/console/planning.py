"""From an upload (or a job file of the jobs folder) to a plan and the digest an approval names.

The job a run directory runs is written here, as `job.toml`: the console's defaults, then the
analyst's settings, with `input` pointing at the copy of the input beside it. Its digest is the
input's bytes plus that job text, so an approval is refused when either changed since the plan
was shown (a re-uploaded sheet, an edited job file, a new defaults file).

`plan_in_worker` runs in the console's planning process (a process pool of one), so a
1,000,000-row parse never stalls the console's event loop.
"""

from __future__ import annotations

import hashlib
import shutil
import tomllib
from pathlib import Path
from typing import Any

from batchmove import api
from batchmove.console.runfiles import (
    JOB_TOML,
    PLAN_DIR,
    dump_toml,
    safe_suffix,
    write_private,
)
from batchmove.errors import BatchmoveError, JobFileError, UsageError
from batchmove.intake import jobfile, loader
from batchmove.ledger.store import LEDGER_NAME, Ledger

#: what the upload form may set (everything else comes from --defaults)
UPLOAD_SETTINGS = ("backend", "target", "create_groups", "rate")
_HASH_CHUNK = 1 << 20


def upload_job(defaults: dict[str, Any], settings: dict[str, Any], name: str,
               input_name: str) -> dict[str, Any]:
    """defaults < the form's settings < the input the console stored."""
    job = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()}
    job.pop("out", None)
    job.update({k: v for k, v in settings.items() if k in UPLOAD_SETTINGS})
    job["name"] = name
    job["input"] = input_name
    return job


def read_settings(form: dict[str, str]) -> dict[str, Any]:
    """The upload form's fields -> job keys; a bad value is a UsageError naming the field."""
    settings: dict[str, Any] = {}
    backend = form.get("backend", "") or "groups"
    if backend not in ("groups", "tags"):
        raise UsageError(f'backend must be "groups" or "tags", got {backend[:30]!r}')
    settings["backend"] = backend
    target = form.get("target", "") or "auto"
    if target not in ("auto", "id", "name", "set"):
        raise UsageError(f'target must be "auto", "id", "name" or "set", got {target[:30]!r}')
    if target != "auto":
        settings["target"] = target
    settings["create_groups"] = form.get("create_groups", "") in ("1", "true", "on", "yes")
    rate = form.get("rate", "").strip()
    if rate:
        try:
            settings["rate"] = float(rate)
        except ValueError:
            raise UsageError(f"rate must be a number of calls per second, got {rate[:30]!r}")\
                from None
    return settings


def jobfile_job(job_path: Path) -> tuple[dict[str, Any], Path | None]:
    """A job file of the jobs folder -> (its keys, with paths made absolute; its input, or
    None for a segment job: `[select]` lists its input from the account when it runs)."""
    try:
        data = tomllib.loads(job_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobFileError(f"{job_path.name}: cannot read the job file ({exc})") from None
    spec = jobfile.spec_for(job_path)  # every key checked, with the file's name in messages
    data.pop("out", None)
    data.setdefault("name", job_path.stem)
    sandbox = data.get("sandbox")
    if isinstance(sandbox, dict) and spec.sandbox.get("users_file"):
        sandbox["users_file"] = spec.sandbox["users_file"]
    return data, (None if spec.select is not None else spec.input)


def digest_of(input_path: Path | None, job: dict[str, Any]) -> str:
    """sha256 of the input's bytes and the job's text: what an approval is bound to. A
    segment job has no input bytes yet (its followers are listed when it runs): its text."""
    h = hashlib.sha256()
    if input_path is not None:
        with input_path.open("rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
    return hashlib.sha256(h.digest() + dump_toml(job).encode()).hexdigest()


def write_job(run_dir: Path, job: dict[str, Any], source_input: Path | None) -> Path:
    """job.toml (and, for a job file, a copy of its input) into the run directory."""
    if source_input is not None:
        suffix = safe_suffix(source_input.name) or ".csv"
        shutil.copyfile(source_input, run_dir / f"input{suffix}")
        (run_dir / f"input{suffix}").chmod(0o600)
        job = job | {"input": f"input{suffix}"}
    path = write_private(run_dir / JOB_TOML, dump_toml(job).encode())
    jobfile.spec_for(path)
    return path


# --- in the planning process ------------------------------------------------------------------
def plan_in_worker(run_dir_text: str) -> dict[str, Any]:
    """Plan the run directory's job.toml exactly as `batchmove plan` does; never raises (the
    result crosses a process boundary)."""
    run_dir = Path(run_dir_text)
    try:
        plan = api.plan(api.job_spec(run_dir / JOB_TOML, out=str(run_dir)))
    except BatchmoveError as exc:
        return {"ok": False, "error": exc.message, "exit_code": exc.exit_code}
    data = plan.as_dict()
    data.pop("plan_json", None)
    return {"ok": True, "plan": data, "exit_code": plan.exit_code, "message": plan.message}


def scratch_in_worker(run_dir_text: str) -> str | None:
    """Every input row into plan/ledger.sqlite, so the invalid rows can be paged by row number
    before the run has a ledger of its own. Loaded after the plan is shown (and only when it
    has invalid or duplicate rows): the plan does not wait for it. None, or why it failed."""
    run_dir = Path(run_dir_text)
    plan_dir = run_dir / PLAN_DIR
    try:
        spec = api.job_spec(run_dir / JOB_TOML, out=str(run_dir))
        for name in (LEDGER_NAME, f"{LEDGER_NAME}-wal", f"{LEDGER_NAME}-shm"):
            (plan_dir / name).unlink(missing_ok=True)
        source = loader.open_input(spec)
        with Ledger(plan_dir).open() as ledger:
            ledger.load_rows(source.rows(), source.settle)
    except BatchmoveError as exc:
        return exc.message
    return None


def warm_up() -> bool:
    """Import what planning needs, so the first upload does not wait for it."""
    import batchmove.flows.run  # noqa: F401  (pandas, the engine)

    return True
