"""Telling someone how a run ended: a WeCom robot message, a webhook, healthchecks-style pings.

Policy, in the order a nightly batch meets it:
- Outcomes. `finish` = exit 0 (done). `stop` = nothing is wrong, the same command resumes:
  exit 3 by the daily quota (or rows left pending), 130 (SIGINT), 143 (SIGTERM). `failure` =
  someone must look: exit 1 (row failures), exit 2 (refused, nothing sent), exit 3 by a fatal
  configuration error (wrong secret, IP not whitelisted...) or by too many failed rows.
  `[notify] on` picks the outcomes that send the robot message and the webhook; the pings go
  out whatever the outcome (a dead-man's switch must always hear the end).
- Never in the run's way: every attempt is classified, nothing raises; the whole run's
  notifications get 10 s (`BUDGET_S`) of wall time at most, the start ping 3 s of it; transient
  failures (connection, timeout, HTTP 5xx, WeCom -1) are retried twice with a short pause.
- At most 20 robot messages a minute per robot (WeCom's limit), counted in this process too:
  a message that would break it waits if a slot frees within the budget, else is not sent.
- URLs come only from environment variables named in [notify]; records and messages carry
  them as `scheme://host/***` (a robot URL holds its key, a ping URL is its own secret).

What happened goes to summary.json as `notifications`: one record per channel and event.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from batchmove.errors import EXIT_OK, EXIT_ROW_FAILURES, EXIT_USAGE, BatchmoveError, UsageError
from batchmove.ledger.rundir import read_meta, read_summary
from batchmove.ledger.store import LEDGER_NAME, Ledger
from batchmove.models import JobSpec, Notify
from batchmove.output import report
from batchmove.output.advice import RetryAdvice, rerun_command, retry_advice
from batchmove.output.message import format_message, outcome_of
from batchmove.wechat.robot import Answer, HttpSender

BUDGET_S = 10.0  # wall time a run may spend notifying, start and end together
START_BUDGET_S = 3.0
ATTEMPT_TIMEOUT_S = 4.0
ATTEMPTS = 3
BACKOFF_S = (0.3, 1.0)
ROBOT_PER_MINUTE = 20
TOP_REASONS = 5

Record = dict[str, Any]


class Transport(Protocol):
    """What sends: `HttpSender` (aiohttp) in real life, over loopback in the tests."""

    async def post_json(self, url: str, body: Any, limit_s: float, *,
                        wecom: bool = False) -> Answer: ...
    async def get(self, url: str, limit_s: float) -> Answer: ...


Sender = Callable[[Transport, float], Awaitable[Answer]]


def redact_url(url: str) -> str:
    """`https://qyapi.weixin.qq.com/***`: where it went, without key, token or path."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    if not parts.scheme or not host:
        return "***"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}/***"


class RobotLimiter:
    """WeCom's 20 messages a minute per robot, on this side too (sliding 60 s window)."""

    def __init__(self, per_minute: int = ROBOT_PER_MINUTE, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.window_s, self.clock = per_minute, window_s, clock
        self._sent: dict[str, deque[float]] = {}

    def wait_s(self, url: str) -> float:
        """Seconds until this robot may take another message (0: now)."""
        sent = self._sent.setdefault(_robot_id(url), deque())
        now = self.clock()
        while sent and now - sent[0] >= self.window_s:
            sent.popleft()
        return 0.0 if len(sent) < self.per_minute else sent[0] + self.window_s - now

    def take(self, url: str) -> None:
        self._sent.setdefault(_robot_id(url), deque()).append(self.clock())


def _robot_id(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


#: every run in this process shares it (`batchmove run A.toml B.toml --parallel N`)
LIMITER = RobotLimiter()


@dataclass
class Notifier:
    """A run's notifications: `await start()` when it starts, `await finish(...)` at the end."""

    settings: Notify
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    budget_s: float = BUDGET_S
    limiter: RobotLimiter = LIMITER
    transport: Callable[[], Any] = HttpSender  # -> async context manager giving a Transport
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    records: list[Record] = field(default_factory=list)
    _spent: float = 0.0

    async def start(self) -> list[Record]:
        """`GET <ping>/start`; nothing else announces a start."""
        jobs: dict[str, Sender] = {}
        url = self._url("ping", "ping_env", "start")
        if url:
            jobs["ping"] = partial(_get, url.rstrip("/") + "/start")
        return await self._phase("start", jobs, min(START_BUDGET_S, self.left_s))

    async def finish(self, summary: Mapping[str, Any], run_dir: Path, *,
                     reasons: list[tuple[str, int]] | None = None, resume: str | None = None,
                     force: bool = False) -> list[Record]:
        """The robot message, the webhook and `GET <ping>/<exit code>`; `force` ignores `on`."""
        code = int(summary.get("exit_code", EXIT_USAGE))
        outcome = outcome_of(code, summary.get("stop_reason"))
        wanted = force or outcome in self.settings.on
        jobs: dict[str, Sender] = {}
        ping = self._url("ping", "ping_env", "end")
        if ping:
            jobs["ping"] = partial(_get, f"{ping.rstrip('/')}/{code}")
        for channel, key in (("wecom", "wecom_webhook_env"), ("webhook", "webhook_env")):
            if getattr(self.settings, key) and not wanted:
                self._skip(channel, "end", f"outcome {outcome!r} is not in [notify] on")
                continue
            url = self._url(channel, key, "end")
            if url and channel == "webhook":
                jobs["webhook"] = partial(_post, url, dict(summary))
            elif url:
                text = format_message(summary, run_dir, reasons or [], resume)
                body = {"msgtype": "markdown", "markdown": {"content": text}}
                jobs["wecom"] = partial(self._robot, url, body)
        return await self._phase("end", jobs, self.left_s)

    @property
    def left_s(self) -> float:
        return max(0.0, self.budget_s - self._spent)

    async def _robot(self, url: str, body: Any, http: Transport, limit_s: float) -> Answer:
        wait = self.limiter.wait_s(url)
        if wait > 0:
            if wait >= limit_s:
                return Answer(False, False, f"not sent: the robot's limit of "
                              f"{self.limiter.per_minute} messages a minute is reached")
            await self.sleep(wait)
        self.limiter.take(url)
        return await http.post_json(url, body, limit_s, wecom=True)

    def _url(self, channel: str, key: str, event: str) -> str | None:
        name = getattr(self.settings, key)
        if not name:
            return None
        value = self.env.get(name, "").strip()
        if not value:
            self._skip(channel, event, f"environment variable {name} is not set")
            return None
        if not value.startswith(("http://", "https://")):
            self._record(channel, event, "***", "failed", 0, f"{name} does not hold an "
                         "http(s):// URL")
            return None
        return value

    async def _phase(self, event: str, jobs: Mapping[str, Sender],
                     budget: float) -> list[Record]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + budget
        if jobs:
            async with self.transport() as http:
                tasks = {channel: asyncio.ensure_future(self._deliver(http, send, deadline))
                         for channel, send in jobs.items()}
                await asyncio.wait(tasks.values(), timeout=max(budget, 0.0))
                for channel, task in tasks.items():
                    answer, attempts = _result(task)
                    self._record(channel, event, self._target(channel, event),
                                 "sent" if answer.ok else "failed", attempts, answer.detail)
        self._spent += loop.time() - began
        return [r for r in self.records if r["event"] == event]

    async def _deliver(self, http: Transport, send: Sender,
                       deadline: float) -> tuple[Answer, int]:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            left = deadline - loop.time()
            answer = await send(http, min(ATTEMPT_TIMEOUT_S, left))
            attempt += 1
            if answer.ok or not answer.retry or attempt >= ATTEMPTS:
                return answer, attempt
            pause = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
            if loop.time() + pause >= deadline - 0.05:
                return answer, attempt
            await self.sleep(pause)

    def _target(self, channel: str, event: str) -> str:
        key = {"wecom": "wecom_webhook_env", "webhook": "webhook_env", "ping": "ping_env"}
        return redact_url(self.env.get(getattr(self.settings, key[channel]) or "", ""))

    def _skip(self, channel: str, event: str, reason: str) -> None:
        self._record(channel, event, None, "skipped", 0, reason)

    def _record(self, channel: str, event: str, to: str | None, result: str, attempts: int,
                detail: str) -> None:
        record: Record = {"channel": channel, "event": event, "result": result}
        if to is not None:
            record["to"] = to
        if attempts:
            record["attempts"] = attempts
        if result != "sent":
            record["reason"] = detail
        self.records.append(record)


async def _get(url: str, http: Transport, limit_s: float) -> Answer:
    return await http.get(url, limit_s)


async def _post(url: str, body: Any, http: Transport, limit_s: float) -> Answer:
    return await http.post_json(url, body, limit_s)


def _result(task: asyncio.Future[tuple[Answer, int]]) -> tuple[Answer, int]:
    if not task.done():
        task.cancel()
        return Answer(False, False, f"no answer within the {BUDGET_S:g} s notification "
                      "budget"), 1
    if task.cancelled() or task.exception() is not None:
        return Answer(False, False, "internal error while notifying"), 1
    return task.result()


# --- what a run's end is made of ------------------------------------------------------------
def failure_reasons(run_dir: Path, limit: int = TOP_REASONS
                    ) -> tuple[list[tuple[str, int]], RetryAdvice]:
    """The most common reasons rows failed or were refused, with their counts; and what
    `--retry-failed` would send again."""
    if not (run_dir / LEDGER_NAME).exists():
        return [], RetryAdvice()
    with Ledger(run_dir).open(lock=False) as ledger:
        tally: Counter[str] = Counter(ledger.meta().get("invalid_by_reason") or {})
        failures = ledger.review.failures_by_answer()
        for (errcode, errmsg), n in failures.items():
            reason = f"errcode {errcode}" if errcode is not None else "no answer"
            tally[f"{reason}: {errmsg}" if errmsg else reason] += n
    return tally.most_common(limit), retry_advice(failures)


def resume_command(run_dir: Path, meta: Mapping[str, Any], exit_code: int,
                   advice: RetryAdvice | None = None) -> str | None:
    """The command that resumes (exit 3, 130, 143), or that retries the failed rows (exit 1)
    when some would really be sent again."""
    if exit_code in (EXIT_OK, 2):
        return None
    if exit_code == EXIT_ROW_FAILURES:
        if advice is None or not advice.retryable:
            return None
        return rerun_command(run_dir, meta, advice.flags)
    return rerun_command(run_dir, meta)


def run_meta(run_dir: Path) -> dict[str, Any]:
    if not (run_dir / LEDGER_NAME).exists():
        raise UsageError(f"{run_dir} has no {LEDGER_NAME}: not a batchmove run directory")
    return read_meta(run_dir)


async def notify_finished(notifier: Notifier, run_dir: Path, summary: Mapping[str, Any], *,
                          force: bool = False) -> list[Record]:
    """Send a run's end notifications and record them in its summary.json (when that file
    is this run's). Never raises: an unreadable ledger only costs the message its reasons."""
    meta: dict[str, Any] = {}
    reasons: list[tuple[str, int]] = []
    advice = RetryAdvice()
    with suppress(BatchmoveError, OSError, sqlite3.Error):
        meta, (reasons, advice) = read_meta(run_dir), failure_reasons(run_dir)
    code = int(summary.get("exit_code", EXIT_USAGE))
    await notifier.finish(summary, run_dir, reasons=reasons, force=force,
                          resume=resume_command(run_dir, meta, code, advice))
    with suppress(BatchmoveError, OSError):
        if read_summary(run_dir).get("run_id") == summary.get("run_id"):
            report.update_summary(run_dir, notifications=notifier.records)
    return notifier.records


class _Result(Protocol):
    @property
    def exit_code(self) -> int: ...
    @property
    def run_dir(self) -> Path: ...
    @property
    def summary(self) -> Any: ...


R = TypeVar("R", bound=_Result)


async def notify_refused(notifier: Notifier, spec: JobSpec, exc: BatchmoveError) -> None:
    """The end notifications of a run refused before it could write a summary."""
    refused = {"job": spec.name, "exit_code": exc.exit_code, "message": exc.message}
    await notifier.finish(refused, spec.out_dir)


async def notify_result(notifier: Notifier, result: R) -> R:
    """The end notifications of a run that ended with a result; its summary gains
    `notifications` (in summary.json too)."""
    records = await notify_finished(notifier, result.run_dir, result.summary)
    if isinstance(result.summary, dict):
        result.summary["notifications"] = records
    return result


async def resend(run_dir: Path, env: Mapping[str, str] | None = None) -> list[Record]:
    """`batchmove notify RUN_DIR`: a finished run's notifications again, whatever `on` says."""
    notifier = Notifier(job_notify(run_dir), env=os.environ if env is None else env)
    summary = read_summary(run_dir)
    summary.pop("notifications", None)
    return await notify_finished(notifier, run_dir, summary, force=True)


def job_notify(run_dir: Path) -> Notify:
    """The [notify] table of the job that made `run_dir` (found through the ledger's meta)."""
    from batchmove.intake import jobfile

    job_path = run_meta(run_dir).get("job_path") or ""
    if not job_path or not Path(job_path).exists():
        raise UsageError(f"{run_dir}: the run's job file is unknown or gone, so is its "
                         "[notify] table; notifications need a .toml job")
    settings: Notify = jobfile.load_job(Path(job_path)).get("notify", Notify())
    if not settings.configured:
        raise UsageError(f"{job_path} has no [notify] table with a *_env key: nothing to send")
    return settings
