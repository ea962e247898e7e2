"""The click group and what every command shares: one line per error, documented exit codes.

Every `BatchmoveError` becomes one line on stderr (`batchmove: ...`) and its exit code; nothing
else escapes as a traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from batchmove import __version__
from batchmove.errors import EXIT_OK, EXIT_ROW_FAILURES, BatchmoveError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"batchmove: {message}", err=True)
    sys.exit(code)


def verdict(message: str, code: int, *files: tuple[str, Path]) -> None:
    """A command's last words: its verdict, and the files it wrote (`report: PATH`, only when
    PATH exists). Done (0) and row failures (1) are plain lines; any other end (stopped,
    interrupted, refused) is one `batchmove: ...` line on stderr, the last one printed."""
    written = [f"{label}: {path}" for label, path in files if path.exists()]
    if code in (EXIT_OK, EXIT_ROW_FAILURES):
        click.echo("\n".join([message, *written]), err=code != EXIT_OK)
        return
    for line in written:
        click.echo(line, err=True)
    click.echo(f"batchmove: {message.removeprefix('batchmove: ')}", err=True)


def clear_errors(func: F) -> F:
    """Turn a BatchmoveError into one line on stderr and its documented exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BatchmoveError as exc:
            fail(exc.message, exc.exit_code)

    return wrapper  # type: ignore[return-value]


#: each command's module (`batchmove.cli.<module>`), imported when the command is wanted: a
#: `batchmove run` never imports the sandbox server, the console or the platform's crypto
#: (~0.07 s of the ~0.43 s before a run's first line of work)
COMMANDS = {"run": "jobs", "plan": "jobs", "rollback": "review", "verify": "review",
            "report": "review", "notify": "review", "export": "export", "rehearse": "rehearse",
            "sandbox": "sandbox", "serve": "serve", "accounts": "agency", "ticket": "agency"}


class LazyGroup(click.Group):
    """The top-level group: a command's module is imported the first time it is looked up
    (its decorators add it to the group then); `--help` lists every command."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"batchmove.cli.{COMMANDS[cmd_name]}")
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batchmove")
def cli() -> None:
    """Move WeChat Official Account followers between user groups in bulk."""
