"""Intake in a process of its own: loader.open_input + Ledger.load_rows, timed, peak RSS.

    python bench/intake_child.py INPUT RUN_DIR   ->  one JSON line on stdout

Runs in a fresh interpreter so the peak RSS is the intake's alone (imports included).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def main(input_path: Path, run_dir: Path) -> dict[str, float]:
    started = time.perf_counter()
    from batchmove.intake import loader
    from batchmove.ledger.store import Ledger
    from batchmove.models import JobSpec

    imported = time.perf_counter()
    spec = JobSpec(input=input_path, name="intake", out=run_dir)
    source = loader.open_input(spec)
    with Ledger(run_dir).open() as ledger:
        rows = ledger.load_rows(source.rows(), source.settle)
        pending = ledger.counts().get("pending", 0)
    finished = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"rows": rows, "pending": pending, "import_s": imported - started,
            "intake_s": finished - imported, "peak_rss": peak}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
