"""`batchmove run A.toml B.toml ... --parallel N`: many accounts from one cron line.

Each job runs as its own `batchmove run JOB` process, so each has its own token, rate limit,
quota, ledger, lock and notifications, and a crash or a wrong secret in one cannot touch the
others. The children run in their own session: a Ctrl-C reaches this process only, which
passes the signal on once to every running child (each checkpoints and exits 130/143) and
starts no further job. If this process dies without a word (`kill -9`, the OOM killer), each
child gets SIGTERM from the kernel (`die_with_parent`) and stops the same way. One line per
job is printed as it ends.

The exit code is the worst of the jobs' codes, ranked

    0 done  <  1 row failures  <  2 refused, nothing sent  <  3 stopped half-way (resumable)
        <  143 terminated  <  130 interrupted

(a signal outranks everything: the batch as a whole was cut short; 3 outranks 2 because a
job stopped half-way left an account part-moved until it is resumed, while exit 2 changed
nothing). A child killed by a signal (SIGKILL...) counts as 128 + the signal's number, ranked
with the signals.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import click

from batchmove.cli.logs import JsonLog
from batchmove.engine import signals
from batchmove.errors import EXIT_SIGINT, EXIT_SIGTERM, UsageError
from batchmove.flows import agency
from batchmove.ledger.rundir import now
from batchmove.models import JobSpec
from batchmove.output.batch import stamps, write_batch

#: the parent's pid, for its children (`die_with_parent`)
PARENT_ENV = "BATCHMOVE_PARALLEL_PARENT"
_RANK = {0: 0, 1: 1, 2: 2, 3: 3, EXIT_SIGTERM: 5, EXIT_SIGINT: 6}
_WORDS = {0: "done", 1: "finished with row failures", 2: "refused, nothing sent",
          3: "stopped early, resumable", EXIT_SIGINT: "interrupted", EXIT_SIGTERM: "terminated"}


def worst(codes: Sequence[int]) -> int:
    """The exit code of a batch of jobs (ranked as in the module docstring)."""
    return max(codes, key=lambda c: _RANK.get(c, 4), default=0)


@dataclass(frozen=True, slots=True)
class JobEnd:
    job: str
    exit_code: int
    message: str

    @property
    def line(self) -> str:
        words = _WORDS.get(self.exit_code, "killed")
        said = self.message.removeprefix("stopped: ")  # the words say it already
        return f"{self.job}: exit {self.exit_code} ({words}): {said}"


class ChildPool:
    """Runs the children, at most `parallel` at a time, and relays signals to them."""

    def __init__(self, parallel: int, child_args: Sequence[str], *, forward_stderr: bool,
                 echo: Callable[[JobEnd], None],
                 argv: Callable[[str], list[str]] = lambda job: [job]) -> None:
        self.slots = asyncio.Semaphore(parallel)
        self.child_args = list(child_args)
        self.argv = argv  # a job's own arguments to `run` (its job file, --account...)
        self.forward_stderr = forward_stderr
        self.echo = echo
        self.children: set[asyncio.subprocess.Process] = set()
        self.signal: int | None = None

    async def run(self, jobs: Sequence[str]) -> list[JobEnd]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._relay, sig)
        try:
            return list(await asyncio.gather(*(self._job(job) for job in jobs)))
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with suppress(Exception):
                    loop.remove_signal_handler(sig)

    def _relay(self, sig: int) -> None:
        self.signal = self.signal or sig
        for child in self.children:
            with suppress(ProcessLookupError):
                child.send_signal(sig)

    async def _job(self, job: str) -> JobEnd:
        async with self.slots:
            if self.signal is not None:
                end = JobEnd(job, 128 + self.signal, "not started: the batch was interrupted")
            else:
                end = await self._child(job)
        self.echo(end)
        return end

    async def _child(self, job: str) -> JobEnd:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "batchmove", "run", *self.argv(job), *self.child_args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True,
            env={**os.environ, PARENT_ENV: str(os.getpid())})
        self.children.add(proc)
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            out, err = await asyncio.gather(proc.stdout.read(), self._stderr(proc.stderr))
            code = await proc.wait()
        finally:
            self.children.discard(proc)
        return JobEnd(job, code if code >= 0 else 128 - code, _final_line(out.decode(), err))

    async def _stderr(self, stream: asyncio.StreamReader) -> list[str]:
        lines = []
        async for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.append(line)
            if self.forward_stderr:
                print(line, file=sys.stderr, flush=True)
        return lines


def die_with_parent() -> None:
    """In a child of `--parallel`: be sent SIGTERM when the parent dies, however it dies
    (`kill -9` included), so the child stops as it would on Ctrl-C (its results recorded,
    exit 143, the same command resumes) instead of sending on alone (Linux; elsewhere SIGINT
    and SIGTERM to the parent still reach every child)."""
    parent = os.environ.pop(PARENT_ENV, "")
    if parent.isdigit():
        signals.die_with_parent(signal.SIGTERM, int(parent))


def _final_line(out: str, err: list[str]) -> str:
    """What the child said last about its run: its verdict, its one error line, or the
    `message` of its last JSON event."""
    said = [s for s in (*out.splitlines(), *err) if s.strip() and not s.startswith("report: ")]
    for line in reversed(said):
        if not line.lstrip().startswith("{"):
            return line.removeprefix("batchmove: ")
        with suppress(ValueError, KeyError, TypeError):
            return str(json.loads(line)["message"])
    return "(no message)"


def child_args(overrides: dict[str, Any], **flags: bool) -> list[str]:
    """The options of this `run` again, for each child (`--quiet --yes ...`)."""
    args = ["--quiet"]
    for key, value in [*overrides.items(), *flags.items()]:
        option = "--" + key.replace("_", "-")
        if value is None or (value is False and key in flags):
            continue
        if isinstance(value, bool):
            args.append(option if value else "--no-" + option[2:])
        else:
            args += [option, str(value)]
    return args


def run_many(jobs: Sequence[str], parallel: int, overrides: dict[str, Any], *,
             json_logs: bool = False, **flags: bool) -> int:
    """Run every job (`run` with the same options, in its own process); the worst exit code.
    With JSON logs the children's lines pass through and each job's end is a `job_finished`
    event on stderr; otherwise one text line per job on stdout."""
    if overrides.get("out") is not None and len(jobs) > 1:
        raise UsageError("--out names one run directory: it cannot be given with several jobs "
                         "(set out = \"...\" in each job file)")
    batch = ChildPool(parallel, child_args(overrides, **flags), forward_stderr=json_logs,
                  echo=_json_end if json_logs else lambda end: click.echo(end.line))
    ends = asyncio.run(batch.run(jobs))
    return worst([end.exit_code for end in ends])


def run_accounts(spec: JobSpec, job: str, parallel: int, overrides: dict[str, Any], *,
                 json_logs: bool = False, **flags: bool) -> int:
    """A platform job naming several accounts: one `run JOB --account APPID` process per
    account (at most `parallel` at once), each in `OUT/<appid>` (reading its own rows of an
    input that has an `appid` column; an account with no row in it is not started); the
    batch's own files in OUT (`output.batch`); the worst exit code."""
    appids = asyncio.run(agency.accounts_of(spec))
    out = spec.out_dir.absolute()
    named = agency.check_input(spec, appids) if spec.select is None else None

    def argv(appid: str) -> list[str]:  # each run directory: OUT/<appid> (jobfile.spec_for)
        return [job, "--account", appid, "--out", str(out)]

    passed = {k: v for k, v in overrides.items() if k not in ("out", "account")}
    batch = ChildPool(parallel, child_args(passed, **flags), forward_stderr=json_logs,
                  echo=_json_end if json_logs else lambda end: click.echo(end.line), argv=argv)
    before, started = stamps(out, appids), time.monotonic()
    about: dict[str, Any] = {"job": spec.name, "started_at": now()}
    idle = {a: JobEnd(a, 0, f"no row in {spec.input.name}'s appid column: not started")
            for a in appids if named is not None and a not in named}  # nothing to do tonight
    for end in idle.values():
        batch.echo(end)
    ran = {e.job: e for e in asyncio.run(batch.run([a for a in appids if a not in idle]))}
    ends = [idle.get(a) or ran[a] for a in appids]
    code = worst([end.exit_code for end in ends])
    about |= {"finished_at": now(), "duration_s": round(time.monotonic() - started, 3)}
    summary = write_batch(out, [(e.job, e.exit_code, e.message) for e in ends], code, before,
                          xlsx_max_rows=spec.xlsx_max_rows, about=about)
    if not json_logs:
        click.echo(f"summary: {summary}")
    return code


def _json_end(end: JobEnd) -> None:
    JsonLog(end.job).finished("job_finished", end.exit_code, end.message)
