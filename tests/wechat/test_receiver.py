"""`ticket receive`'s endpoint, over 127.0.0.1, fed by the sandbox's own encrypted pushes."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from batchmove.registry import Registry
from batchmove.registry.platform import RegistryPlatformStore
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
