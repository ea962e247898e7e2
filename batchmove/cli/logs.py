"""`--log-format json`: every line on stderr one JSON object, for log collectors and schedulers.

    {"ts": "2026-12-01T03:00:10.512+00:00", "level": "info", "event": "progress",
     "job": "nightly", "run_id": "20261201T030000Z-1a2b", "phase": "moving", "moved": 5000,
     "failed": 3, "total": 80000, "pending": 74997, "rate": 498.7, "eta_s": 150.4, ...}

Used by every long-running command (`run`, `plan`, `export`, `serve`):
decorate the command with `log_format_option`, build a `JsonEvents` (an `Events`) instead of
the `Console` when `log_format == "json"`, and end with `JsonLog.finished(...)` or let
`json_errors` turn a `BatchmoveError` into an `error` event. The progress bar is off in this
mode; progress comes as a `progress` event every 10 s (and at the end of a phase), like the
text log lines. Nothing goes to stdout: the last event (`run_finished`, `plan_finished`,
`job_finished` per job of `run --parallel`, or `error`) carries the verdict, so
`>> log.jsonl 2>&1` collects pure JSON lines. Every string is passed through `redact`, so
no token, secret or robot key can reach the log even if a message carried one.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import IO, Any, NoReturn

import click

from batchmove.cli.app import F
from batchmove.errors import BatchmoveError, ConfirmationRequired, redact
from batchmove.ledger.rundir import read_meta
from batchmove.results import Events, Plan, Progress

LOG_FORMATS = ("text", "json")
_ERRCODE = re.compile(r"errcode (-?\d+)")


def log_format_option(func: F) -> F:
    """`--log-format text|json` for a command; the value arrives as `log_format`."""
    return click.option(
        "--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
        help="json: every stderr line one JSON object (ts, level, event, job, run_id, ...); "
             "no progress bar.")(func)


class JsonLog:
    """Writes the JSON lines. `run_dir`, when given, supplies `run_id` once the run has one."""

    def __init__(self, job: str | None = None, run_dir: Path | None = None,
                 stream: IO[str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.job, self.run_dir, self.clock = job, run_dir, clock
        self.stream = stream
        self.run_id: str | None = None

    def emit(self, event: str, level: str = "info", **fields: Any) -> None:
        record = {"ts": datetime.fromtimestamp(self.clock(), UTC).isoformat(
                      timespec="milliseconds"),
                  "level": level, "event": event, "job": self.job, "run_id": self._run_id(),
                  **fields}
        stream = self.stream or sys.stderr
        stream.write(json.dumps(_scrub(record), ensure_ascii=False, default=str) + "\n")
        stream.flush()

    def _run_id(self) -> str | None:
        if self.run_id is None and self.run_dir is not None:
            found = read_meta(self.run_dir).get("run_id")
            self.run_id = str(found) if found else None
        return self.run_id

    def finished(self, event: str, exit_code: int, message: str, **fields: Any) -> None:
        """The last line of a command: `run_finished`, `plan_finished`..."""
        level = "info" if exit_code == 0 else "warning" if exit_code == 1 else "error"
        code = _ERRCODE.search(message)
        extra = {"errcode": int(code.group(1))} if code else {}
        self.emit(event, level, exit_code=exit_code, message=message, **extra, **fields)


class JsonEvents(Events):
    """A run's `Events` as JSON lines; never asks anything (no terminal is assumed)."""

    LOG_EVERY_S = 10.0

    def __init__(self, log: JsonLog, clock: Callable[[], float] = time.monotonic) -> None:
        self.log, self.clock = log, clock
        self._last = -self.LOG_EVERY_S
        self._seen: tuple[str, int, int, int] | None = None
        log_to_json(log, "batchmove.registry")  # a damaged registry set aside, say

    def info(self, message: str) -> None:
        self.log.emit("info", message=message)

    def progress(self, progress: Progress) -> None:
        now = self.clock()
        seen = (progress.phase, progress.moved, progress.failed, progress.total)
        done = progress.moved + progress.failed >= progress.total
        if (now - self._last < self.LOG_EVERY_S and not done) or seen == self._seen:
            return
        self._last, self._seen = now, seen
        self.log.emit("progress", phase=progress.phase, moved=progress.moved,
                      failed=progress.failed, total=progress.total, pending=progress.pending,
                      elapsed_s=round(progress.elapsed_s, 3),
                      rate=round(progress.users_per_s, 1),
                      eta_s=None if progress.eta_s is None else round(progress.eta_s, 1))

    def confirm(self, plan: Plan) -> bool:
        raise ConfirmationRequired(
            "this run needs confirmation but JSON logs ask nobody; pass --yes (or set "
            "confirm = false in the job file) to run unattended")


def json_errors(func: F) -> F:
    """With `--log-format json`, a `BatchmoveError` becomes one `error` event (and its exit
    code) instead of the `batchmove: ...` line. Put it below `clear_errors`."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BatchmoveError as exc:
            if kwargs.get("log_format") != "json":
                raise
            _error_exit(exc)

    return wrapper  # type: ignore[return-value]


class _JsonHandler(logging.Handler):
    """A logger's records (the console's requests, say) as JSON lines."""

    def __init__(self, log: JsonLog) -> None:
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log.emit("log", record.levelname.lower(), logger=record.name,
                      message=record.getMessage())


def log_to_json(log: JsonLog, logger: str) -> None:
    """Send a logger's records, INFO and up, to `log` (and nowhere else; the log it was sent
    to before, if any, no longer gets them)."""
    target = logging.getLogger(logger)
    for handler in [h for h in target.handlers if isinstance(h, _JsonHandler)]:
        target.removeHandler(handler)
    target.addHandler(_JsonHandler(log))
    target.setLevel(logging.INFO)
    target.propagate = False


def _error_exit(exc: BatchmoveError) -> NoReturn:
    JsonLog().finished("error", exc.exit_code, exc.message, error=type(exc).__name__)
    sys.exit(exc.exit_code)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value
