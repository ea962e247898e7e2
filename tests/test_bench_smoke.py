"""The bench still runs: every scenario at tiny sizes (`--quick`), one run each.

Not a timed test: it checks that the table is printed with a row for every scenario, never how
fast anything was (that is what `python bench/run.py` at full size is for).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIO_ROWS = ("1. Intake", "2. Raw engine", "3. At the limit", "4. Versus the usual script",
                 "5. Resume", "6. Under faults", "7. Threaded peer, 20 ms",
                 "7. Threaded peer, 0 ms", "8. Export", "9. Ten million rows", "10. Console",
                 "11. Tag snapshot", "13. Hostile input")


@pytest.mark.slow  # every scenario at quick size: ~60 s, run by the full suite (CI)
def test_quick_bench_prints_a_row_for_every_scenario(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "run.py"), "--quick",
                           "--work-dir", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.startswith("Machine: ")
    assert "Python " in out.splitlines()[0]
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0] == "| Scenario | Metric | Median | Min–max | Target | Met |"
    for scenario in SCENARIO_ROWS:
        assert any(line.startswith(f"| {scenario} | ") for line in table), scenario
    assert "**NO**" not in out
    assert "| yes |" not in out


def test_unknown_scenario_is_refused() -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "run.py"), "nosuch"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown scenario" in done.stderr


def test_an_unknown_contender_is_refused() -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "bench" / "run.py"), "account",
                           "--only", "auto,nosuch"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "no contender nosuch" in done.stderr
