"""The Airflow example of docs/scheduling.md, run by Airflow itself (marked slow).

apache-airflow (AIRFLOW below) goes into a venv of its own, with batchmove's dependencies
(batchmove itself comes from this checkout through PYTHONPATH); the venv is cached under
`.cache/` (gitignored; `BATCHMOVE_TEST_CACHE` moves it) and rebuilt when the Airflow version or
batchmove's dependencies change. Then `airflow db migrate` on SQLite and `dag.test()` on
docs/examples/batchmove_dag.py itself (tests/support/airflow_driver.py), against a sandbox
platform with 3 accounts of 200 users, the second allowed one move call today:

- one mapped `move` task per account, from the `accounts` task (`sync_accounts`), in the
  `batchmove` pool;
- the second account stops on its quota (exit 3): its task is marked for retry while the
  others finish; its retry (2 s later here) runs from another working directory, after the
  quota was lifted, and resumes the same run directory: every user moved exactly once;
- every run directory is under BATCHMOVE_RUNS_DIR, none under either working directory.
Measured here (2 cores, shared): 78 s cold (the venv built: pip from the package index),
18 s warm (provisional).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from batchmove.sandbox import PlatformConfig, authorizer_appid, sandbox_openids
from batchmove.sandbox.platform import DEFAULT_COMPONENT_APPID, DEFAULT_COMPONENT_SECRET
from tests.support.processes import ThreadedSandbox, write_csv
from tests.support.sandboxes import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

AIRFLOW = "3.3.2"
USERS = 200


def airflow_venv() -> Path:
    """The cached venv with Airflow and batchmove's dependencies (built when missing)."""
    cache = Path(os.environ.get("BATCHMOVE_TEST_CACHE", REPO_ROOT / ".cache"))
    venv = cache / f"airflow-{AIRFLOW}"
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = json.dumps({"airflow": AIRFLOW, "dependencies": deps})
    marker = venv / "batchmove-test.json"
    if marker.exists() and marker.read_text() == wanted and (venv / "bin" / "airflow").exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"apache-airflow=={AIRFLOW}",
                    *deps], check=True, timeout=1200)
    marker.write_text(wanted)
    return venv


def test_the_example_dag_under_airflow(tmp_path: Path) -> None:
    venv = airflow_venv()
    config = PlatformConfig(authorizers=3, account={"users": USERS, "groups": ["A", "B"]})
    appids = [authorizer_appid(i) for i in range(3)]
    stopped = appids[1]
    volume, first_cwd, second_cwd = tmp_path / "volume", tmp_path / "w1", tmp_path / "w2"
    for folder in (first_cwd, second_cwd, tmp_path / "jobs"):
        folder.mkdir()
    rows = [(appid, openid, "AB"[n % 2]) for i, appid in enumerate(appids)
            for n, openid in enumerate(sandbox_openids(USERS, i))]
    write_csv(tmp_path / "jobs" / "in.csv", ["appid", "openid", "to_group_name"], rows)
    with ThreadedSandbox(platform=config) as sb:
        platform = sb.sb.platform if sb.sb else None
        assert platform is not None
        sb.call(lambda: platform.accounts[stopped].state.set_faults(
            daily_quota={"groups/members/batchupdate": 1}))
        (tmp_path / "jobs" / "ticket").write_text(platform.latest_ticket)
        job = tmp_path / "jobs" / "agency.toml"
        job.write_text(f'input = "in.csv"\napi_base = "{sb.base_url}"\naccounts = "all"\n'
                       '[credentials]\ncomponent = true\nticket_file = "ticket"\n')
        env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
               "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "docs" / "examples"),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "PYTHONPATH": str(REPO_ROOT),
               "BATCHMOVE_AGENCY_JOB": str(job), "BATCHMOVE_RETRY_DELAY_S": "2",
               "BATCHMOVE_RUNS_DIR": str(volume / "runs"),
               "BATCHMOVE_STATE_DIR": str(volume / "state"),
               "WECHAT_COMPONENT_APPID": DEFAULT_COMPONENT_APPID,
               "WECHAT_COMPONENT_SECRET": DEFAULT_COMPONENT_SECRET,
               "SANDBOX_URL": sb.base_url, "STOP_APPID": stopped, "SECOND_CWD": str(second_cwd),
               "STOP_SUMMARY": str(volume / "runs" / "agency" / stopped / "summary.json")}
        env.pop("VIRTUAL_ENV", None)
        migrated = subprocess.run([str(venv / "bin" / "airflow"), "db", "migrate"], env=env,
                                  cwd=first_cwd, capture_output=True, text=True, timeout=600)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        done = subprocess.run([str(venv / "bin" / "python"),
                               str(REPO_ROOT / "tests" / "support" / "airflow_driver.py")],
                              env=env, cwd=first_cwd, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-5000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        for index, appid in enumerate(appids):
            state = platform.accounts[appid].state
            names = {g.id: g.name for g in state.groups.values()}
            assert [names[state.members[o]] for o in state.followers] == [
                "AB"[n % 2] for n in range(USERS)], appid
            assert len(state.move_log) == len(set(state.move_log)) == USERS, appid
            assert (volume / "runs" / "agency" / appid / "ledger.sqlite").exists(), index
    assert result["state"] == "success", result
    moves = sorted((t for t in result["tis"] if t["task_id"] == "move"),
                   key=lambda t: t["map_index"])
    assert [(t["state"], t["try_number"], t["pool"]) for t in moves] == [
        ("success", 1, "batchmove"), ("success", 2, "batchmove"), ("success", 1, "batchmove")]
    assert result["cwd"] == str(second_cwd)  # the retry ran from the second directory
    assert not (first_cwd / "runs").exists()
    assert not (second_cwd / "runs").exists()
    summary = json.loads((volume / "runs" / "agency" / stopped / "summary.json").read_text())
    assert (summary["exit_code"], summary["counts"]["moved"]) == (0, USERS)
