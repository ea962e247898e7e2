"""`bench/sandbox_from.py` still runs: a small export file read by a fresh process, its figures
printed. Not a timed test: the targets are for 10,000,000 followers, at full size."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("backend", ["groups", "tags"])
def test_the_sandbox_from_bench_reports_its_figures(backend: str) -> None:
    done = subprocess.run([sys.executable, "-m", "bench.sandbox_from", "--users", "3000",
                           "--backend", backend], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.splitlines()[-1]
    assert re.fullmatch(rf"{backend}: 3,000 followers loaded in [\d.]+ s, peak RSS [\d,]+ MB "
                        r"\(targets < 60 s, < 2,048 MB\): met", last), last
