"""Scenario 13's timed parts, each in a process of its own (see bench/agency.py):

    python bench/agency_child.py intake INPUT RUN_DIR APPID   one account's rows -> ledger
    python bench/agency_child.py batch INPUT OUT ACCOUNTS      the batch's report of them all

One JSON line on stdout; times exclude imports.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any


def _spec(input_path: Path, out: Path, appid: str) -> Any:
    from batchmove.models import Credentials, JobSpec

    return JobSpec(input=input_path, name="agency", out=out, account=appid,
                   credentials=Credentials(component=True))


def intake(input_path: Path, run_dir: Path, appid: str) -> dict[str, float]:
    from batchmove.intake import loader
    from batchmove.ledger.rundir import fingerprint, load
    from batchmove.ledger.store import Ledger

    started = time.perf_counter()
    spec = _spec(input_path, run_dir, appid)
    source = loader.open_input(spec)
    digest = fingerprint(spec, source.fingerprint)  # what a run compares before it loads
    fingerprinted = time.perf_counter()
    with Ledger(run_dir).open() as ledger:
        load(ledger, source, spec, digest, lambda _: None)
        pending = ledger.counts().get("pending", 0)
    return {"pending": pending, "intake_s": time.perf_counter() - started,
            "fingerprint_s": fingerprinted - started}


def batch(input_path: Path, out: Path, accounts: int) -> dict[str, float]:
    from batchmove.intake import loader
    from batchmove.ledger.rundir import load
    from batchmove.ledger.store import Ledger
    from batchmove.output.batch import stamps, write_batch
    from batchmove.output.report import write_reports

    appids = [f"wxauth{k:013d}" for k in range(accounts)]
    before = stamps(out, appids)
    for appid in appids:  # each account's run, untimed: its ledger and its own reports
        spec = _spec(input_path, out / appid, appid)
        with Ledger(out / appid).open() as ledger:
            load(ledger, loader.open_input(spec), spec, "", lambda _: None)
            write_reports(ledger, out / appid, {"job": "agency", "exit_code": 0})
    started = time.perf_counter()
    summary = write_batch(out, [(a, 0, "done") for a in appids], 0, before,
                          xlsx_max_rows=200_000, about={})
    merge_s = time.perf_counter() - started
    rows = json.loads(summary.read_text(encoding="utf-8"))["rows"]
    return {"rows": rows, "merge_s": merge_s}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    kind, first, second, third = sys.argv[1:5]
    if kind == "intake":
        result = intake(Path(first), Path(second), third)
    else:
        result = batch(Path(first), Path(second), int(third))
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))
