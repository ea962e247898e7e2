"""The click group and what every command shares: one line per error, documented exit codes.

Every `BatchmoveError` becomes one line on stderr (`batchmove: ...`) and its exit code; nothing
else escapes as a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click

from batchmove import __version__
from batchmove.errors import BatchmoveError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"batchmove: {message}", err=True)
    sys.exit(code)


def clear_errors(func: F) -> F:
    """Turn a BatchmoveError into one line on stderr and its documented exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BatchmoveError as exc:
            fail(exc.message, exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batchmove")
def cli() -> None:
    """Move WeChat Official Account followers between user groups in bulk."""
