"""What crosses the sandbox's wire: JSON bodies in, WeChat-style errcode answers out.

Shared by the account state (`state.py`) and the tag book (`tags.py`), so neither imports the
other's internals.
"""

from __future__ import annotations

import json
from typing import Any

from batchmove.wechat.errcodes import errmsg_for

Json = dict[str, Any]

OK: Json = {"errcode": 0, "errmsg": "ok"}


class ApiFault(Exception):
    """Internal: the call is answered with this errcode."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def error_body(code: int) -> Json:
    """`{"errcode": code, "errmsg": ...}` with the errmsg of the shared errcode table."""
    return {"errcode": code, "errmsg": errmsg_for(code)}


def parse_body(raw: bytes) -> Json:
    """44002 for an empty body, 47001 for anything but a JSON object."""
    if not raw.strip():
        raise ApiFault(44002)
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiFault(47001) from None
    if not isinstance(body, dict):
        raise ApiFault(47001)
    return body


def object_field(body: Json, key: str) -> Json:
    """`body[key]` when it is a JSON object, else 47001."""
    value = body.get(key)
    if not isinstance(value, dict):
        raise ApiFault(47001)
    return value


def list_field(body: Json, key: str, most: int) -> list[Any]:
    """`body[key]` when it is a JSON array of 1 to `most` items: not an array -> 47001, empty or
    too long -> 40032 (WeChat's "invalid openid list size")."""
    value = body.get(key)
    if not isinstance(value, list):
        raise ApiFault(47001)
    if not 1 <= len(value) <= most:
        raise ApiFault(40032)
    return value


def id_field(value: Any, unknown: int) -> int:
    """An id as WeChat's lenient parser takes it (an int or a digit string); missing -> 47001,
    anything else -> `unknown` (the endpoint's "invalid id" errcode)."""
    if value is None:
        raise ApiFault(47001)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiFault(unknown)
    return value
