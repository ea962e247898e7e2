"""`rollback --apply` (`batchmove.rollback(..., apply=True)`): the undo runs with the run's own
settings, whatever the calling environment holds, in RUN_DIR/rollback, and resumes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

import batchmove
from batchmove.errors import ConfirmationRequired
from batchmove.flows.rollback import EMBEDDED_CAVEAT, UNDO_DIR
from batchmove.models import Credentials
from batchmove.sandbox import RunningSandbox, SandboxConfig
from tests.support.engine import (
    BACKENDS,
    QuietEvents,
    account,
    assert_state_matches,
    ledger_statuses,
    run,
    spec_for,
    spread,
    user_state,
    write_moves,
)
from tests.support.sandboxes import SandboxFactory

#: the rehearsal account's credentials live under names of the job's own choosing
REHEARSAL = Credentials(appid_env="REHEARSAL_APPID", secret_env="REHEARSAL_SECRET")


@pytest.fixture(autouse=True)
def two_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell that holds another account's credentials under the usual names (production,
    say) and the rehearsal's under the names its job gives."""
    monkeypatch.setenv("WECHAT_APPID", "wxproduction000000")
    monkeypatch.setenv("WECHAT_APPSECRET", "production-secret")
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("REHEARSAL_APPID", SandboxConfig().appid)
    monkeypatch.setenv("REHEARSAL_SECRET", SandboxConfig().secret)


async def moved_run(sb: RunningSandbox, tmp_path: Path, backend: str = "groups",
                    users: int = 120) -> Path:
    rows = spread(users, ["A", "B", "新分组"])
    spec = spec_for(sb, write_moves(tmp_path / "in.csv", rows), tmp_path / "run",
                    snapshot=True, backend=backend, credentials=REHEARSAL)
    result = await run(spec)
    assert result.exit_code == 0, result.message
    assert_state_matches(sb, rows, backend)
    return tmp_path / "run"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_apply_undoes_the_run_on_its_own_account(
        tmp_path: Path, sandbox_factory: SandboxFactory, backend: str) -> None:
    sb = await sandbox_factory(account(["A", "B"], users=120))
    before = user_state(sb, backend)
    run_dir = await moved_run(sb, tmp_path, backend)
    undo = await batchmove.rollback_async(run_dir, apply=True, events=QuietEvents())
    assert undo.applied is not None
    assert undo.applied.exit_code == 0, undo.applied.message
    assert undo.undo_dir == run_dir / UNDO_DIR == undo.applied.run_dir
    assert undo.caveat is None
    assert user_state(sb, backend) == before  # every user back where the snapshot saw them
    assert ledger_statuses(run_dir / UNDO_DIR) == {"moved": 120}
    meta = dict(sqlite3.connect(run_dir / UNDO_DIR / "ledger.sqlite").execute(
        "SELECT key, value FROM meta"))
    assert json.loads(meta["api_base"]) == sb.base_url
    assert json.loads(meta["settings"])["credentials"]["appid_env"] == "REHEARSAL_APPID"
    assert "production-secret" not in json.dumps(meta)


async def test_a_stopped_undo_resumes_with_the_same_call(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(account(["A", "B"], users=300))
    before = user_state(sb)
    run_dir = await moved_run(sb, tmp_path, users=300)
    used = sb.state.calls["groups/members/batchupdate"]
    sb.set_faults(daily_quota={"groups/members/batchupdate": used + 2})
    first = await batchmove.rollback_async(run_dir, apply=True)
    assert first.applied is not None
    assert first.applied.exit_code == batchmove.EXIT_STOPPED, first.applied.message
    assert first.applied.message.startswith("the daily API quota is used up (45009)")
    sb.state.quotas.clear()
    sb.set_faults(daily_quota={"groups/members/batchupdate": 100_000})
    again = await batchmove.rollback_async(run_dir, apply=True)
    assert again.applied is not None
    assert again.applied.exit_code == 0, again.applied.message
    assert user_state(sb) == before
    assert ledger_statuses(run_dir / UNDO_DIR) == {"moved": 300}


async def test_a_refused_confirmation_sends_nothing(tmp_path: Path,
                                                    sandbox_factory: SandboxFactory) -> None:
    sb = await sandbox_factory(account(["A", "B"], users=60))
    run_dir = await moved_run(sb, tmp_path, users=60)
    moves = sb.state.calls["groups/members/batchupdate"]
    seen: list[batchmove.Plan] = []

    def no(plan: batchmove.Plan) -> bool:
        seen.append(plan)
        return False

    with pytest.raises(ConfirmationRequired):
        await batchmove.rollback_async(run_dir, apply=True, confirm=no)
    assert seen[0].users_to_move <= 60
    assert sb.state.calls["groups/members/batchupdate"] == moves


async def test_a_ledger_without_recorded_settings_uses_its_api_address(
        tmp_path: Path, sandbox_factory: SandboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs recorded before `settings` existed: the API address from the ledger, the usual
    credential variables."""
    sb = await sandbox_factory(account(["A", "B"], users=60))
    before = user_state(sb)
    run_dir = await moved_run(sb, tmp_path, users=60)
    with sqlite3.connect(run_dir / "ledger.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'settings'")
    monkeypatch.setenv("WECHAT_APPID", SandboxConfig().appid)
    monkeypatch.setenv("WECHAT_APPSECRET", SandboxConfig().secret)
    undo = await batchmove.rollback_async(run_dir, apply=True)
    assert undo.applied is not None
    assert undo.applied.exit_code == 0, undo.applied.message
    assert user_state(sb) == before


def test_an_embedded_sandbox_run_says_what_its_undo_cannot_do(tmp_path: Path) -> None:
    rows = spread(60, ["A", "B"])
    job = write_moves(tmp_path / "in.csv", rows)
    result = batchmove.run(job, api_base="sandbox", out=tmp_path / "run", create_groups=True,
                           rate=0)
    assert result.exit_code == 0, result.message
    events = QuietEvents()
    undo = batchmove.rollback(tmp_path / "run", apply=True, events=events)
    assert undo.caveat == EMBEDDED_CAVEAT
    assert f"note: {EMBEDDED_CAVEAT}" in events.lines
    assert undo.applied is not None
    # a fresh sandbox: every follower is where the snapshot saw them already
    assert (undo.applied.exit_code, undo.applied.counts["already"]) == (0, 60)


async def test_a_token_command_is_read_from_the_job_file_never_kept_in_the_ledger(
        tmp_path: Path, sandbox_factory: SandboxFactory) -> None:
    """A token command may hold a secret (`printf %s TOKEN`): the ledger records only that the
    run used its job file's command, and the undo reads it from there again."""
    sb = await sandbox_factory(account(["A", "B"], users=60))
    before = user_state(sb)
    token, _ = sb.state.tokens.stable(7200.0, False)
    write_moves(tmp_path / "in.csv", spread(60, ["A", "B"]))
    job = tmp_path / "job.toml"
    job.write_text(f'input = "in.csv"\nout = "run"\napi_base = "{sb.base_url}"\nrate = 0\n'
                   f'[credentials]\ntoken_command = "printf %s {token}"\n', encoding="utf-8")
    first = await batchmove.run_async(job)
    assert first.exit_code == 0, first.message
    undo = await batchmove.rollback_async(tmp_path / "run", apply=True)
    assert undo.applied is not None
    assert undo.applied.exit_code == 0, undo.applied.message
    assert user_state(sb) == before
    for ledger in (tmp_path / "run").rglob("ledger.sqlite*"):
        assert token.encode() not in ledger.read_bytes(), ledger
    job.write_text(f'input = "in.csv"\nout = "run"\napi_base = "{sb.base_url}"\n',
                   encoding="utf-8")  # the command gone from the job file: one clear line
    with pytest.raises(batchmove.UsageError, match="token_command of its job file"):
        await batchmove.rollback_async(tmp_path / "run", apply=True)
