"""What a run asks WeChat while its input loads (`engine/early.py`), against a real sandbox on
127.0.0.1: the load runs in a thread, and here it waits for the account to have been asked."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from batchmove.errors import FatalApiError, UsageError
from batchmove.flows import run as run_flow
from batchmove.models import JobSpec
from batchmove.sandbox import RunningSandbox, SandboxConfig
from tests.support.engine import (
    assert_state_matches,
    group_ids_by_name,
    run,
    spec_for,
    spread,
    write_moves,
)
from tests.support.sandboxes import SandboxFactory

EARLY = {"stable_token", "groups/get", "openapi/quota/get"}


@pytest.fixture(autouse=True)
def _sandbox_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)


def asked(sb: RunningSandbox) -> set[str]:
    """The endpoints the sandbox has answered so far (read from the load's thread)."""
    while True:
        try:
            return {endpoint for _, endpoint in tuple(sb.state.timeline)}
        except RuntimeError:  # appended to meanwhile by the loop's thread: look again
            continue


def waiting_load(sb: RunningSandbox, seen: threading.Event, then: Any) -> Any:
    """`load_or_resume`, once the account was asked for the token, groups and quotas (up to
    5 s: a run that asked only after its load would never let it go on in time)."""
    def load(*args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not seen.is_set():
            if asked(sb) >= EARLY:
                seen.set()
            time.sleep(0.005)
        return then(*args, **kwargs)
    return load


async def test_the_token_groups_and_quotas_are_asked_while_the_input_loads(
        tmp_path: Path, sandbox_factory: SandboxFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    sb = await sandbox_factory(SandboxConfig(users=120, groups=["A", "B"]))
    rows = spread(120, ["A", "B"])
    seen = threading.Event()
    monkeypatch.setattr(run_flow, "load_or_resume",
                        waiting_load(sb, seen, run_flow.load_or_resume))
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    rate="auto")
    result = await run(spec)
    assert seen.is_set()  # asked before the load went on
    assert (result.exit_code, result.counts["moved"]) == (0, 120), result.message
    assert sb.state.calls["stable_token"] == 1  # the token fetched once, shared by both
    assert sb.state.calls["groups/get"] == 1  # the early listing is the one resolved against


async def test_a_load_that_fails_wins_over_what_was_asked_meanwhile(
        tmp_path: Path, sandbox_factory: SandboxFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad credentials and a load that fails: the load's error is the run's (as when nothing
    was asked before the load); the early calls' failure is dropped, not left unretrieved."""
    sb = await sandbox_factory(SandboxConfig(users=10, groups=["A"]))
    monkeypatch.setenv("WECHAT_APPSECRET", "not-the-secret")

    def refused(*args: Any, **kwargs: Any) -> None:
        time.sleep(0.2)  # the token fetch is refused meanwhile
        raise UsageError("the input changed since the unfinished run")

    monkeypatch.setattr(run_flow, "load_or_resume", refused)
    rows = spread(10, ["A"])
    with pytest.raises(UsageError, match="the input changed"):
        await run(spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                           rate="auto"))
    assert sb.state.move_log == []


async def test_an_embedded_sandbox_starts_after_the_load(tmp_path: Path) -> None:
    """`api_base = "sandbox"` takes its followers from the loaded input: nothing is asked
    before the load, and the run moves every user."""
    rows = [(f"oEARLY{i:022d}", "A") for i in range(30)]
    spec = JobSpec(input=write_moves(tmp_path / "in.csv", rows), api_base="sandbox",
                            out=tmp_path / "run", sandbox={"groups": ["A"]})
    result = await run(spec)
    assert (result.exit_code, result.counts["moved"]) == (0, 30), result.message


async def test_rows_are_loaded_with_the_group_ids_of_the_early_listing(
        tmp_path: Path, sandbox_factory: SandboxFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing asked while the input loads gives the rows of existing groups their ids
    as they are written; a group the run creates gets its rows' ids after the creation; the
    run moves everyone where the input says."""
    sb = await sandbox_factory(SandboxConfig(users=90, groups=["A", "B"]))
    rows = spread(90, ["A", "B", "New"])
    loaded: dict[str, set[int | None]] = {}
    load = run_flow.load_or_resume

    def load_then_look(ledger: Any, *args: Any, **kwargs: Any) -> None:
        load(ledger, *args, **kwargs)
        for r in ledger.rows():
            loaded.setdefault(r.target, set()).add(r.group_id)

    monkeypatch.setattr(run_flow, "load_or_resume", load_then_look)
    result = await run(spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run"))
    ids = group_ids_by_name(sb)
    assert loaded == {"A": set(ids["A"]), "B": set(ids["B"]), "New": {None}}
    assert (result.exit_code, result.counts["moved"]) == (0, 90), result.message
    assert_state_matches(sb, rows)


async def test_the_load_never_waits_for_a_listing_that_failed(
        tmp_path: Path, sandbox_factory: SandboxFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The load's first chunk waits for the listing (`LISTING_WAIT`) unless it has failed:
    with bad credentials and a wait of an hour, the load's question is answered at once
    (no ids: its rows go in without them), and the listing's own error is the caller's."""
    from batchmove.engine import early as early_module
    from batchmove.engine.backend import client_for

    sb = await sandbox_factory(SandboxConfig(users=10, groups=["A"]))
    monkeypatch.setenv("WECHAT_APPSECRET", "not-the-secret")
    monkeypatch.setattr(early_module, "LISTING_WAIT", 3600.0)
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", spread(10, ["A"])), tmp_path / "run")
    async with client_for(spec) as client:
        early = early_module.Early(client, spec).start()
        with pytest.raises(FatalApiError, match="40001"):
            await early.listing()
        ids = early.group_ids("name")
        assert ids is not None
        answered: list[object] = []
        waiter = threading.Thread(target=lambda: answered.append(ids({"A"})), daemon=True)
        waiter.start()
        waiter.join(timeout=30)  # an hour if the failure were not heard
        assert answered == [None]
        await early.close()


def test_group_ids_for_the_load_resolve_as_the_run_will() -> None:
    """Names and ids against the listing, as `resolve_targets` resolves them: an ambiguous or
    unknown target gets no id (the run fails or creates it later), nor does a target that no
    id reads (never raised in the load's thread); tag sets resolve per user: no ids at all."""
    from typing import cast

    from batchmove.engine.early import Early
    from batchmove.models import Target
    from batchmove.wechat.client import WeChatClient

    early = Early(cast(WeChatClient, None), JobSpec(input=Path("in.csv")))
    early.listed = [Target(101, "A", 0), Target(102, "B", 0), Target(103, "B", 0)]
    early._answered.set()
    by_name, by_id = early.group_ids("name"), early.group_ids("id")
    assert by_name is not None
    assert by_id is not None
    assert early.group_ids("set") is None
    assert by_name({"A", "B", "C"}) == {"A": 101}
    assert by_id({"101", "999"}) == {"101": 101}
    assert by_id({"101", "A"}) is None
