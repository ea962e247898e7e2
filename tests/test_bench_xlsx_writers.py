"""bench/xlsx_writers.py still runs, and xlsxfast passes its "same sheet" checks there.

Not a timed test: tiny sizes, one run; it checks the table and xlsxfast's row, never how fast any
writer was (`python bench/xlsx_writers.py` at 200,000 rows is for that). Writers that are not
installed (pyexcelerate and rustpy-xlsxwriter are not dependencies) must be listed as such.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "bench" / "xlsx_writers.py"


def test_tiny_run_prints_the_table_and_a_verdict() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--rows", "300", "--repeat", "1"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Machine: ")
    table = {cells[0]: cells for cells in (
        [c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("| "))}
    assert table["xlsxfast"][4] == "1.00x"
    assert table["xlsxfast"][-1] == "yes"  # its probes and all 300 rows read back right
    assert not any(line.startswith("- xlsxfast:") for line in lines), done.stdout
    for writer in ("pyexcelerate", "rustpy-xlsxwriter", "xlsxwriter"):
        assert table[writer][1] == "not installed" or len(table[writer]) == 10, table[writer]
    assert lines[-1].startswith("Verdict: ")


def test_bad_arguments_are_refused() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--rows", "0"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--rows and --repeat must be at least 1" in done.stderr
