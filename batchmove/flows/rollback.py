"""The story of an undo: `batchmove rollback RUN_DIR --apply`.

    rollback.csv (every moved user -> the group or tags the snapshot saw, from the ledger)
        -> the undo's job: the run's own settings -> run it like any input, in RUN_DIR/rollback/

The undo must reach the account the run changed, whatever the shell it is typed in holds: it
takes the API address, the credentials source (the names of the variables, or the token
command), the backend, the limits and the `[sandbox]` table from the settings the run recorded
in its ledger (older ledgers: the run's API address and its job file), never from options or
defaults. It runs in its own run directory inside the run it undoes, `RUN_DIR/rollback/`, so
the two travel together, and the same command resumes it after a stop. It confirms like `run`
(the caller's `confirm`), with a snapshot of its own, so an undo can be undone too.

An embedded-sandbox run cannot really be undone: its account lived only as long as the run.
The undo then runs against a fresh embedded sandbox (every follower back where it started),
which checks the file and rehearses the calls but restores nothing; `RollbackFile.caveat`
says so.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from batchmove.errors import UsageError
from batchmove.flows.run import RunOptions, run_job
from batchmove.intake import jobfile
from batchmove.ledger.rundir import read_meta
from batchmove.models import SANDBOX, Credentials, JobSpec
from batchmove.output.review import write_rollback
from batchmove.results import Events, RollbackFile

#: the undo's run directory, inside the run directory it undoes
UNDO_DIR = "rollback"
#: job keys the undo keeps from the run (where to send, as whom, how fast)
_KEPT = ("api_base", "rate", "max_rate", "concurrency", "retries", "timeout",
         "max_failure_rate", "account")  # account: a platform's account (its token)
EMBEDDED_CAVEAT = (
    "this run used the embedded sandbox, whose account ended with the run: the undo runs "
    "against a fresh embedded sandbox (every follower back in its starting group), so it checks "
    "rollback.csv and rehearses the calls but restores nothing")


async def apply_rollback(run_dir: Path, out: Path | None, options: RunOptions,
                         events: Events) -> RollbackFile:
    """Write rollback.csv, then run it with the run's own settings in RUN_DIR/rollback/."""
    undo = write_rollback(run_dir, out)
    spec = undo_spec(run_dir, read_meta(run_dir), undo)
    caveat = EMBEDDED_CAVEAT if spec.api_base == SANDBOX else None
    undo = replace(undo, undo_dir=spec.out_dir, caveat=caveat)
    what = "tags" if undo.backend == "tags" else "groups"
    events.info(f"undoing {run_dir}: {undo.users} users back to their previous {what}, "
                f"through {spec.api_base}, in {spec.out_dir}")
    if caveat is not None:
        events.info(f"note: {caveat}")
    return replace(undo, applied=await run_job(spec, options, events))


def undo_spec(run_dir: Path, meta: dict[str, Any], undo: RollbackFile) -> JobSpec:
    """The undo's job: rollback.csv as input, the run's settings, its own run directory."""
    settings = meta.get("settings") or _settings_of_older_run(meta)
    kept = {k: settings[k] for k in _KEPT if settings.get(k) is not None}
    credentials = dict(settings.get("credentials", {}))
    if settings.get("commands"):  # not in the ledger (a command may hold a secret)
        credentials |= _job_commands(meta, settings["commands"])
    return JobSpec(
        input=undo.path.absolute(), name=f"{meta.get('job') or run_dir.name}-rollback",
        backend=undo.backend,  # type: ignore[arg-type]
        credentials=Credentials(**{k: v for k, v in credentials.items()
                                   if k in Credentials.__dataclass_fields__}),
        sandbox=dict(settings.get("sandbox", {})), out=run_dir / UNDO_DIR,
        allow_blacklist=undo.needs_blacklist, **kept)


def _job_commands(meta: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The token (or ticket) command of the run's job file, which the ledger does not keep."""
    job_path = meta.get("job_path") or ""
    found: dict[str, Any] = {}
    if job_path and Path(job_path).is_file():
        found = asdict(jobfile.load_job(Path(job_path), need_input=False)["credentials"])
    missing = [n for n in names if not found.get(n)]
    if missing:
        raise UsageError(f"the run took its token from {missing[0]} of its job file "
                         f"{job_path or '(none recorded)'}, which no longer has it: run "
                         "rollback.csv yourself (`batchmove run RUN_DIR/rollback.csv --out ... "
                         "--api-base ...` with the run's credentials)")
    return {n: found[n] for n in names}


def _settings_of_older_run(meta: dict[str, Any]) -> dict[str, Any]:
    """A ledger written before runs recorded their settings: the run's API address, and the
    rest from its job file when that is still there."""
    found: dict[str, Any] = {}
    job_path = meta.get("job_path") or ""
    if job_path and Path(job_path).is_file():
        found = jobfile.load_job(Path(job_path), need_input=False)
        found["credentials"] = {k: v for k, v in asdict(found["credentials"]).items()
                                if v is not None}
    found["api_base"] = meta.get("api_base") or found.get("api_base")
    return found
