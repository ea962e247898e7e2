"""Scenario 13: one input for several accounts of a platform (an `appid` column), read by each
account's run, and the batch's own report merged from the accounts' ledgers.

Set-up: `agency-N.csv`, N rows `appid,openid,group_name` for 20 accounts, interleaved (row i
belongs to account i % 20), and `moves-(N/20).csv`, one account's rows in a file of its own.
Each repeat, in processes of their own (`bench/agency_child.py`):

- one account's intake from the shared file: the fingerprint of its own rows, then its N/20
  rows into a ledger (what `run JOB --account APPID` does before its first call), against the
  intake of the same number of rows from a file of their own (`bench/intake_child.py`);
- the batch's files: 20 accounts' ledgers (loaded once, with their reports, outside the
  timing) merged into `report.csv` and `failed.csv` in the input's order (`write_batch`; no
  report.xlsx above the default 200,000 rows).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from bench.harness import (
    BENCH_DIR,
    DATA_DIR,
    GROUPS,
    Row,
    fresh_dir,
    median,
    moves_csv,
    openids,
    run_child,
)

if TYPE_CHECKING:  # scenarios.py imports this module to register it
    from pathlib import Path

    from bench.scenarios import Context

ACCOUNTS = 20
MB = 1024 * 1024


def appid_of(index: int) -> str:
    return f"wxauth{index:013d}"


def agency_csv(n: int) -> Path:
    """n rows for ACCOUNTS accounts, row i of account i % ACCOUNTS (cached)."""
    path = DATA_DIR / f"agency-{n}.csv"
    if not path.exists():
        lines = ["appid,openid,group_name\n"]
        lines += [f"{appid_of(i % ACCOUNTS)},{o},{GROUPS[i % len(GROUPS)]}\n"
                  for i, o in enumerate(openids(n))]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        tmp.replace(path)
    return path


def _child(*args: str) -> dict[str, float]:
    child = run_child([sys.executable, str(BENCH_DIR / "agency_child.py"), *args])
    data: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    return data


def agency(ctx: Context) -> list[Row]:
    n = ctx.sizes.agency
    share = n // ACCOUNTS
    shared, own = agency_csv(n), moves_csv(share)
    from_shared, from_own, merged = [], [], []
    for i in range(ctx.repeats):
        ctx.log(f"  agency: run {i + 1}/{ctx.repeats}")
        one = _child("intake", str(shared), str(fresh_dir(f"agency-one-{i}")), appid_of(7))
        alone = run_child([sys.executable, str(BENCH_DIR / "intake_child.py"), str(own),
                           str(fresh_dir(f"agency-alone-{i}"))])
        if one["pending"] != share:
            raise RuntimeError(f"one account's intake of {shared}: {one}")
        from_shared.append(one)
        from_own.append(json.loads(alone.stdout.strip().splitlines()[-1]))
        out = fresh_dir(f"agency-batch-{i}")
        merged.append(_child("batch", str(shared), str(out), str(ACCOUNTS)))
        if merged[-1]["rows"] != n:
            raise RuntimeError(f"the batch's report of {out}: {merged[-1]}")
    name = "13. Agency"
    shared_s = tuple(r["intake_s"] for r in from_shared)
    own_s = tuple(r["intake_s"] for r in from_own)
    return [
        Row(name, f"one account's {share:,} rows of a {n:,}-row appid file -> ledger "
                  "(fingerprint included)", shared_s, "s"),
        Row(name, f"the same {share:,} rows from a file of their own -> ledger", own_s, "s"),
        Row(name, "  of which the fingerprint of the account's own rows",
            tuple(r["fingerprint_s"] for r in from_shared), "s"),
        Row(name, f"the batch's report.csv + failed.csv, {ACCOUNTS} accounts, {n:,} rows",
            tuple(r["merge_s"] for r in merged), "s"),
        Row(name, "  peak RSS of that process (the 20 accounts loaded first, then merged)",
            tuple(r["peak_rss"] / MB for r in merged), "MB", digits=0),
        Row(name, "ratio shared / own intake", (median(shared_s) / median(own_s),), "x"),
    ]
