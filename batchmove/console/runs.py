"""Child processes and what state each run directory is in.

Each approved run is `python -m batchmove run job.toml --yes --out RUN_DIR` in its own session,
so stopping or restarting the console never stops a run. The child's pid is kept in
console.json; a console started later finds it again (checked against /proc/PID/cmdline, so a
reused pid is not mistaken for the run). Runs started from the CLI are recognised by the lock
the run holds on its directory. The ledger is the source of truth for counts; the console only
keeps the child's exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from batchmove import api
from batchmove.console.exports import export_state, last_line
from batchmove.console.runfiles import CHILD_LOG, JOB_TOML, read_state, update_state
from batchmove.errors import EXIT_USAGE
from batchmove.models import RowStatus

STATES = ("planned", "running", "finished", "stopped", "failed")


@dataclass
class Supervisor:
    """The console's children: one run (or verify) process per run directory at most."""

    python: str = sys.executable
    children: dict[Path, tuple[subprocess.Popen[bytes], str]] = field(default_factory=dict)

    def start(self, run_dir: Path, kind: str = "run", *extra: str) -> int:
        """Start `batchmove run`, `verify` or `export` (its arguments: `extra`); the pid."""
        if kind == "run":
            argv = [self.python, "-m", "batchmove", "run", str(run_dir / JOB_TOML), "--yes",
                    "--out", str(run_dir), *extra]
        elif kind == "export":
            argv = [self.python, "-m", "batchmove", "export", *extra]
        else:
            argv = [self.python, "-m", "batchmove", "verify", str(run_dir)]
        with (run_dir / CHILD_LOG).open("ab") as log:
            os.chmod(run_dir / CHILD_LOG, 0o600)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, cwd=run_dir,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.children[run_dir] = (proc, kind)
        update_state(run_dir, child={"pid": proc.pid, "kind": kind}, exit_code=None)
        return proc.pid

    def reap(self, run_dir: Path) -> None:
        """Record the exit code of a child that ended."""
        found = self.children.get(run_dir)
        if found is None or found[0].poll() is None:
            return
        proc, kind = self.children.pop(run_dir)
        if proc.returncode == EXIT_USAGE and api.run_locked(run_dir):
            # refused by the lock: another process runs it, so it is running, not failed
            update_state(run_dir, child=None, exit_code=None,
                         refused="another process is running this run")
            return
        key = "verify_exit_code" if kind == "verify" else "exit_code"
        update_state(run_dir, child=None, **{key: proc.returncode})

    def live_pid(self, run_dir: Path) -> int | None:
        """The pid of the run's live process (ours, an earlier console's, or a CLI's)."""
        self.reap(run_dir)
        if run_dir in self.children:
            return self.children[run_dir][0].pid
        child = read_state(run_dir).get("child")
        if isinstance(child, dict):
            if _is_our_child(child.get("pid"), run_dir):
                return int(child["pid"])
            update_state(run_dir, child=None)  # an earlier console's child, ended since
        return -1 if api.run_locked(run_dir) else None

    def stop(self, run_dir: Path) -> bool:
        """SIGTERM: the run records what it has and stops, resumable."""
        pid = self.live_pid(run_dir)
        if pid is None or pid < 0:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        return True

    def shutdown(self) -> None:
        """The console is going away: children go on, in their own sessions."""
        self.children.clear()


def _is_our_child(pid: Any, run_dir: Path) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = status.rsplit(")", 1)[-1].split()[:1] == ["Z"]
    return not zombie and b"batchmove" in argv and os.fsencode(run_dir) in b"".join(argv)


def run_record(run_dir: Path, live: bool) -> dict[str, Any]:
    """A run as the history and `GET /api/runs/{id}` show it."""
    state = read_state(run_dir)
    if state.get("source") == "export":
        return _export_record(run_dir, state, live)
    view = api.view_run(run_dir, recount=live)
    summary = view.summary
    counts = cast(dict[str, int], dict(view.counts or summary.get("counts") or {}))
    exit_code = state.get("exit_code")
    if exit_code is None and not live:  # ended while no console watched it: its summary says
        exit_code = summary.get("exit_code")
    return {
        "id": run_dir.name,
        "state": _state(state, counts, exit_code, live),
        "counts": counts,
        "exit_code": exit_code,
        "message": summary.get("message") or state.get("error"),
        "job": view.job or state.get("name") or run_dir.name,
        "input_name": state.get("input_name") or view.input_name or "",
        "source": state.get("source", "cli"),
        "created_at": state.get("created_at") or view.started_at,
        "started_at": view.started_at,
        "finished_at": None if live else view.finished_at,
        "backend": view.backend or state.get("backend") or "groups",
        "verify": summary.get("verify"),
        "kind": "run",
        "submitted_by": state.get("submitted_by"), "approved_by": state.get("approved_by"),
        "stop_reason": summary.get("stop_reason"),
    }


def _export_record(run_dir: Path, state: dict[str, Any], live: bool) -> dict[str, Any]:
    """An export started from the console: state from its child's exit code, message from
    its last line (the result, or the one-line error: a group that does not exist...)."""
    settings = state.get("settings") or {}
    return {
        "id": run_dir.name, "kind": "export",
        "state": export_state(state.get("exit_code"), live),
        "counts": {}, "exit_code": state.get("exit_code"),
        "message": None if live else last_line(run_dir),
        "job": state.get("name") or "followers", "input_name": "", "source": "export",
        "created_at": state.get("created_at"), "started_at": state.get("created_at"),
        "finished_at": None, "backend": settings.get("backend", "groups"), "verify": None,
        "export": settings,
        "submitted_by": state.get("submitted_by"), "approved_by": None,
        "stop_reason": None,
    }


def _state(console: dict[str, Any], counts: dict[str, int], exit_code: Any,
           live: bool) -> str:
    if live:
        return "running"
    planned_here = bool(console.get("source"))  # not a run of the CLI's
    if planned_here and not console.get("approved_at"):
        return "failed" if console.get("error") else "planned"
    if not counts:
        return "failed" if console.get("approved_at") else "planned"
    if exit_code == EXIT_USAGE:
        return "failed"
    left = counts.get(RowStatus.PENDING) or counts.get(RowStatus.UNKNOWN)
    return "stopped" if left else "finished"
