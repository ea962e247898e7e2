"""What the console does, apart from HTTP: plan, approve, start, stop, resume, verify, roll back,
discard, each on behalf of a person.

The pages and the JSON API are two thin skins over one `Console`. A run directory holds every
fact (console.json, job.toml, the ledger, the reports), so a console started again later finds
every run where the previous one left it.

An approval is an atomic state change: the approver's claim is `approval.json`, created with
O_EXCL, so of N simultaneous approvals (in one console or in two on one workspace) exactly one
starts a run and the others are refused with the run as it is; a discard claims the same file,
so a plan is either discarded or approved, never both.
"""

from __future__ import annotations

import asyncio
import shutil
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from batchmove import api
from batchmove.console import planning
from batchmove.console.exports import EXPORT_FILES, export_args, export_job
from batchmove.console.people import Person
from batchmove.console.planning import Planner, read_defaults
from batchmove.console.progress import Watcher
from batchmove.console.runfiles import (
    APPROVAL,
    JOB_TOML,
    PLAN_DIR,
    claim,
    dump_toml,
    new_id,
    private_dir,
    read_json,
    read_state,
    run_path,
    update_state,
    write_private,
)
from batchmove.console.runs import Supervisor, run_record
from batchmove.errors import BatchmoveError, RunStateError
from batchmove.models import RowStatus

MB = 1 << 20
#: the files a run's page offers for download
DOWNLOADS = ("report.xlsx", "report.csv", "failed.csv", "summary.json", *EXPORT_FILES)
_ALSO_SERVED = ("rollback.csv", "plan.json")
NO_TARGET = "no target of this plan can be used"


class NotFound(Exception):
    """No such run, job file or file."""


class Forbidden(Exception):
    """This person may not do this (a role too low, the four-eyes rule)."""


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
    four_eyes: bool = False  # a plan is approved by someone other than its submitter
    public_urls: tuple[str, ...] = ()


def blocked(plan: dict[str, Any] | None) -> str | None:
    """Why a plan offers no approval (None: it may be approved)."""
    if not plan:
        return "no plan"
    if not plan.get("can_run"):
        return str(plan.get("blocked") or "the plan cannot run")
    groups = plan.get("groups") or {}
    if not (groups.get("users_per_group") or groups.get("create")):
        return NO_TARGET
    return None


@dataclass
class Console:
    config: ConsoleConfig
    executor: Executor | None = None  # the planning processes (given: shared, in tests)
    supervisor: Supervisor = field(default_factory=Supervisor)
    watcher: Watcher = field(default_factory=Watcher)
    _locks: dict[Path, asyncio.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.planner = Planner(self.config.jobs, self.config.defaults_path, self.executor)

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
            if read_state(path) or api.view_run(path).counts is not None:
                found.append((path.stat().st_mtime, path))
        found.sort(reverse=True)
        return [self.record(path) for _, path in found]

    def record(self, run_dir: Path) -> dict[str, Any]:
        return run_record(run_dir, self.supervisor.live_pid(run_dir) is not None)

    def info(self, run_id: str) -> dict[str, Any]:
        """The run with its plan (while planned), the people and the files it offers."""
        run_dir = self.run_dir(run_id)
        info = self.record(run_dir)
        state = read_state(run_dir)
        approval = read_json(run_dir / APPROVAL)
        why_not = blocked(state.get("plan"))
        info |= {
            "plan": state.get("plan"),
            "digest": state.get("digest") if info["state"] == "planned" else None,
            "can_run": why_not is None, "blocked": why_not,
            "files": [n for n in DOWNLOADS if (run_dir / n).is_file()],
            "resumable": bool(state.get("approved_at")) and (run_dir / JOB_TOML).exists()
            and not (info["kind"] == "export" and info["state"] == "failed"),
            "verifying": info["state"] == "running" and self.verifying(run_dir),
            "submitted_by": state.get("submitted_by"),
            "approved_by": approval.get("by") or state.get("approved_by"),
            "approved_at": state.get("approved_at"),
            "overlaps": [self._linked(o) for o in state.get("overlaps") or []],
        }
        return info

    def account(self, run_id: str) -> dict[str, Any]:
        """Who shares the run's account now (`sharing`, `ahead`: planning.account_view)."""
        return planning.account_view(self.run_dir(run_id), self.config.workspace)

    def _linked(self, overlap: dict[str, Any]) -> dict[str, Any]:
        """An overlap as the page shows it: the other run's id when it is in the workspace,
        never its path."""
        path = Path(str(overlap.get("run_dir", "")))
        here = path.parent == self.config.workspace
        return {"id": path.name if here else None, "job": overlap.get("job"),
                "state": overlap.get("state"), "users": overlap.get("users")}

    def verifying(self, run_dir: Path) -> bool:
        """Is the live process a `verify` (not the run itself)?"""
        child = read_state(run_dir).get("child")
        return isinstance(child, dict) and child.get("kind") == "verify"

    def default_rate(self) -> float | str:
        return self.planner.default_rate()

    def jobs(self) -> list[str]:
        folder = self.config.jobs
        if folder is None or not folder.is_dir():
            return []
        return sorted(p.name for p in folder.glob("*.toml") if p.is_file())

    def listed_rows(self, run_id: str, statuses: tuple[str, ...], offset: int,
                    limit: int) -> dict[str, Any]:
        """A page of invalid/duplicate (or failed) rows, from the run's ledger or the plan's."""
        run_dir = self.run_dir(run_id)
        for source in (run_dir, run_dir / PLAN_DIR):  # the run's ledger, else the plan's
            try:
                watch = api.watch_run(source)
            except RunStateError:
                continue
            try:
                counts = cast(dict[str, int], watch.counts())
                rows = watch.rows(statuses, offset, limit)
            finally:
                watch.close()
            return {"total": sum(counts.get(s, 0) for s in set(statuses)), "offset": offset,
                    "rows": [r._asdict() for r in rows]}
        return {"total": 0, "offset": offset, "rows": []}

    def file(self, run_id: str, name: str) -> Path:
        path = self.run_dir(run_id) / name
        if name not in (*DOWNLOADS, *_ALSO_SERVED) or not path.is_file():
            raise NotFound(f"no file {name!r} in run {run_id}")
        return path

    # --- planning --------------------------------------------------------------------------
    def new_run(self, by: Person, **state: Any) -> Path:
        run_dir = private_dir(self.config.workspace / new_id())
        update_state(run_dir, created_at=api.now(), submitted_by=by.name, **state)
        return run_dir

    def remove(self, run_dir: Path) -> None:
        shutil.rmtree(run_dir, ignore_errors=True)

    async def plan_upload(self, run_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
        update_state(run_dir, settings=settings)
        await self.planner.plan(run_dir)
        return self.info(run_dir.name)

    async def plan_jobfile(self, name: str, by: Person) -> dict[str, Any]:
        if name not in self.jobs() or self.config.jobs is None:
            raise NotFound(f"no job file {name!r} in the jobs folder")
        run_dir = self.new_run(by, source="job", job_file=name, name=Path(name).stem,
                               input_name=name)
        return await self._plan_new(run_dir)

    async def _plan_new(self, run_dir: Path) -> dict[str, Any]:
        try:
            await self.planner.plan(run_dir)
        except BatchmoveError:
            self.remove(run_dir)
            raise
        return self.info(run_dir.name)

    async def plan_export(self, run_id: str, by: Person) -> dict[str, Any]:
        """A finished export's file becomes the input of a new planned run (a no-op as it is;
        people edit the file and upload it, or plan it here to see that it moves nobody)."""
        info = self.info(run_id)
        files = [n for n in EXPORT_FILES if n in info["files"]]
        if info.get("kind") != "export" or info["state"] != "finished" or not files:
            raise Refused("only a finished export's file can be planned", info)
        suffix = Path(files[0]).suffix
        new_dir = self.new_run(by, source="upload", input_name=files[0], name="followers",
                               input_file=f"input{suffix}",
                               settings={"backend": info["backend"]})
        shutil.copyfile(self.run_dir(run_id) / files[0], upload_path(new_dir, suffix))
        upload_path(new_dir, suffix).chmod(0o600)
        return await self._plan_new(new_dir)

    async def rollback(self, run_id: str, by: Person) -> dict[str, Any]:
        """rollback.csv of the run becomes the input of a new planned run."""
        run_dir = self.run_dir(run_id)
        info = self.info(run_id)
        if info["state"] not in ("finished", "stopped"):
            raise Refused(f"the run is {info['state']}: wait for it to end", info)
        new_dir = self.new_run(by, source="rollback", rollback_of=run_id,
                               name=f"{info['job']}-rollback", input_name="rollback.csv")
        try:
            undo = await asyncio.to_thread(api.rollback, run_dir, new_dir / "input.csv")
            job = self.planner.rollback_job(run_dir, info, undo.needs_blacklist)
            update_state(new_dir, job=job, input_file="input.csv")
        except BatchmoveError:
            self.remove(new_dir)
            raise
        return await self._plan_new(new_dir)

    # --- acting ----------------------------------------------------------------------------
    def _lock(self, run_dir: Path) -> asyncio.Lock:
        """One action at a time on a run, in this console (approval.json across consoles)."""
        return self._locks.setdefault(run_dir, asyncio.Lock())

    async def approve(self, run_id: str, digest: str, by: Person,
                      acknowledge: bool = False) -> dict[str, Any]:
        """Start the run, if the digest is the plan's, the sources still match it, no
        approval came first, and any overlap with another run on the account (counted now)
        was acknowledged. The run's info, with `overlaps` acknowledged."""
        run_dir = self.run_dir(run_id)
        async with self._lock(run_dir):
            info = self.info(run_id)
            if info["state"] != "planned" or (run_dir / APPROVAL).exists():
                raise Refused(f"the run is {info['state']}, not awaiting approval", info)
            if self.config.four_eyes and info["submitted_by"] == by.name:
                raise Forbidden("four eyes: a plan is approved by someone other than the "
                                "person who submitted it")
            if info["blocked"]:
                raise Refused(f"this plan cannot run: {info['blocked']}", info)
            if await asyncio.to_thread(self.planner.digest, run_dir) != info["digest"]:
                await self.planner.plan(run_dir)
                raise Refused("stale", self.info(run_id))
            if digest != info["digest"]:
                raise Refused("stale", info)
            overlaps = await asyncio.to_thread(planning.claim, run_dir, "pending")
            if overlaps and not acknowledge:
                raise Refused("overlap", info | {"overlaps": [self._linked(o) for o in overlaps]})
            if not claim(run_dir / APPROVAL, {"by": by.name, "at": api.now(),
                                              "digest": digest, "overlaps": overlaps}):
                raise Refused("the run was approved by someone else meanwhile",
                              self.info(run_id))
            update_state(run_dir, approved_at=api.now(), approved_by=by.name,
                         approved_digest=digest, overlaps_acknowledged=overlaps)
            await asyncio.to_thread(planning.claim, run_dir, "approved")
            self._start(run_dir, *(("--allow-overlap",) if overlaps else ()))
            return self.info(run_id) | {"overlaps": [self._linked(o) for o in overlaps]}

    async def discard(self, run_id: str, by: Person) -> dict[str, Any]:
        """A planned run goes away (its upload with it); the audit log keeps the record."""
        run_dir = self.run_dir(run_id)
        async with self._lock(run_dir):
            info = self.info(run_id)
            if info["state"] != "planned" and not (info["state"] == "failed"
                                                   and not info["approved_at"]):
                raise Refused(f"the run is {info['state']}: only a plan can be discarded", info)
            if info["submitted_by"] != by.name and not by.may("discard_any"):
                raise Forbidden("only its submitter or an approver can discard a plan")
            if not claim(run_dir / APPROVAL, {"discarded_by": by.name, "at": api.now()}):
                raise Refused("the run was approved meanwhile", self.info(run_id))
            await asyncio.to_thread(planning.release, run_dir)
            self.remove(run_dir)
            return info

    def stop(self, run_id: str) -> dict[str, Any]:
        if not self.supervisor.stop(self.run_dir(run_id)):
            raise Refused("the run is not running here", self.info(run_id))
        return self.info(run_id)

    def resume(self, run_id: str) -> dict[str, Any]:
        run_dir = self.run_dir(run_id)
        info = self.info(run_id)
        if info["state"] not in ("stopped", "failed") or not info["resumable"]:
            raise Refused("only a stopped run started from this console can be resumed here",
                          info)
        self._start(run_dir)
        return self.info(run_id)

    def start_export(self, settings: dict[str, Any], by: Person) -> dict[str, Any]:
        """A new run directory whose child is `batchmove export` (settings: exports.py)."""
        run_dir = self.new_run(by, source="export", name="followers", settings=settings,
                               approved_at=api.now())
        write_private(run_dir / JOB_TOML,
                      dump_toml(export_job(read_defaults(self.config.defaults_path))).encode())
        self._start(run_dir)
        return self.info(run_dir.name)

    def _start(self, run_dir: Path, *extra: str) -> None:
        """Start (or resume: the same command) the run's child, a run or an export; never
        beside a process that already runs it (a command-line run, another console's)."""
        if api.run_locked(run_dir):
            raise Refused("another process is running this run", self.info(run_dir.name))
        state = read_state(run_dir)
        if state.get("source") == "export":
            self.supervisor.start(run_dir, "export", *export_args(run_dir, state["settings"]))
        else:
            acknowledged = ("--allow-overlap",) if state.get("overlaps_acknowledged") else ()
            self.supervisor.start(run_dir, "run", *(extra or acknowledged))

    def verify(self, run_id: str) -> dict[str, Any]:
        run_dir = self.run_dir(run_id)
        info = self.info(run_id)
        if info["state"] not in ("finished", "stopped") or not info["counts"].get(RowStatus.MOVED):
            raise Refused("only a run that moved users can be verified", info)
        self.supervisor.start(run_dir, "verify")
        return self.info(run_id)

    def close(self) -> None:
        self.watcher.close()
        self.supervisor.shutdown()
        self.planner.close()


def upload_path(run_dir: Path, suffix: str) -> Path:
    """The generated name an upload is stored under (never the browser's file name)."""
    return run_dir / f"input{suffix}"
