"""What the console does, apart from HTTP: plan, approve, start, stop, resume, verify, roll back.

The pages and the JSON API are two thin skins over one `Console`. A run directory holds every
fact (console.json, job.toml, the ledger, the reports), so a console started again later finds
every run where the previous one left it.
"""

from __future__ import annotations

import asyncio
import shutil
import tomllib
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from batchmove import api
from batchmove.console import planning
from batchmove.console.exports import EXPORT_FILES, export_args, export_job
from batchmove.console.progress import Watcher
from batchmove.console.runfiles import (
    JOB_TOML,
    PLAN_DIR,
    dump_toml,
    new_id,
    now,
    private_dir,
    read_state,
    run_path,
    update_state,
    write_private,
)
from batchmove.console.runs import Supervisor, describe
from batchmove.errors import BatchmoveError, JobFileError, RunStateError, UsageError
from batchmove.intake import jobfile
from batchmove.ledger.reader import LedgerReader
from batchmove.ledger.store import LEDGER_NAME
from batchmove.models import JobSpec

MB = 1 << 20
#: the files a run's page offers for download
DOWNLOADS = ("report.xlsx", "report.csv", "failed.csv", "summary.json", *EXPORT_FILES)
_ALSO_SERVED = ("rollback.csv", "plan.json")
#: job keys a rollback keeps from the run it undoes (where to send, how fast, as whom)
_ROLLBACK_KEEPS = ("api_base", "credentials", "rate", "concurrency", "retries", "timeout",
                   "backend", "sandbox", "max_failure_rate")


class NotFound(Exception):
    """No such run, job file or file."""


class Refused(Exception):
    """The action does not fit the run's state; `info` is the run as it is now."""

    def __init__(self, message: str, info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.info = info


@dataclass(frozen=True)
class ConsoleConfig:
    workspace: Path
    jobs: Path | None = None
    defaults_path: Path | None = None
    max_upload: int = 200 * MB
    host: str = "127.0.0.1"
    port: int = 8700


def read_defaults(path: Path | None) -> dict[str, Any]:
    """The defaults file's job keys, checked like a job file's (a bad key is refused)."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobFileError(f"{path}: cannot read the defaults file ({exc})") from None
    data.pop("input", None)
    probe = path.parent / f".{path.name}.check.toml"
    try:
        probe.write_text(dump_toml(planning.upload_job(data, {}, "check", str(path))),
                         encoding="utf-8")
        jobfile.spec_for(probe)
    finally:
        probe.unlink(missing_ok=True)
    return data


@dataclass
class Console:
    config: ConsoleConfig
    supervisor: Supervisor = field(default_factory=Supervisor)
    watcher: Watcher = field(default_factory=Watcher)
    planner: Executor | None = None  # given: shared (tests); None: our own, made on demand
    _own_pool: ProcessPoolExecutor | None = None
    _scratch: dict[Path, asyncio.Future[str | None]] = field(default_factory=dict)

    # --- reading ---------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        path = run_path(self.config.workspace, run_id)
        if path is None or not path.is_dir():
            raise NotFound(f"no run {run_id!r} in the workspace")
        return path

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the workspace, the console's and the CLI's, newest first."""
        found = []
        for path in self.config.workspace.iterdir():
            if run_path(self.config.workspace, path.name) is None or not path.is_dir():
                continue
            if (path / LEDGER_NAME).exists() or read_state(path):
                found.append((path.stat().st_mtime, path))
        found.sort(reverse=True)
        return [self.describe(path) for _, path in found]

    def describe(self, run_dir: Path) -> dict[str, Any]:
        return describe(run_dir, self.supervisor.live_pid(run_dir) is not None)

    def info(self, run_id: str) -> dict[str, Any]:
        """The run with its plan (while planned) and the files it offers."""
        run_dir = self.run_dir(run_id)
        info = self.describe(run_dir)
        state = read_state(run_dir)
        info["plan"] = state.get("plan")
        info["digest"] = state.get("digest") if info["state"] == "planned" else None
        info["can_run"] = bool((state.get("plan") or {}).get("can_run"))
        info["files"] = [n for n in DOWNLOADS if (run_dir / n).is_file()]
        info["resumable"] = bool(state.get("approved_at")) and (run_dir / JOB_TOML).exists()
        info["verifying"] = info["state"] == "running" and self.verifying(run_dir)
        return info

    def verifying(self, run_dir: Path) -> bool:
        """Is the live process a `verify` (not the run itself)?"""
        child = read_state(run_dir).get("child")
        return isinstance(child, dict) and child.get("kind") == "verify"

    def default_rate(self) -> float | str:
        """The rate an upload gets when the form leaves it empty."""
        try:
            rate = read_defaults(self.config.defaults_path).get("rate")
        except BatchmoveError:
            rate = None
        return float(rate) if isinstance(rate, int | float) else JobSpec(Path()).rate

    def jobs(self) -> list[str]:
        folder = self.config.jobs
        if folder is None or not folder.is_dir():
            return []
        return sorted(p.name for p in folder.glob("*.toml") if p.is_file())

    def listed_rows(self, run_id: str, statuses: tuple[str, ...], offset: int,
                    limit: int) -> dict[str, Any]:
        """A page of invalid/duplicate (or failed) rows, from the run's ledger or the plan's
        (`loading` while the plan's is still being filled)."""
        run_dir = self.run_dir(run_id)
        source = run_dir if (run_dir / LEDGER_NAME).exists() else run_dir / PLAN_DIR
        loading = self._scratch.get(run_dir)
        if source != run_dir and loading is not None and not loading.done():
            return {"total": 0, "offset": offset, "rows": [], "loading": True}
        try:
            with LedgerReader(source) as reader:
                counts = reader.totals()
                rows = reader.listed(statuses, offset, limit)
        except RunStateError:
            return {"total": 0, "offset": offset, "rows": []}
        return {"total": sum(counts.get(s, 0) for s in set(statuses)), "offset": offset,
                "rows": [r._asdict() for r in rows]}

    def file(self, run_id: str, name: str) -> Path:
        path = self.run_dir(run_id) / name
        if name not in (*DOWNLOADS, *_ALSO_SERVED) or not path.is_file():
            raise NotFound(f"no file {name!r} in run {run_id}")
        return path

    # --- planning --------------------------------------------------------------------------
    def new_run(self, **state: Any) -> Path:
        run_dir = private_dir(self.config.workspace / new_id())
        update_state(run_dir, created_at=now(), **state)
        return run_dir

    def discard(self, run_dir: Path) -> None:
        shutil.rmtree(run_dir, ignore_errors=True)

    async def plan_upload(self, run_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
        update_state(run_dir, settings=settings)
        return await self._plan(run_dir)

    async def plan_jobfile(self, name: str) -> dict[str, Any]:
        if name not in self.jobs() or self.config.jobs is None:
            raise NotFound(f"no job file {name!r} in the jobs folder")
        run_dir = self.new_run(source="job", job_file=name, name=Path(name).stem,
                               input_name=name)
        try:
            return await self._plan(run_dir)
        except BatchmoveError:
            self.discard(run_dir)
            raise

    def _job(self, run_dir: Path) -> tuple[dict[str, Any], Path | None]:
        """The job as it would be planned now, and the file to copy in as its input."""
        state = read_state(run_dir)
        if state.get("source") == "job" and self.config.jobs is not None:
            return planning.jobfile_job(self.config.jobs / state["job_file"])
        if state.get("source") == "rollback":
            return state["job"], None
        job = planning.upload_job(read_defaults(self.config.defaults_path),
                                  state.get("settings", {}), state.get("name", "upload"),
                                  state["input_file"])
        return job, None

    def _current_digest(self, run_dir: Path) -> str:
        job, source = self._job(run_dir)
        if source is not None:
            return planning.digest_of(source, job)
        return planning.digest_of(run_dir / job["input"] if "input" in job else None, job)

    async def _plan(self, run_dir: Path) -> dict[str, Any]:
        """job.toml from the sources, its digest, then the plan (in the planning process)."""
        job, source = self._job(run_dir)
        planning.write_job(run_dir, job, source)
        digest = await asyncio.to_thread(self._current_digest, run_dir)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._planner(), planning.plan_in_worker,
                                            str(run_dir))
        if not result["ok"]:
            update_state(run_dir, error=result["error"], plan=None, digest=None)
            raise UsageError(result["error"])
        update_state(run_dir, plan=result["plan"], digest=digest, error=None,
                     plan_message=result["message"], planned_at=now())
        self._load_scratch(run_dir, result["plan"])
        return self.info(run_dir.name)

    def _load_scratch(self, run_dir: Path, plan: dict[str, Any]) -> None:
        """Start loading the rows the plan page lists, if it lists any (in the background)."""
        rows = plan.get("rows", {})
        if not (rows.get("invalid") or rows.get("duplicate")):
            return
        loop = asyncio.get_running_loop()
        self._scratch[run_dir] = loop.run_in_executor(
            self._planner(), planning.scratch_in_worker, str(run_dir))

    def _planner(self) -> Executor:
        """Two planning processes: a plan never waits behind the scratch load of another."""
        if self.planner is None:
            self._own_pool = ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn"))
            self.planner = self._own_pool
        return self.planner

    def warm_up(self) -> None:
        """Start the planning processes now, so the first upload does not wait for imports."""
        pool = self._planner()
        for _ in range(2):
            pool.submit(planning.warm_up)

    # --- acting ----------------------------------------------------------------------------
    async def approve(self, run_id: str, digest: str) -> dict[str, Any]:
        """Start the run, if the digest is the plan's and the sources still match it."""
        run_dir = self.run_dir(run_id)
        info = self.info(run_id)
        if info["state"] != "planned":
            raise Refused(f"the run is {info['state']}, not awaiting approval", info)
        if not info["can_run"]:
            why = (info["plan"] or {}).get("blocked") or info["message"] or "no plan"
            raise Refused(f"this plan cannot run: {why}", info)
        current = await asyncio.to_thread(self._current_digest, run_dir)
        if current != info["digest"]:
            raise Refused("stale", await self._plan(run_dir))
        if digest != info["digest"]:
            raise Refused("stale", info)
        update_state(run_dir, approved_at=now(), approved_digest=digest)
        self.supervisor.start(run_dir)
        return self.info(run_id)

    def stop(self, run_id: str) -> dict[str, Any]:
        if not self.supervisor.stop(self.run_dir(run_id)):
            raise Refused("the run is not running here", self.info(run_id))
        return self.info(run_id)

    def resume(self, run_id: str) -> dict[str, Any]:
        run_dir = self.run_dir(run_id)
        info = self.info(run_id)
        if info["state"] not in ("stopped", "failed") or not info["resumable"]:
            raise Refused("only a stopped run started from this console can be resumed here "
                          "(resume a command-line run with the same command)", info)
        self._start(run_dir)
        return self.info(run_id)

    def start_export(self, settings: dict[str, Any]) -> dict[str, Any]:
        """A new run directory whose child is `batchmove export` (settings: exports.py)."""
        run_dir = self.new_run(source="export", name="followers", settings=settings,
                               approved_at=now())
        write_private(run_dir / JOB_TOML,
                      dump_toml(export_job(read_defaults(self.config.defaults_path))).encode())
        self._start(run_dir)
        return self.info(run_dir.name)

    async def plan_export(self, run_id: str) -> dict[str, Any]:
        """A finished export's file becomes the input of a new planned run (a no-op as it is;
        people edit the file and upload it, or plan it here to see that it moves nobody)."""
        info = self.info(run_id)
        files = [n for n in EXPORT_FILES if n in info["files"]]
        if info.get("kind") != "export" or info["state"] != "finished" or not files:
            raise Refused("only a finished export's file can be planned", info)
        suffix = Path(files[0]).suffix
        new_dir = self.new_run(source="upload", input_name=files[0], name="followers",
                               input_file=f"input{suffix}")
        shutil.copyfile(self.run_dir(run_id) / files[0], upload_path(new_dir, suffix))
        upload_path(new_dir, suffix).chmod(0o600)
        try:
            return await self.plan_upload(new_dir, {"backend": info["backend"]})
        except BatchmoveError:
            self.discard(new_dir)
            raise

    def _start(self, run_dir: Path) -> None:
        """Start (or resume: the same command) the run's child, a run or an export."""
        state = read_state(run_dir)
        if state.get("source") == "export":
            self.supervisor.start(run_dir, "export", *export_args(run_dir, state["settings"]))
        else:
            self.supervisor.start(run_dir)

    def verify(self, run_id: str) -> dict[str, Any]:
        run_dir = self.run_dir(run_id)
        info = self.info(run_id)
        if info["state"] not in ("finished", "stopped") or not info["counts"].get("moved"):
            raise Refused("only a run that moved users can be verified", info)
        self.supervisor.start(run_dir, "verify")
        return self.info(run_id)

    async def rollback(self, run_id: str) -> dict[str, Any]:
        """rollback.csv of the run becomes the input of a new planned run."""
        run_dir = self.run_dir(run_id)
        info = self.info(run_id)
        if info["state"] not in ("finished", "stopped"):
            raise Refused(f"the run is {info['state']}: wait for it to end", info)
        new_dir = self.new_run(source="rollback", rollback_of=run_id,
                               name=f"{info['job']}-rollback", input_name="rollback.csv")
        try:
            undo = await asyncio.to_thread(api.rollback, run_dir, new_dir / "input.csv")
            job = self._rollback_job(run_dir, info, undo.needs_blacklist)
            update_state(new_dir, job=job, input_file="input.csv")
            return await self._plan(new_dir)
        except BatchmoveError:
            self.discard(new_dir)
            raise

    def _rollback_job(self, run_dir: Path, info: dict[str, Any],
                      blacklist: bool) -> dict[str, Any]:
        base: dict[str, Any] = read_defaults(self.config.defaults_path)
        if (run_dir / JOB_TOML).exists():
            with (run_dir / JOB_TOML).open("rb") as f:
                base |= {k: v for k, v in tomllib.load(f).items() if k in _ROLLBACK_KEEPS}
        base = {k: v for k, v in base.items() if k in _ROLLBACK_KEEPS}
        if "api_base" not in base and (run_dir / LEDGER_NAME).exists():
            with LedgerReader(run_dir) as reader:  # a run from the CLI: its own API
                api_base = reader.meta().get("api_base")
            if api_base:
                base["api_base"] = api_base
        job = base | {"name": f"{info['job']}-rollback", "input": "input.csv",
                      "backend": info["backend"]}
        if blacklist:
            job["allow_blacklist"] = True
        return job

    def close(self) -> None:
        self.watcher.close()
        self.supervisor.shutdown()
        if self._own_pool is not None:
            self._own_pool.shutdown(wait=False, cancel_futures=True)
            self._own_pool = self.planner = None



def upload_path(run_dir: Path, suffix: str) -> Path:
    """The generated name an upload is stored under (never the browser's file name)."""
    return run_dir / f"input{suffix}"
