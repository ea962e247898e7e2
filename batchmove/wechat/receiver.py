"""`batchmove ticket receive`: the endpoint WeChat pushes `component_verify_ticket` to.

WeChat POSTs encrypted XML every 10 minutes with `timestamp`, `nonce` and `msg_signature` in
the query; the receiver checks the signature, decrypts (`msgcrypt`), stores the ticket with the
time it arrived in the machine's account registry (and, if asked, a ticket file, written
atomically with mode 600), and answers `success`, which WeChat requires. Other notices of the
same URL (authorized, unauthorized...) are answered `success` too and otherwise ignored. A push
that fails its checks is answered 403 and said on stderr, without its contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from batchmove.errors import BatchmoveError
from batchmove.wechat.component import PlatformStore
from batchmove.wechat.msgcrypt import MsgCrypt, PushError, xml_fields

TICKET_INFO = "component_verify_ticket"
STALE_AFTER = 12 * 3600.0


@dataclass(slots=True)
class Receiver:
    """What a push is checked with, and where its ticket goes."""

    crypt: MsgCrypt
    store: PlatformStore
    ticket_file: Path | None = None
    say: Callable[[str], None] = print
    clock: Callable[[], float] = time.time
    received: int = 0

    def accept(self, body: bytes, query: dict[str, str]) -> None:
        """Check, decrypt and store one push; PushError when it is not a valid one."""
        message = self.crypt.open_push(body, query.get("msg_signature", ""),
                                       query.get("timestamp", ""), query.get("nonce", ""))
        fields = xml_fields(message)
        if fields.get("InfoType") != TICKET_INFO:
            return
        if fields.get("AppId") != self.crypt.appid:
            raise PushError("the ticket is for another platform's appid")
        ticket = fields.get("ComponentVerifyTicket", "")
        if not ticket:
            raise PushError("the push has no ComponentVerifyTicket")
        now = self.clock()
        self.store.put_ticket(self.crypt.appid, ticket, now)
        if self.ticket_file is not None:
            try:
                _write_private(self.ticket_file, ticket + "\n")
            except OSError as exc:  # named by the file asked for, not its temporary
                raise OSError(exc.errno, exc.strerror, str(self.ticket_file)) from None
        self.received += 1
        self.say(f"ticket received for {self.crypt.appid} at "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(now))}")

    def staleness(self) -> str | None:
        """A line about the stored ticket when it is missing or over 12 h old, else None."""
        found = self.store.ticket(self.crypt.appid)
        if found is None:
            return f"no ticket stored yet for {self.crypt.appid}: waiting for WeChat's push"
        age = self.clock() - found[1]
        if age >= STALE_AFTER:
            return (f"the stored ticket of {self.crypt.appid} is stale ({age / 3600:.1f} h old, "
                    "WeChat accepts 12 h): waiting for WeChat's next push")
        return None


def _write_private(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError:  # a full disk, say: no half-written ticket is left behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


_RECEIVER = web.AppKey("receiver", Receiver)


async def _push(request: web.Request) -> web.Response:
    receiver = request.app[_RECEIVER]
    try:
        receiver.accept(await request.read(), dict(request.query))
    except PushError as exc:
        print(f"batchmove: refused a push: {exc}", file=sys.stderr, flush=True)
        return web.Response(status=403, text="refused")
    except (BatchmoveError, OSError) as exc:  # the registry or the ticket file: WeChat pushes
        # again (within 10 minutes), and the receiver goes on
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        where = f" {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        print(f"batchmove: could not keep a ticket{where}: {why}", file=sys.stderr, flush=True)
        return web.Response(status=500, text="not stored")
    return web.Response(text="success")


def receiver_app(receiver: Receiver, path: str = "/") -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[_RECEIVER] = receiver
    app.router.add_post(path, _push)
    return app


def serve(receiver: Receiver, host: str, port: int, path: str = "/") -> None:
    """Run until SIGINT/SIGTERM; says `listening on URL` once bound, and a stale ticket."""
    asyncio.run(_serve(receiver, host, port, path))


async def _serve(receiver: Receiver, host: str, port: int, path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(receiver_app(receiver, path), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        receiver.say(f"listening on http://{host}:{bound[1]}{path}")
        stale = receiver.staleness()
        if stale:
            receiver.say(stale)
        await stop.wait()
    finally:
        await runner.cleanup()
