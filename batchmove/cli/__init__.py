"""The command line: click commands over the public API (`batchmove.api`), nothing more.

The only package that parses argv, prints for humans or sets exit codes. Each module adds its
commands to the one group (`app.cli`): jobs (run, plan), review (rollback, verify, report,
notify), export, rehearse, sandbox, serve (the web console), agency (accounts, ticket). A
module is imported when one of its commands is run (`app.COMMANDS`).
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import NoReturn

import click

from batchmove.cli.app import cli, fail
from batchmove.errors import EXIT_SIGINT, EXIT_USAGE, redact
from batchmove.ledger.storage import STORAGE_ERRNOS, storage_error

__all__ = ["cli", "main"]


def main() -> None:
    try:
        _main()
    except SystemExit as done:
        exit_now(done)


def _main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_SIGINT)
    except click.exceptions.Exit:
        raise
    except (OSError, sqlite3.Error) as exc:  # broken pipe, a file we did not anticipate
        error = storage_error(exc, Path(getattr(exc, "filename", None) or "a file"))
        if isinstance(exc, sqlite3.Error) or getattr(exc, "errno", None) in STORAGE_ERRNOS:
            fail(error.message, error.exit_code)
        fail(redact(str(exc)), EXIT_USAGE)


def exit_now(done: SystemExit) -> NoReturn:
    """The process's exit without the interpreter's teardown, which frees every module and
    object one by one (~0.06 s after a 100,000-row run), once nothing is left to do: the
    command has returned (its ledger and files closed), stdout and stderr are flushed and the
    exit handlers have run. With another thread alive, or anything odd, the usual exit."""
    code = done.code
    if threading.active_count() > 1 or not (code is None or isinstance(code, int)):
        raise done
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: the process was started with that fd closed
                stream.flush()
    except (OSError, ValueError):  # a closed pipe: let the usual exit report it
        raise done from None
    atexit._run_exitfuncs()
    os._exit(code or 0)
