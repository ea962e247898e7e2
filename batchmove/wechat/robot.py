"""HTTP for notifications: one attempt at a WeCom robot, a webhook or a ping URL, classified.

Never raises and never returns a URL or an exception's text (aiohttp puts URLs, and so robot
keys, into its messages): each attempt becomes an `Answer` whose `detail` is safe to record.
Retry policy and budgets are the caller's (`batchmove.output.notify`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from batchmove.errors import redact

#: WeCom errcodes worth another attempt: -1 "system busy" (WxCpErrorMsgEnum suggests retrying
#: up to 3 times). 45009 is not: the robot's window is a minute long, longer than our budget.
WECOM_TRANSIENT = frozenset({-1})
_DETAIL_MAX = 160


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool
    retry: bool  # transient: another attempt may succeed
    detail: str  # "ok", "errcode 45009: api freq out of limit", "HTTP 503", "timeout"...


class HttpSender:
    """One aiohttp session for a run's notifications (`async with HttpSender() as http`)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HttpSender:
        self._session = aiohttp.ClientSession(headers={"User-Agent": "batchmove-notify"})
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session is not None:
            await self._session.close()

    async def post_json(self, url: str, body: Any, limit_s: float, *,
                        wecom: bool = False) -> Answer:
        data = json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8"}
        return await self._attempt("POST", url, limit_s, wecom, data=data, headers=headers)

    async def get(self, url: str, limit_s: float) -> Answer:
        return await self._attempt("GET", url, limit_s, False)

    async def _attempt(self, method: str, url: str, limit_s: float, wecom: bool,
                       **kwargs: Any) -> Answer:
        assert self._session is not None, "use `async with HttpSender()`"
        try:
            async with self._session.request(
                    method, url, timeout=aiohttp.ClientTimeout(total=max(limit_s, 0.01)),
                    allow_redirects=False, **kwargs) as resp:
                text = await resp.text(errors="replace")
                return _classify(resp.status, text, wecom)
        except TimeoutError:
            return Answer(False, True, f"no answer within {limit_s:.1f} s")
        except aiohttp.InvalidURL:
            return Answer(False, False, "not a valid URL")
        except aiohttp.ClientConnectionError:
            return Answer(False, True, "connection failed")
        except aiohttp.ClientError as exc:
            return Answer(False, True, f"HTTP error ({type(exc).__name__})")


def _classify(status: int, text: str, wecom: bool) -> Answer:
    if status >= 500 or status == 429:
        return Answer(False, True, f"HTTP {status}")
    if not 200 <= status < 300:
        return Answer(False, False, f"HTTP {status}")
    if not wecom:
        return Answer(True, False, "ok")
    try:
        body = json.loads(text)
        errcode = int(body.get("errcode", -1))
        errmsg = str(body.get("errmsg", ""))
    except (ValueError, TypeError, AttributeError):
        return Answer(False, True, "the robot did not answer JSON")
    if errcode == 0:
        return Answer(True, False, "ok")
    errmsg = redact(errmsg)[:_DETAIL_MAX]
    return Answer(False, errcode in WECOM_TRANSIENT, f"errcode {errcode}: {errmsg}")
