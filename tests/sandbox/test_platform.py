"""The sandbox's third-party platform: its endpoints and errors, as a client sees them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from batchmove.sandbox import PlatformConfig, PlatformState, SandboxConfigError, authorizer_appid
from tests.support.sandboxes import FakeClock

CONFIG = PlatformConfig(authorizers=3, account={"users": 5})


def call(p: PlatformState, endpoint: str, body: dict[str, Any], token: str = "") -> Any:
    query = {"component_access_token": token} if token else {}
    return p.handle(endpoint, "POST", query, json.dumps(body).encode())


def component_token(p: PlatformState) -> str:
    answer = call(p, "api_component_token", {
        "component_appid": CONFIG.component_appid,
        "component_appsecret": CONFIG.component_secret,
        "component_verify_ticket": p.latest_ticket})
    token: str = answer["component_access_token"]
    assert answer["expires_in"] == 7200
    return token


def test_each_authorizer_is_its_own_account() -> None:
    p = PlatformState(CONFIG)
    followers = [set(a.state.followers) for a in p.accounts.values()]
    assert [len(f) for f in followers] == [5, 5, 5]
    assert not followers[0] & followers[1]
    assert list(p.accounts) == [authorizer_appid(i) for i in range(3)]


def test_tokens_refresh_rotation_list_and_info() -> None:
    p = PlatformState(CONFIG)
    token = component_token(p)
    listed = call(p, "api_get_authorizer_list", {"component_appid": CONFIG.component_appid,
                                                 "offset": 1, "count": 500}, token)
    assert listed["total_count"] == 3
    assert [a["authorizer_appid"] for a in listed["list"]] == [authorizer_appid(1),
                                                               authorizer_appid(2)]
    first = listed["list"][0]["refresh_token"]
    body = {"component_appid": CONFIG.component_appid, "authorizer_appid": authorizer_appid(1),
            "authorizer_refresh_token": first}
    answer = call(p, "api_authorizer_token", body, token)
    assert answer["authorizer_refresh_token"] != first
    assert p.account_for_token(answer["authorizer_access_token"]) is \
        p.accounts[authorizer_appid(1)].state
    assert call(p, "api_authorizer_token", body, token)["errcode"] == 61023  # rotated away
    info = call(p, "api_get_authorizer_info", {"component_appid": CONFIG.component_appid,
                                               "authorizer_appid": authorizer_appid(2)}, token)
    assert info["authorizer_info"]["nick_name"] == "沙盒公众号3"


@pytest.mark.parametrize(("change", "code"), [
    ({"component_appsecret": "wrong"}, 40125), ({"component_appid": "wxother"}, 40013),
    ({"component_verify_ticket": "ticket@@@never-pushed"}, 61006),
    ({"component_appsecret": ""}, 41004)])
def test_component_token_errors(change: dict[str, str], code: int) -> None:
    p = PlatformState(CONFIG)
    body = {"component_appid": CONFIG.component_appid,
            "component_appsecret": CONFIG.component_secret,
            "component_verify_ticket": p.latest_ticket, **change}
    assert call(p, "api_component_token", body)["errcode"] == code


def test_tickets_expire_after_12_hours_ips_and_revocations() -> None:
    clock = FakeClock()
    p = PlatformState(CONFIG, clock)
    clock.advance(12 * 3600)
    with pytest.raises(KeyError):
        component_token(p)  # 61005: no token in the answer
    p.push_ticket()
    token = component_token(p)
    p.ip_blocked = True
    assert call(p, "api_get_authorizer_list", {}, token)["errcode"] == 61004
    p.ip_blocked = False
    p.revoke(authorizer_appid(0))
    assert call(p, "api_authorizer_token", {
        "component_appid": CONFIG.component_appid, "authorizer_appid": authorizer_appid(0),
        "authorizer_refresh_token": p.refresh_token_of(authorizer_appid(0))},
        token)["errcode"] == 61003
    clock.advance(7200)
    assert call(p, "api_get_authorizer_list", {"component_appid": CONFIG.component_appid,
                                               "offset": 0, "count": 10}, token)["errcode"] \
        == 42001
    assert p.snapshot()["calls"]["api_component_token"] == 2


def test_bad_settings_are_refused() -> None:
    with pytest.raises(SandboxConfigError):
        PlatformConfig(authorizers=0)
    with pytest.raises(SandboxConfigError, match="own appid"):
        PlatformConfig(account={"appid": "wx1"})
    with pytest.raises(SandboxConfigError, match="43 characters"):
        PlatformConfig(encoding_aes_key="short")
