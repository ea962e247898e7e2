"""bench/answers.py still runs: a tiny run prints its table, one row per answer and way.

Not a timed test: it checks the table's shape, never the figures (`python bench/answers.py` is
for those; docs/performance.md keeps them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "bench" / "answers.py"


def test_tiny_run_prints_a_row_per_answer_and_way() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--repeat", "1", "--calls", "5"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| Answer | Way | µs a call, median | Min–max | 100,000-user run |"
    ways = [[c.strip() for c in row.strip("|").split("|")][1] for row in rows[1:]]
    assert ways == ["before: orjson, dicts", "now: checked Structs", "before: orjson, dicts",
                    "now: checked Struct"]


def test_bad_arguments_are_refused() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--calls", "0"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--repeat and --calls must be at least 1" in done.stderr
