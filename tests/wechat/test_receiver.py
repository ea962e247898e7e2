"""`ticket receive`'s endpoint, over 127.0.0.1, fed by the sandbox's own encrypted pushes."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from batchmove.registry import Registry
from batchmove.registry.platform import RegistryPlatformStore
from batchmove.registry.store import LOCK_NAME
from batchmove.sandbox import PlatformConfig, PlatformState
from batchmove.wechat.msgcrypt import MsgCrypt
from batchmove.wechat.receiver import Receiver, receiver_app

CONFIG = PlatformConfig(authorizers=1)


async def receive(tmp_path: Path, push: Callable[[PlatformState], tuple[str, dict[str, str]]],
                  appid: str = CONFIG.component_appid) -> tuple[int, str, Receiver, Any]:
    platform = PlatformState(CONFIG)
    said: list[str] = []
    crypt = MsgCrypt(CONFIG.msg_token, CONFIG.encoding_aes_key, appid)
    receiver = Receiver(crypt, RegistryPlatformStore(Registry(tmp_path / "state")),
                        tmp_path / "ticket",
                        say=said.append)
    async with TestClient(TestServer(receiver_app(receiver, "/wx"))) as client:
        body, query = push(platform)
        resp = await client.post("/wx", params=query, data=body.encode())
        return resp.status, await resp.text(), receiver, (platform, said)


async def test_a_push_is_answered_success_and_its_ticket_stored_with_its_time(
        tmp_path: Path) -> None:
    status, text, receiver, (platform, said) = await receive(tmp_path, PlatformState.ticket_push)
    assert (status, text) == (200, "success")
    ticket, at = receiver.store.ticket(CONFIG.component_appid) or ("", 0.0)
    assert ticket == platform.latest_ticket
    assert abs(at - time.time()) < 60
    assert (tmp_path / "ticket").read_text() == ticket + "\n"
    assert (tmp_path / "ticket").stat().st_mode & 0o777 == 0o600
    assert ticket not in " ".join(said)
    assert receiver.staleness() is None


async def test_a_forged_push_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    def forged(platform: PlatformState) -> tuple[str, dict[str, str]]:
        body, query = platform.ticket_push()
        return body, {**query, "msg_signature": "0" * 40}

    status, _, receiver, _ = await receive(tmp_path, forged)
    assert status == 403
    assert receiver.store.ticket(CONFIG.component_appid) is None
    assert "no ticket stored yet" in (receiver.staleness() or "")


async def test_a_stale_ticket_is_reported(tmp_path: Path) -> None:
    store = RegistryPlatformStore(Registry(tmp_path))
    store.put_ticket("wxc", "t", time.time() - 13 * 3600)
    receiver = Receiver(MsgCrypt("t", CONFIG.encoding_aes_key, "wxc"), store)
    assert "is stale (13.0 h old" in (receiver.staleness() or "")


async def test_the_receiver_holds_no_registry_between_pushes(tmp_path: Path) -> None:
    """A damaged registry can be set aside by any process that meets it only when nobody holds
    it; a receiver lives for days, and a push comes every 10 minutes."""
    platform, crypt = PlatformState(CONFIG), MsgCrypt(CONFIG.msg_token, CONFIG.encoding_aes_key,
                                                      CONFIG.component_appid)
    store = RegistryPlatformStore(Registry(tmp_path), keep_open=False)
    receiver = Receiver(crypt, store, say=[].append)
    assert "no ticket stored yet" in (receiver.staleness() or "")
    async with TestClient(TestServer(receiver_app(receiver))) as client:
        body, query = platform.ticket_push()
        assert (await client.post("/", params=query, data=body.encode())).status == 200
        fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if held
        finally:
            os.close(fd)
    assert (store.ticket(CONFIG.component_appid) or ("",))[0] == platform.latest_ticket


async def test_a_ticket_that_cannot_be_kept_is_one_line_and_the_receiver_goes_on(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    platform, crypt = PlatformState(CONFIG), MsgCrypt(CONFIG.msg_token, CONFIG.encoding_aes_key,
                                                      CONFIG.component_appid)
    state, ticket_file = tmp_path / "state", tmp_path / "gone" / "ticket"
    state.write_text("not a directory")
    receiver = Receiver(crypt, RegistryPlatformStore(Registry(state), keep_open=False),
                        ticket_file, say=[].append)
    async with TestClient(TestServer(receiver_app(receiver))) as client:
        async def push() -> tuple[int, str]:
            body, query = platform.ticket_push()
            resp = await client.post("/", params=query, data=body.encode())
            return resp.status, await resp.text()

        assert await push() == (500, "not stored")  # the registry cannot be opened
        state.unlink()
        assert await push() == (500, "not stored")  # stored, but the ticket file cannot be
        ticket_file.mkdir(parents=True)
        assert await push() == (500, "not stored")  # written, but cannot replace a directory
        ticket_file.rmdir()
        assert list(ticket_file.parent.iterdir()) == []  # no copy of the ticket left behind
        assert await push() == (200, "success")
    err = capfd.readouterr().err
    assert err.splitlines() == [
        f"batchmove: could not keep a ticket: cannot open the account registry in {state}: "
        f"File exists (set BATCHMOVE_STATE_DIR to a writable directory)",
        f"batchmove: could not keep a ticket {ticket_file}: No such file or directory",
        f"batchmove: could not keep a ticket {ticket_file}: Is a directory"]
    assert "Traceback" not in err
    assert platform.latest_ticket not in err
    assert ticket_file.read_text() == platform.latest_ticket + "\n"
    assert receiver.received == 1
