"""The command line: a thin shell over the library.

The only module that parses argv or prints for humans. Every `BatchmoveError` becomes one line
on stderr and its exit code; nothing else escapes as a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from batchmove import __version__
from batchmove.errors import EXIT_USAGE, BatchmoveError

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"batchmove: {message}", err=True)
    sys.exit(code)


def clear_errors(func: F) -> F:
    """Turn a BatchmoveError into one line on stderr and its documented exit code."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BatchmoveError as exc:
            _fail(exc.message, exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="batchmove")
def cli() -> None:
    """Move WeChat Official Account followers between user groups in bulk."""


# --- sandbox ---------------------------------------------------------------------------------
# (the `batchmove sandbox` command goes here)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except click.exceptions.Exit:
        raise
    except OSError as exc:  # broken pipe, unwritable file we did not anticipate
        _fail(str(exc), EXIT_USAGE)
