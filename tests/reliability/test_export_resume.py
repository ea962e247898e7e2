"""`batchmove export` SIGKILLed while listing, resumed by the same command, ends exact.

Figures: 20,000 followers in 4 groups, 200 a `user/get` page (101 pages), 3 ms latency per
call so a listing takes a few seconds; 4 SIGKILLs, each once the sandbox has answered a few
more pages. After every kill: the checkpoint directory is 700 and its files 600, no output file
exists yet. The 5th process exits 0 and writes every follower exactly once with its true group;
no page was listed from the start again (user/get calls stay within pages + a few per kill).
"""

from __future__ import annotations

import csv
import math
import stat
import time
from pathlib import Path

import pytest

from batchmove.ledger.checkpoint import checkpoint_dir
from batchmove.sandbox import SandboxConfig
from tests.support.processes import SECRET, ThreadedSandbox, spawn

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

N = 20_000
PAGE = 200
KILLS = 4


def _wait_for_pages(sb: ThreadedSandbox, pages: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while sb.state.calls["user/get"] < pages:
        assert time.monotonic() < deadline, "the export made no progress"
        time.sleep(0.01)


def test_export_killed_while_listing_resumes_exactly(tmp_path: Path) -> None:
    config = SandboxConfig(users=N, page_size=PAGE, groups=["A", "B", "C"], latency_ms=3.0,
                           secret=SECRET)
    with ThreadedSandbox(config) as sb:
        for i, openid in enumerate(sb.state.followers):
            if i % 4:
                sb.call(lambda o=openid, g=99 + i % 4: sb.state.move_directly(o, g))
        out = tmp_path / "all.csv"
        args = ("export", "--out", str(out), "--api-base", sb.base_url, "--rate", "0",
                "--concurrency", "4")
        pages = math.ceil(N / PAGE) + 1
        for kill in range(KILLS):
            child = spawn(*args, logs=tmp_path / f"logs-{kill}")
            _wait_for_pages(sb, (kill + 1) * pages // (KILLS + 1))
            child.kill()
            child.finish(timeout=30)
            cp = checkpoint_dir(out)
            assert stat.S_IMODE(cp.stat().st_mode) == 0o700
            assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in cp.iterdir())
            assert not out.exists()
        final = spawn(*args, logs=tmp_path / "logs-final").finish(timeout=300)
        assert final.returncode == 0, final.stderr[-2000:]
        assert "resuming the export" in final.stderr
        with out.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["openid"] for r in rows] == sb.state.followers
        assert {r["openid"]: int(r["current_groupid"]) for r in rows} == sb.state.members
        assert sb.state.calls["user/get"] <= pages + 3 * (KILLS + 1)
        assert not checkpoint_dir(out).exists()
        assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_segment_job_killed_while_listing_and_moving_ends_exact(tmp_path: Path) -> None:
    """A `[select] group = 100` job: SIGKILLed once mid-listing and once mid-moving; the
    third process ends exact, and no page was listed twice or after the freeze."""
    config = SandboxConfig(users=N, page_size=PAGE, groups=["A", "B"], latency_ms=3.0,
                           secret=SECRET)
    with ThreadedSandbox(config) as sb:
        for i, openid in enumerate(sb.state.followers):
            if i % 2:
                sb.call(lambda o=openid: sb.state.move_directly(o, 100))
        before = dict(sb.state.members)
        job = tmp_path / "seg.toml"
        job.write_text(f'api_base = "{sb.base_url}"\nrate = 0\nconcurrency = 4\n'
                       f'out = "run"\n[select]\ngroup = 100\nto = "B"\n', encoding="utf-8")
        args = ("run", str(job), "--yes")
        pages = math.ceil(N / PAGE) + 1
        child = spawn(*args, logs=tmp_path / "logs-0")
        _wait_for_pages(sb, pages // 2)
        child.kill()
        child.finish(timeout=30)
        assert not (tmp_path / "run" / "input.csv").exists()
        assert sb.state.members == before
        child = spawn(*args, logs=tmp_path / "logs-1")
        deadline = time.monotonic() + 120
        while sb.state.calls["groups/members/batchupdate"] < 20:
            assert time.monotonic() < deadline, "no move call was made"
            assert child.alive(), "the run ended before its 20th move call"
            time.sleep(0.01)
        child.kill()
        child.finish(timeout=30)
        listed = sb.state.calls["user/get"]
        final = spawn(*args, logs=tmp_path / "logs-2").finish(timeout=300)
        assert final.returncode == 0, final.stderr[-2000:]
        assert sb.state.calls["user/get"] == listed  # a resume never lists again
        assert listed <= pages + 4
        selected = {o for o, g in before.items() if g == 100}
        assert {o for o, g in sb.state.members.items() if g != before[o]} == selected
        assert all(sb.state.members[o] == 101 for o in selected)
