"""The run directory's life: which run a ledger holds, and what happens to a finished one.

A run is known by its fingerprint: the input's content plus every setting that changes where
rows go. A finished run whose job comes back with a new input (the nightly batch) is moved to
`history/<run id>/` so the new run starts clean; its files are never deleted. Report files
with no ledger of theirs (their ledger deleted, say) go there too before a new run writes its
own: a new run never overwrites an earlier run's files. A run resumes only from a ledger
that passes `Ledger.check` (exit 2 naming the file otherwise).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchmove.errors import InputChangedError, RunStateError
from batchmove.intake.loader import LoadedInput
from batchmove.ledger.loading import GroupIds
from batchmove.ledger.storage import SAVED_NAME
from batchmove.ledger.store import LEDGER_NAME, Ledger
from batchmove.models import JobSpec, RowStatus

#: files of a run directory that move to history/ when a finished run makes way for a new one
LEDGER_FILES = (LEDGER_NAME, f"{LEDGER_NAME}-wal", f"{LEDGER_NAME}-shm")
SUMMARY_JSON = "summary.json"
REPORT_FILES = ("report.csv", "report.xlsx", "failed.csv", SUMMARY_JSON, "plan.json",
                "rollback.csv", "rollback")  # rollback/: the run's undo (`rollback --apply`)
RUN_FILES = LEDGER_FILES + REPORT_FILES


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """A JSON file readable by the owner only (it may name follower ids)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2, default=str)
    return path


def fingerprint(spec: JobSpec, content_hash: str) -> str:
    """The input's content plus every setting that changes which group a row goes to."""
    settings = {"sheet": spec.sheet, "encoding": spec.encoding, "target": spec.target,
                "columns": [spec.columns.openid, spec.columns.group_id, spec.columns.group_name],
                "api_base": spec.api_base, "backend": spec.backend,
                "untag": spec.untag if isinstance(spec.untag, str) else sorted(spec.untag)}
    blob = content_hash + json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_or_resume(ledger: Ledger, source: LoadedInput, spec: JobSpec, *, restart: bool,
                   reset_failed: Callable[[Ledger], int] | None,
                   info: Callable[[str], None], group_ids: GroupIds | None = None) -> None:
    """Resume the run the ledger holds if it is this job's, else start a new one: the same
    fingerprint resumes, a finished run with another moves to history/, an unfinished one
    with another refuses (InputChangedError) unless `restart`. `group_ids`: see
    `Ledger.load_rows`."""
    digest = fingerprint(spec, source.fingerprint)
    if ledger.restored:
        info(f"{ledger.path} was put back from {SAVED_NAME}, saved when it was deleted or "
             "replaced during the last run")
    meta = ledger.meta()
    if not ledger.is_empty():
        same = meta.get("fingerprint") == digest
        if same and not restart:
            ledger.check()
            _resume(ledger, spec, reset_failed, info)
            return
        # an unfinished run that never sent a change (refused before: no credentials, not
        # confirmed) protects nothing: new settings start afresh without --restart
        if not same and meta.get("finished_at") is None and not restart \
                and not meta.get("nothing_sent"):
            raise InputChangedError(
                f"the input or settings changed since the unfinished run in {ledger.run_dir}; "
                "run with --restart to discard its progress and start again, or restore the "
                "original input to resume")
        archive(ledger, meta)
    elif any((ledger.run_dir / name).exists() for name in REPORT_FILES):
        archive(ledger, {"run_id": _earlier_run_id(ledger.run_dir)}, REPORT_FILES)
    load(ledger, source, spec, digest, info, group_ids)


def _resume(ledger: Ledger, spec: JobSpec, reset_failed: Callable[[Ledger], int] | None,
            info: Callable[[str], None]) -> None:
    if reset_failed is not None:
        info(f"retrying {reset_failed(ledger)} failed rows")
    counts = ledger.counts()
    ledger.set_meta(settings=run_settings(spec))  # as this run sends: its hints too
    pending = counts.get(RowStatus.PENDING, 0)
    if pending:
        ledger.set_meta(finished_at=None)
    info(f"resuming {ledger.run_dir}: {counts.total() - pending} rows done, {pending} remain")


def run_settings(spec: JobSpec) -> dict[str, Any]:
    """What a run records of its settings (ledger meta `settings`), so that a hint, and
    `rollback --apply`, can act as the run did: where it sent its calls, as whom (the names of
    the credential variables, never a secret; a token or ticket command, which may hold one,
    only as "the job file's"), how fast. The embedded sandbox's own secret and explicit
    follower list are left out."""
    sandbox = {k: v for k, v in spec.sandbox.items() if k not in ("secret", "openids")}
    credentials = {k: v for k, v in asdict(spec.credentials).items() if v is not None}
    commands = sorted(k for k in credentials if k.endswith("_command"))  # may hold a secret
    return {"api_base": spec.api_base, "backend": spec.backend, "sheet": spec.sheet,
            "encoding": spec.encoding, "target": spec.target,
            "credentials": {k: v for k, v in credentials.items() if k not in commands},
            "commands": commands,  # the job file's: read from it again when needed
            "rate": spec.rate, "max_rate": spec.max_rate, "concurrency": spec.concurrency,
            "retries": spec.retries,
            "timeout": spec.timeout, "max_failure_rate": spec.max_failure_rate,
            "sandbox": sandbox, "account": spec.single_account}


def load(ledger: Ledger, source: LoadedInput, spec: JobSpec, digest: str,
         info: Callable[[str], None], group_ids: GroupIds | None = None) -> None:
    """A new run: every input row into the ledger, in one transaction."""
    ledger.set_meta(fingerprint=digest, run_id=run_id(), finished_at=None, nothing_sent=True,
                    started_at=now(), input=str(source.path), headers=source.headers,
                    openid_column=source.openid_column, target_column=source.target_column,
                    target_kind=source.target_kind, api_base=spec.api_base, job=spec.name)
    total = ledger.load_rows(source.rows(), source.settle, group_ids)
    ledger.set_meta(rows=total, invalid_by_reason=dict(source.stats.invalid_by_reason),
                    blank_rows=source.stats.blank, job_path=str(spec.job_path or ""),
                    snapshot=spec.snapshot, backend=spec.backend, settings=run_settings(spec))
    info(f"loaded {total} rows from {source.path}")


def archive(ledger: Ledger, meta: dict[str, Any], names: tuple[str, ...] = RUN_FILES) -> None:
    """Move a previous run's files (`names`: all of them, the ledger included) to
    history/<run_id>/; the ledger is then a new, empty one."""
    history = ledger.run_dir / "history"
    history.mkdir(exist_ok=True, mode=0o700)
    target = history / str(meta.get("run_id") or run_id())
    target.mkdir(exist_ok=True, mode=0o700)
    ledger.close_db()
    for name in names:
        src = ledger.run_dir / name
        if src.exists():
            shutil.move(str(src), target / name)
    ledger.open(lock=False)


def _earlier_run_id(run_dir: Path) -> str:
    """The run id the reports of a run whose ledger is gone name, else a new one."""
    try:
        found = read_summary(run_dir).get("run_id")
    except RunStateError:
        found = None
    return found if isinstance(found, str) and found.replace("-", "").isalnum() else \
        f"{run_id()}-earlier"


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The summary.json of a finished run (what schedulers and `status` read)."""
    path = run_dir / SUMMARY_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunStateError(f"{path} does not exist: the run has not written its reports") from None
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise RunStateError(f"cannot read {path}: {why}") from None
    if not isinstance(data, dict):
        raise RunStateError(f"{path} is not a batchmove summary (not a JSON object)")
    return data


def fresh_dir(folder: Path) -> Path:
    """`folder` (mode 700) without a ledger in it: an earlier one's files are removed."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in LEDGER_FILES:
        (folder / name).unlink(missing_ok=True)
    return folder


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


def read_meta(run_dir: Path) -> dict[str, Any]:
    """A run's metadata, read-only and without the lock: safe beside the process running it
    (notifications and JSON logs read the run id and job path this way). {} if there is none."""
    path = run_dir / LEDGER_NAME
    if not path.exists():
        return {}
    try:
        with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    except (sqlite3.Error, ValueError):
        return {}
