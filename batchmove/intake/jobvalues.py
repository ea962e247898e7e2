"""The shapes a job file's values may take (predicates `jobfile` checks values with), and the
two helpers its messages and paths use."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from batchmove.models import NOTIFY_OUTCOMES


def is_untag(value: Any) -> bool:
    return value == "others" or (isinstance(value, list) and all(
        isinstance(v, str) or is_int(v) for v in value))


def is_name_or_id(value: Any) -> bool:
    return (isinstance(value, str) and bool(value.strip())) or (is_int(value) and value >= 0)


def is_outcomes(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(v in NOTIFY_OUTCOMES for v in value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_sheet(value: Any) -> bool:
    return (isinstance(value, str) and bool(value.strip())) or (is_int(value) and value >= 0)


def suggest(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def absolute(path: Path) -> Path:
    return Path(os.path.normpath(path.expanduser().absolute()))
