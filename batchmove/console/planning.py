"""From an upload (or a job file of the jobs folder) to a plan and the digest an approval names.

The job a run directory runs is written here, as `job.toml`: the console's defaults, then the
analyst's settings, with `input` pointing at the copy of the input beside it. Its digest is the
input's bytes plus that job text, so an approval is refused when either changed since the plan
was shown (a re-uploaded sheet, an edited job file, a new defaults file).

`plan_in_worker` runs in a planning process of the console's, so a 1,000,000-row parse never
stalls the console's event loop; the plan keeps its row ledger in `plan/`, where the page
lists the invalid and duplicate rows (the input is parsed once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import tomllib
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from batchmove import api
from batchmove.console.runfiles import (
    JOB_TOML,
    PLAN_DIR,
    dump_toml,
    read_state,
    safe_suffix,
    update_state,
    write_private,
)
from batchmove.errors import BatchmoveError, JobFileError, UsageError
from batchmove.models import JobSpec

#: what the upload form may set (everything else comes from --defaults)
UPLOAD_SETTINGS = ("backend", "target", "create_groups", "rate")
#: job keys a rollback keeps from the run it undoes (where to send, how fast, as whom)
_ROLLBACK_KEEPS = ("api_base", "credentials", "rate", "concurrency", "retries", "timeout",
                   "backend", "sandbox", "max_failure_rate")
_HASH_CHUNK = 1 << 20


def read_defaults(path: Path | None) -> dict[str, Any]:
    """The defaults file's job keys, checked like a job file's (a bad key is refused)."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobFileError(f"{path}: cannot read the defaults file ({exc})") from None
    data.pop("input", None)
    api.job_spec(data, source=path, need_input=False)  # every key checked, the file named
    sandbox = data.get("sandbox")
    for key in ("from", "users_file"):  # relative to the defaults file, not to a run's job
        if isinstance(sandbox, dict) and isinstance(sandbox.get(key), str):
            sandbox[key] = str(path.parent.absolute() / Path(sandbox[key]).expanduser())
    return data


@dataclass
class Planner:
    """Plans in planning processes of the console's own (`executor`: given, or two made on
    demand), and what a plan is bound to (the job as it would be planned now, its digest)."""

    jobs: Path | None
    defaults_path: Path | None
    executor: Executor | None = None
    _own_pool: ProcessPoolExecutor | None = None

    def job(self, run_dir: Path) -> tuple[dict[str, Any], Path | None]:
        """The job as it would be planned now, and the file to copy in as its input."""
        state = read_state(run_dir)
        if state.get("source") == "job" and self.jobs is not None:
            return jobfile_job(self.jobs / state["job_file"])
        if state.get("source") == "rollback":
            return state["job"], None
        job = upload_job(read_defaults(self.defaults_path), state.get("settings", {}),
                         state.get("name", "upload"), state["input_file"])
        return job, None

    def digest(self, run_dir: Path) -> str:
        job, source = self.job(run_dir)
        if source is not None:
            return digest_of(source, job)
        return digest_of(run_dir / job["input"] if "input" in job else None, job)

    async def plan(self, run_dir: Path) -> None:
        """job.toml from the sources, its digest, then the plan (in a planning process),
        recorded in console.json; a plan that cannot be made is a UsageError."""
        job, source = self.job(run_dir)
        write_job(run_dir, job, source)
        digest = await asyncio.to_thread(self.digest, run_dir)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool(), plan_in_worker, str(run_dir))
        if not result["ok"]:
            update_state(run_dir, error=result["error"], plan=None, digest=None)
            raise UsageError(result["error"])
        overlaps = await asyncio.to_thread(claim, run_dir, "pending")  # in the console's own
        update_state(run_dir, plan=result["plan"], digest=digest, error=None,  # registry
                     plan_message=result["message"], planned_at=api.now(), overlaps=overlaps)

    def default_rate(self) -> float | str:
        """The rate an upload gets when the form leaves it empty ("auto" by default)."""
        try:
            rate = read_defaults(self.defaults_path).get("rate")
        except BatchmoveError:
            rate = None
        return float(rate) if isinstance(rate, int | float) else JobSpec(Path()).rate

    def rollback_job(self, run_dir: Path, info: dict[str, Any],
                     blacklist: bool) -> dict[str, Any]:
        """The job of a run's undo: its connection keys, its backend, rollback.csv."""
        base: dict[str, Any] = read_defaults(self.defaults_path)
        if (run_dir / JOB_TOML).exists():
            with (run_dir / JOB_TOML).open("rb") as f:
                base |= {k: v for k, v in tomllib.load(f).items() if k in _ROLLBACK_KEEPS}
        base = {k: v for k, v in base.items() if k in _ROLLBACK_KEEPS}
        if "api_base" not in base:  # a run from the CLI: its own API
            api_base = api.view_run(run_dir).api_base
            if api_base:
                base["api_base"] = api_base
        job = base | {"name": f"{info['job']}-rollback", "input": "input.csv",
                      "backend": info["backend"]}
        if blacklist:
            job["allow_blacklist"] = True
        return job

    def _pool(self) -> Executor:
        """Two planning processes: one big upload's plan does not hold up another's."""
        if self.executor is None:
            self._own_pool = ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn"))
            self.executor = self._own_pool
        return self.executor

    def warm_up(self) -> None:
        """Start the planning processes now, so the first upload does not wait for imports."""
        pool = self._pool()
        for _ in range(2):
            pool.submit(warm_up)

    def close(self) -> None:
        """End the planning processes at once: a plan they finish now could not be recorded
        (the console that would record it is stopping), and Python would otherwise wait at
        exit for them, e.g. 4 s for processes still importing pandas after a start."""
        pool = self._own_pool
        if pool is None:
            return
        self._own_pool = self.executor = None
        workers = list(getattr(pool, "_processes", None) or {})  # CPython's, 3.8 to 3.14
        pool.shutdown(wait=False, cancel_futures=True)
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


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
    spec = api.job_spec(job_path)  # every key checked, with the file's name in messages
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
    api.job_spec(path)
    return path


# --- in the planning process ------------------------------------------------------------------
def plan_in_worker(run_dir_text: str) -> dict[str, Any]:
    """Plan the run directory's job.toml exactly as `batchmove plan` does; never raises (the
    result crosses a process boundary)."""
    run_dir = Path(run_dir_text)
    try:  # overlaps block no plan here: the approver sees them and acknowledges them
        plan = api.plan(api.job_spec(run_dir / JOB_TOML, out=str(run_dir), allow_overlap=True),
                        rows_dir=run_dir / PLAN_DIR)
    except BatchmoveError as exc:
        return {"ok": False, "error": exc.message, "exit_code": exc.exit_code}
    data = plan.as_dict()
    data.pop("plan_json", None)
    data.pop("rows_dir", None)
    return {"ok": True, "plan": data, "exit_code": plan.exit_code, "message": plan.message}


def claim(run_dir: Path, state: str) -> list[dict[str, Any]]:
    """Register the run on its account ("pending" while planned, "approved"), its users read
    from the plan's rows; the live runs it overlaps now, as dicts."""
    if not (run_dir / JOB_TOML).exists():
        return []
    found = api.claim_run(run_dir / JOB_TOML, state=state, rows_dir=run_dir / PLAN_DIR,
                          out=str(run_dir), allow_overlap=True)
    return [{"run_dir": o.run_dir, "job": o.job, "state": o.state, "users": o.users}
            for o in found]


def release(run_dir: Path) -> None:
    """The run's claim on its account goes (a discarded plan)."""
    if (run_dir / JOB_TOML).exists():
        api.release_run(run_dir / JOB_TOML, out=str(run_dir))


def account_view(run_dir: Path, workspace: Path) -> dict[str, Any]:
    """Who shares the run's account now: {"sharing": other runs holding a share of its rate,
    "ahead": runs registered before it and still on} (runs of the workspace by id, others
    by job name: no server path reaches the page)."""
    try:
        status = api.account_status(run_dir / JOB_TOML, out=str(run_dir))
    except BatchmoveError:
        return {"sharing": 0, "ahead": []}
    mine = str(run_dir.absolute())
    ahead = [{"id": _run_id(r.run_dir, workspace), "job": r.job, "state": r.state}
             for r in status.ahead_of(mine)]
    sharing = status.sharing - (1 if any(r.run_dir == mine and r.state == "running"
                                         for r in status.runs) else 0)
    return {"sharing": max(0, sharing), "ahead": ahead}


def _run_id(run_dir: str, workspace: Path) -> str | None:
    path = Path(run_dir)
    return path.name if path.parent == workspace else None


def warm_up() -> bool:
    """Import what planning needs, so the first upload does not wait for it."""
    import batchmove.api  # noqa: F401  (pandas, the engine)

    return True
