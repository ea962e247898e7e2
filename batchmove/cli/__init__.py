"""The command line: click commands over the public API (`batchmove.api`), nothing more.

The only package that parses argv, prints for humans or sets exit codes. Each module adds its
commands to the one group (`app.cli`): jobs (run, plan), review (rollback, verify, report),
export, sandbox, serve (the web console).
"""

from __future__ import annotations

import click

from batchmove.cli import export, jobs, review, sandbox, serve
from batchmove.cli.app import cli, fail
from batchmove.errors import EXIT_USAGE

__all__ = ["cli", "export", "jobs", "main", "review", "sandbox", "serve"]


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except click.exceptions.Exit:
        raise
    except OSError as exc:  # broken pipe, unwritable file we did not anticipate
        fail(str(exc), EXIT_USAGE)
