"""Rollback stays exact when runs are killed while the snapshot and the moves overlap.

Figures: 6,000 followers spread over 6 groups before the run (their "original" groups), an
input that sends each to another group (a few to the group they are in); 15 ms latency,
concurrency 4. The run is SIGKILLed 4 times, each time once both `user/info/batchget` and
`groups/members/batchupdate` calls have arrived since it started (the overlapped phase), and
resumed; after every kill `batchmove rollback` must list every user the sandbox has moved so
far, with their original group. The 5th process finishes; then rollback.csv, run as an input
of its own, must put every follower back exactly where they were. About 30 s on 2 cores.
"""

from __future__ import annotations

import csv
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.processes import SECRET, Running, ThreadedSandbox, batchmove, spawn, write_csv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEED = 31
N = 6_000
GROUPS = [f"原{i}" for i in range(6)]
KILLS = 4
READ, MOVE = "user/info/batchget", "groups/members/batchupdate"


def _rollback_groups(run_dir: Path, logs: Path) -> dict[str, int]:
    child = batchmove("rollback", str(run_dir), logs=logs)
    assert child.returncode == 0, child.stderr[-2000:]
    with (run_dir / "rollback.csv").open(encoding="utf-8-sig", newline="") as f:
        return {r["openid"]: int(r["to_groupid"]) for r in csv.DictReader(f)}


def _kill_when_overlapped(running: Running, sandbox: ThreadedSandbox, before: Counter[str],
                          rng: random.Random) -> Counter[str]:
    deadline = time.monotonic() + 120
    while running.alive() and time.monotonic() < deadline:
        delta = Counter(sandbox.state.calls) - before
        if delta[READ] and delta[MOVE]:
            time.sleep(rng.uniform(0, 0.05))
            running.kill()
            break
        time.sleep(0.002)
    child = running.finish()
    assert child.returncode == -9, (child.returncode, child.stderr[-2000:])
    return Counter(sandbox.state.calls) - before


def test_killed_during_overlap_rollback_restores_every_moved_user(tmp_path: Path) -> None:
    followers = sandbox_openids(N, SEED)
    config = SandboxConfig(users=N, seed=SEED, secret=SECRET, groups=tuple(GROUPS))
    rng = random.Random(SEED)
    with ThreadedSandbox(config) as sandbox:
        ids = {g.name: g.id for g in sandbox.state.groups.values()}
        original = {o: ids[GROUPS[rng.randrange(6)]] for o in followers}
        sandbox.call(lambda: [sandbox.state.move_directly(o, g) for o, g in original.items()])
        wanted = [(o, GROUPS[rng.randrange(6)]) for o in followers]
        data = write_csv(tmp_path / "in.csv", ["openid", "group_name"], wanted)
        sandbox.set_faults(latency_ms=15)
        run_dir = tmp_path / "run"
        args = ("run", str(data), "--api-base", sandbox.base_url, "--out", str(run_dir),
                "--yes", "--rate", "0", "--concurrency", "4")
        for kill in range(KILLS):
            before = Counter(sandbox.state.calls)
            delta = _kill_when_overlapped(spawn(*args, logs=tmp_path / "logs"), sandbox,
                                          before, rng)
            assert delta[READ], f"kill {kill + 1} missed the overlap: {delta}"
            assert delta[MOVE], f"kill {kill + 1} missed the overlap: {delta}"
            time.sleep(0.1)  # calls already in the sandbox land
            moved = set(sandbox.state.move_log)
            back = _rollback_groups(run_dir, tmp_path / "logs")
            missing = [o for o in moved if back.get(o) != original[o]]
            assert not missing, f"kill {kill + 1}: {len(missing)} moved users not restorable"
        final = spawn(*args, logs=tmp_path / "logs").finish(300)
        assert final.returncode == 0, final.stderr[-2000:]
        assert all(sandbox.state.members[o] == ids[g] for o, g in wanted)
        back = _rollback_groups(run_dir, tmp_path / "logs")
        assert {o for o, g in wanted if ids[g] != original[o]} <= set(back)
        undo = batchmove("run", str(run_dir / "rollback.csv"), "--api-base", sandbox.base_url,
                         "--out", str(tmp_path / "undo"), "--yes", "--rate", "0",
                         logs=tmp_path / "logs")
        assert undo.returncode == 0, undo.stderr[-2000:]
        wrong = [o for o in followers if sandbox.state.members[o] != original[o]]
        assert not wrong, f"{len(wrong)} users not back in their original group"
