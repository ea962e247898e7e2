"""The Quickstart's sample jobs, on both backends: through the CLI on the embedded sandbox, and
in-process against a sandbox set up like the job's [sandbox] table, checking the final state."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from batchmove.intake.jobfile import spec_for
from batchmove.sandbox import SandboxConfig
from tests.support.engine import report_rows, run, user_state
from tests.support.sandboxes import REPO_ROOT, SandboxFactory

SAMPLES = {"groups": REPO_ROOT / "jobs" / "sample.toml",
           "tags": REPO_ROOT / "jobs" / "sample-tags.toml"}
EXPECTED = {"moved": 52, "failed": 1, "invalid": 6, "duplicate": 1, "already": 0, "unknown": 0,
            "pending": 0}


@pytest.mark.parametrize("backend", sorted(SAMPLES))
def test_sample_job_runs_end_to_end_on_the_embedded_sandbox(tmp_path: Path, state_dir: Path,
                                                           backend: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "batchmove", "run", str(SAMPLES[backend]), "--yes", "--quiet",
         "--out", str(tmp_path / "run")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr  # the sample's deliberately bad rows
    assert done.stderr.startswith("finished with row failures (52 moved, 1 failed")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["counts"] == EXPECTED
    assert sorted(g["name"] for g in summary["groups_created"]) == ["NA", "新注册", "沉睡用户"]
    # the embedded sandbox's account is forgotten: nothing of it is left in the registry
    assert list((state_dir / "locks").iterdir()) == []
    with sqlite3.connect(state_dir / "registry.sqlite") as conn:
        for table in ("tokens", "buckets", "leases", "runs", "run_spent", "spent"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
    conn.close()


@pytest.mark.parametrize("backend", sorted(SAMPLES))
async def test_sample_job_final_state(tmp_path: Path, sandbox_factory: SandboxFactory,
                                      monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    spec = spec_for(SAMPLES[backend])
    names = list(spec.sandbox.get("groups", spec.sandbox.get("tags", [])))
    sb = await sandbox_factory(SandboxConfig(users_file=spec.sandbox["users_file"],
                                             groups=names, tags=names))
    monkeypatch.setenv("WECHAT_APPID", sb.state.appid)
    monkeypatch.setenv("WECHAT_APPSECRET", sb.state.secret)
    result = await run(spec.with_overrides(api_base=sb.base_url, out=tmp_path / "run"))
    assert result.exit_code == 1
    listing = (sb.state.tags.listing() if backend == "tags" else
               [{"id": g.id, "name": g.name} for g in sb.state.groups.values()])
    ids = {t["name"]: t["id"] for t in listing}
    assert len(ids) == len(listing)  # no name twice
    state = user_state(sb, backend)
    for row in report_rows(tmp_path / "run"):
        if row["status"] != "moved":
            continue
        target = ids[row["目标分组"]]
        have = state[row["用户openid"]]
        assert target in have if backend == "tags" else have == target, row
