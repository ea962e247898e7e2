"""Who is moving whom: a running run leaves its users in its ledger (nothing copied), another
run reads them from there to count the overlap; what the other runs still plan to send."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import batchmove
from batchmove.intake import loader
from batchmove.ledger.rundir import load
from batchmove.ledger.store import Ledger
from batchmove.registry import Budget, Claims, InLedger, Registry
from batchmove.registry import claims as claims_module
from batchmove.registry.aimd import Report
from batchmove.registry.claims import openid_hash
from batchmove.sandbox import SandboxConfig
from tests.support.engine import write_moves

OPENIDS = SandboxConfig(users=30).follower_openids()


def loaded(tmp_path: Path, name: str, openids: list[str]) -> Path:
    """A run directory whose ledger holds `openids`, all pending."""
    spec = batchmove.job_spec(write_moves(tmp_path / f"{name}.csv", [(o, "A") for o in openids]),
                              out=tmp_path / name)
    with Ledger(spec.out_dir).open() as ledger:
        load(ledger, loader.open_input(spec), spec, "", lambda _: None)
    return spec.out_dir


def claims_tables(registry: Registry) -> list[str]:
    return [name for (name,) in registry.conn.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE 'claims_%'")]


def test_a_run_left_in_its_ledger_is_read_from_there_when_another_compares(
        tmp_path: Path) -> None:
    other = loaded(tmp_path, "other", OPENIDS[:20])
    with Ledger(other).open() as ledger:  # 5 users moved before it registered: done
        ledger.record_results({1: [2, 3, 4, 5, 6]}, [])  # (row 1 is the header)
    time.sleep(0.01)
    registry = Registry()
    claims = Claims(registry, "acct")
    assert claims.register(other, "other", InLedger(other, 15)) == []  # alone: no compare
    assert claims_tables(registry) == []  # nothing copied into the registry
    assert [(r.job, r.users) for r in claims.runs()] == [("other", 15)]
    with Ledger(other).open() as ledger:  # 2 moved since: still this run's users
        ledger.record_results({1: [7, 8]}, [])
    overlaps = claims.register(tmp_path / "mine", "mine", [OPENIDS[:10] + OPENIDS[25:]])
    assert [(o.job, o.users, o.state) for o in overlaps] == [("other", 5, "running")]
    assert claims.overlaps(other)[0].users == 5  # and the other way round
    mine = loaded(tmp_path, "mine2", OPENIDS[15:30])  # two runs left in their ledgers
    assert [o.users for o in claims.register(mine, "mine2", InLedger(mine, 15))
            if o.job == "other"] == [5]


def test_a_run_whose_directory_is_gone_overlaps_nobody(tmp_path: Path) -> None:
    other = loaded(tmp_path, "other", OPENIDS[:10])
    claims = Claims(Registry(), "acct")
    claims.register(other, "other", InLedger(other, 10))
    (other / "ledger.sqlite").unlink()
    assert claims.register(tmp_path / "mine", "mine", [OPENIDS[:10]]) == []


def test_what_the_other_runs_still_plan_to_send(tmp_path: Path) -> None:
    registry = Registry()
    claims = Claims(registry, "acct")
    endpoint = "groups/members/batchupdate"
    claims.register(tmp_path / "other", "other", [OPENIDS[:5]], planned={endpoint: 100})
    claims.register(tmp_path / "mine", "mine", [OPENIDS[5:]], planned={endpoint: 40})
    assert claims.to_spend(tmp_path / "mine") == {endpoint: 100}
    budget = Budget(registry, "acct")  # this process (the "other" run's pid) sends 30
    budget.join()
    budget.reserve(endpoint, Report(), 10.0, spent={endpoint: 30})
    assert claims.to_spend(tmp_path / "mine") == {endpoint: 70}
    assert claims.to_spend(tmp_path / "other") == {endpoint: 10}  # 40 planned, 30 sent
    claims.release(tmp_path / "other")
    claims.release(tmp_path / "mine")
    assert claims.to_spend() == {}
    assert registry.conn.execute("SELECT count(*) FROM run_spent").fetchone()[0] == 0


def test_a_copied_registration_lets_other_processes_write_between_its_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A console's pending run copies its users' hashes in chunks, each its own write
    transaction, so the runs of other processes take their rate slots in between. No cursor
    may stay open across those transactions: its snapshot, older than their commits, made
    `BEGIN IMMEDIATE` fail at once with "database is locked" (two 1,000,000-user runs and a
    console planning a 1,000,000-row upload on one registry)."""
    registry = Registry(tmp_path / "state")
    other = Budget(Registry(tmp_path / "state"), "acct", pid=os.getppid())  # another process
    other.join()
    begin = registry.transaction
    chunks = 0

    @contextmanager
    def after_a_commit_elsewhere() -> Iterator[sqlite3.Connection]:
        nonlocal chunks
        chunks += 1
        other.reserve("groups/members/batchupdate", Report(ok=1), 100.0, want=5)
        with begin() as conn:
            yield conn

    monkeypatch.setattr(claims_module, "_COPY_ROWS", 100)
    monkeypatch.setattr(registry, "transaction", after_a_commit_elsewhere)
    users = [f"o{i:027d}" for i in range(1_000)]
    claims = Claims(registry, "acct")
    claims.register(tmp_path / "pending", "upload", iter([users[:600], users[600:]]),
                    state="pending")
    assert chunks >= 10
    assert [r.users for r in claims.runs()] == [1_000]
    found = registry.conn.execute(
        "SELECT h FROM claims_1 ORDER BY h").fetchall()
    assert [h for (h,) in found] == sorted({openid_hash(u) for u in users})
