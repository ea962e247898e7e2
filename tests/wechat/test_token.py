"""Token sources and TokenManager: single-flight, one refresh per rejected token, no loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from batchmove.errors import ApiError, FatalApiError, TokenError, UsageError
from batchmove.models import Credentials
from batchmove.sandbox import SandboxConfig, running_sandbox
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.token import (
    A,
    CommandTokenSource,
    EnvTokenSource,
    HttpFetch,
    SecretTokenSource,
    Token,
    TokenManager,
    TokenSource,
    last_words,
    token_source_from,
)

PY = sys.executable


class FakeSource(TokenSource):
    """Hands out t1, t2, ... (or always `fixed`), slowly, counting fetches."""

    def __init__(self, *, external: bool = False, fixed: str | None = None,
                 expires_in: float | None = 7200.0) -> None:
        self.external = external
        self.fixed = fixed
        self.expires_in = expires_in
        self.forced: list[bool] = []

    @property
    def describe(self) -> str:
        return "$FAKE_TOKEN" if self.external else "the fake appid"

    async def fetch(self, http: HttpFetch, *, force: bool = False) -> Token:
        self.forced.append(force)
        await asyncio.sleep(0.01)
        return Token(self.fixed or f"t{len(self.forced)}", self.expires_in)


async def no_http(method: str, endpoint: str, *, answer: type[A],
                  params: Mapping[str, str] | None = None,
                  json: Mapping[str, Any] | None = None) -> A:
    raise AssertionError("no HTTP expected")


def rejected(code: int = 40001) -> ApiError:
    return TokenError(code, "invalid credential", "groups/get")


# -- TokenManager ---------------------------------------------------------------------------


async def test_concurrent_first_gets_share_one_fetch() -> None:
    source = FakeSource()
    manager = TokenManager(source, no_http)
    tokens = await asyncio.gather(*(manager.get() for _ in range(50)))
    assert set(tokens) == {"t1"}
    assert source.forced == [False]


async def test_one_refresh_per_failing_token() -> None:
    source = FakeSource()
    manager = TokenManager(source, no_http)
    first = await manager.get()
    manager.confirm(first)
    refreshed = await asyncio.gather(*(manager.refresh(first, rejected(42001)) for _ in range(50)))
    assert set(refreshed) == {"t2"}
    assert source.forced == [False, True]
    assert manager.refreshes == 1
    assert await manager.refresh("t1") == "t2"  # a late worker still holding t1: no fetch
    assert manager.fetches == 2


async def test_secret_token_renewed_before_expiry_without_counting_as_refresh() -> None:
    now = [0.0]
    source = FakeSource(expires_in=7200)
    manager = TokenManager(source, no_http, max_refreshes=0, clock=lambda: now[0])
    assert await manager.get() == "t1"
    now[0] = 7200 - 301
    assert await manager.get() == "t1"
    now[0] = 7200 - 299  # inside the 5-minute margin
    assert await manager.get() == "t2"
    assert source.forced == [False, False]
    assert manager.refreshes == 0


async def test_external_token_is_cached_until_rejected() -> None:
    now = [0.0]
    source = FakeSource(external=True, expires_in=None)
    manager = TokenManager(source, no_http, clock=lambda: now[0])
    await manager.get()
    now[0] = 10**6
    assert await manager.get() == "t1"
    assert len(source.forced) == 1


async def test_external_source_with_nothing_newer_is_fatal() -> None:
    manager = TokenManager(FakeSource(external=True, fixed="same", expires_in=None), no_http)
    token = await manager.get()
    with pytest.raises(FatalApiError) as exc_info:
        await manager.refresh(token, rejected())
    assert str(exc_info.value) == (
        "WeChat errcode 40001 from groups/get: the token from $FAKE_TOKEN was rejected (40001)"
        " and the source has no newer one")


async def test_new_token_rejected_before_any_success_is_fatal() -> None:
    source = FakeSource()
    manager = TokenManager(source, no_http)
    t1 = await manager.get()
    t2 = await manager.refresh(t1, rejected())
    with pytest.raises(FatalApiError, match="rejected again"):
        await manager.refresh(t2, rejected())
    assert len(source.forced) == 2


async def test_max_refreshes_is_a_hard_bound() -> None:
    source = FakeSource()
    manager = TokenManager(source, no_http, max_refreshes=3)
    token = await manager.get()
    for _ in range(3):
        manager.confirm(token)
        token = await manager.refresh(token, rejected(42001))
    manager.confirm(token)
    with pytest.raises(FatalApiError, match=r"refreshed 3 times.*max_refreshes=3"):
        await manager.refresh(token, rejected(42001))
    assert manager.fetches == 4


# -- sources --------------------------------------------------------------------------------


def test_token_source_from_precedence() -> None:
    env = {"WECHAT_APPID": "wxapp", "WECHAT_APPSECRET": "s3cret", "WECHAT_ACCESS_TOKEN": "tok"}
    assert isinstance(token_source_from(Credentials(token_command="echo x"), env),
                      CommandTokenSource)
    assert isinstance(token_source_from(Credentials(), env), EnvTokenSource)
    del env["WECHAT_ACCESS_TOKEN"]
    source = token_source_from(Credentials(token_kind="classic"), env)
    assert isinstance(source, SecretTokenSource)
    assert (source.appid, source.kind) == ("wxapp", "classic")
    assert "s3cret" not in repr(source)


@pytest.mark.parametrize(
    ("env", "missing"),
    [({}, "MY_APPID and MY_SECRET"), ({"MY_APPID": "wx"}, "MY_SECRET"),
     ({"MY_SECRET": "s"}, "MY_APPID")],
)
def test_token_source_from_names_missing_variables(env: dict[str, str], missing: str) -> None:
    creds = Credentials(appid_env="MY_APPID", secret_env="MY_SECRET", token_env="MY_TOKEN")
    with pytest.raises(UsageError, match=f"set {missing} \\(or MY_TOKEN"):
        token_source_from(creds, env)


async def test_env_source_rereads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    source = EnvTokenSource()
    monkeypatch.setenv("WECHAT_ACCESS_TOKEN", "first")
    assert (await source.fetch(no_http)).value == "first"
    monkeypatch.setenv("WECHAT_ACCESS_TOKEN", " second\n")
    assert (await source.fetch(no_http)).value == "second"
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN")
    with pytest.raises(FatalApiError, match="WECHAT_ACCESS_TOKEN is empty or unset"):
        await source.fetch(no_http)


async def test_command_source_strips_output() -> None:
    token = await CommandTokenSource(f"{PY} -c \"print('  tok-123  ')\"").fetch(no_http)
    assert token == Token("tok-123")
    assert "tok-123" not in repr(token)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("echo leaked-output; exit 3", "'echo' exited with status 3"),
        ("true", "'true' printed no token"),
        ("sleep 5", "'sleep' did not finish within 0.2s"),
        ("/no/such/tokentool --secret=abc", "'tokentool' exited with status 127"),
    ],
)
async def test_command_source_failures_are_fatal_and_quiet(command: str, message: str) -> None:
    with pytest.raises(FatalApiError, match=message) as exc_info:
        await CommandTokenSource(command, timeout=0.2).fetch(no_http)
    assert "leaked-output" not in str(exc_info.value)
    assert "abc" not in str(exc_info.value)


SECRET_IN_STDERR = "tok-Secret-9fQ2xL7pW3vB8nK4"


async def test_command_stderr_is_never_passed_on(capfd: pytest.CaptureFixture[str]) -> None:
    """A helper that chats on stderr (here: the secret it used) while printing the token:
    nothing reaches batchmove's own stderr or stdout."""
    command = (f"{PY} -c \"import sys; print('using {SECRET_IN_STDERR}', file=sys.stderr); "
               "print('tok-123')\"")
    assert await CommandTokenSource(command).fetch(no_http) == Token("tok-123")
    out, err = capfd.readouterr()
    assert SECRET_IN_STDERR not in out + err
    assert (out, err) == ("", "")


async def test_failing_command_is_told_by_status_and_redacted_last_line(
        capfd: pytest.CaptureFixture[str]) -> None:
    command = (f"{PY} -c \"import sys; print('first line', file=sys.stderr); "
               f"print('vault said no to {SECRET_IN_STDERR} at "
               "https://vault.example/v1?secret=abc', file=sys.stderr); sys.exit(4)\"")
    with pytest.raises(FatalApiError) as exc_info:
        await CommandTokenSource(command).fetch(no_http)
    message = str(exc_info.value)
    assert message.endswith("exited with status 4: vault said no to *** at "
                            "https://vault.example/v1?secret=***")
    assert SECRET_IN_STDERR not in message
    assert "abc" not in message
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize(("stderr", "said"), [
    (b"", ""),
    (b"\n\n  \n", ""),
    (b"one\ntwo  \n\n", "two"),
    (b"token=Zq7Vb2Lk9Xw4Pd8N9x0 refused", "token=*** refused"),
    (b"internationalization authentication failed", "internationalization authentication failed"),
    (b"x" * 500, "x" * 160),
    (b"\xff\xfe broken", "\ufffd\ufffd broken"),
])
def test_last_words(stderr: bytes, said: str) -> None:
    assert last_words(stderr) == said


def test_reprs_hide_secrets() -> None:
    source = SecretTokenSource("wxapp", "hunter2")
    assert repr(source) == "SecretTokenSource(appid='wxapp', kind='stable')"
    client = WeChatClient("http://127.0.0.1:1", source)
    assert "hunter2" not in repr(client)
    assert "hunter2" not in repr(client.tokens)
    with pytest.raises(UsageError):
        SecretTokenSource("wxapp", "x", "weird")  # type: ignore[arg-type]


# -- against the sandbox --------------------------------------------------------------------


async def test_stable_refresh_after_rejection_forces_a_new_token() -> None:
    async with running_sandbox(SandboxConfig(users=1)) as sb:
        source = SecretTokenSource(sb.state.appid, sb.state.secret)
        async with WeChatClient(sb.base_url, source) as client:
            bodies: list[Any] = []

            async def recording(method: str, endpoint: str, *, answer: type[A],
                                params: Mapping[str, str] | None = None,
                                json: Mapping[str, Any] | None = None) -> A:
                bodies.append(dict(json or {}))
                return await client._request(method, endpoint, answer=answer, params=params,
                                             json=json)

            first = await source.fetch(recording)
            again = await source.fetch(recording)  # stable: a valid token is not rotated
            forced = await source.fetch(recording, force=True)
    assert first.value == again.value != forced.value
    assert [b["force_refresh"] for b in bodies] == [False, False, True]
    assert client.calls["stable_token"] == 3


async def test_classic_source_uses_the_token_endpoint() -> None:
    async with running_sandbox(SandboxConfig(users=2)) as sb:
        source = SecretTokenSource(sb.state.appid, sb.state.secret, "classic")
        async with WeChatClient(sb.base_url, source) as client:
            assert len(await client.get_groups()) == 3
    assert dict(client.calls) == {"token": 1, "groups/get": 1}


async def test_external_sources_are_reread_on_refresh(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The account's token server rotates the token; our env and command sources follow it."""
    token_file = tmp_path / "token"
    async with running_sandbox(SandboxConfig(users=2)) as sb:
        owner = SecretTokenSource(sb.state.appid, sb.state.secret, "classic")
        async with WeChatClient(sb.base_url, owner) as server:
            token_file.write_text(await server.tokens.get())
            monkeypatch.setenv("WECHAT_ACCESS_TOKEN", token_file.read_text())
            command = CommandTokenSource(f"cat {token_file}")
            async with WeChatClient(sb.base_url, command) as by_command, \
                    WeChatClient(sb.base_url, EnvTokenSource()) as by_env:
                for client in (by_command, by_env):
                    await client.get_groups()
                sb.state.expire_tokens()
                new = await server.tokens.refresh(await server.tokens.get())
                token_file.write_text(new + "\n")
                monkeypatch.setenv("WECHAT_ACCESS_TOKEN", new)
                for client in (by_command, by_env):
                    assert len(await client.get_groups()) == 3
                    assert client.tokens.fetches == 2
                    assert client.tokens.refreshes == 1
                    assert dict(client.calls) == {"groups/get": 3}
    assert server.calls["token"] == 2
