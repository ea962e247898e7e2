"""SIGINT/SIGTERM during a run: a request to stop, handed to whichever runner is at work.

The stages of a run (snapshot, moves, read back) each have their own `Runner`; `StopSignals`
outlives them, so a signal between two stages is not lost: the next runner starts stopped.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from batchmove.engine.runner import Runner, RunOutcome
from batchmove.models import Batch
from batchmove.results import StopReason


@dataclass
class StopSignals:  # SIGINT/SIGTERM -> the runner of the current stage
    """SIGINT/SIGTERM while the pipeline runs: ask the current runner to stop."""

    reason: StopReason | None = None
    runner: Runner[Any] | None = None

    def request(self, reason: StopReason) -> None:
        self.reason = self.reason or reason
        if self.runner is not None:
            self.runner.stop(reason)

    async def watch(self, runner: Runner[Any], batches: Iterable[Batch],
                    lookahead: int = 0) -> RunOutcome:
        self.runner = runner
        if self.reason is not None:
            runner.stop(self.reason)
        try:
            return await runner.run(batches, lookahead)
        finally:
            self.runner = None


@contextmanager
def signal_stop(install: bool = False) -> Iterator[StopSignals]:
    """A `StopSignals` for one run; with `install`, SIGINT/SIGTERM request the stop.

    Handlers are installed only when asked (the CLI asks): a library call must leave its
    caller's handlers alone, and a loop outside the main thread cannot take them at all.
    """
    stop = StopSignals()
    loop = asyncio.get_running_loop()
    install = install and threading.current_thread() is threading.main_thread()
    signals = ((signal.SIGINT, StopReason.SIGINT), (signal.SIGTERM, StopReason.SIGTERM))
    before = {sig: signal.getsignal(sig) for sig, _ in signals} if install else {}
    for sig, reason in signals if install else ():
        loop.add_signal_handler(sig, stop.request, reason)
    try:
        yield stop
    finally:
        for sig, handler in before.items():  # the loop would leave SIG_DFL behind
            with suppress(Exception):
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int, parent: int) -> None:
    """In a child process: be sent `sig` when the parent (pid `parent`) dies, however it
    dies (`kill -9` included). Linux's `PR_SET_PDEATHSIG`, asked through libc; elsewhere
    nothing. A parent already gone by the time we ask: `sig` at once."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        failed = libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0
    except (OSError, AttributeError):
        return
    if not failed and os.getppid() != parent:  # it died before we asked
        os.kill(os.getpid(), sig)
