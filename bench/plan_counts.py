"""What `plan` pays to say how many users really move, from an exported file (issue 19).

    .venv/bin/python bench/plan_counts.py [--rows 1000000] [--repeat 3]

An export of N followers over 8 groups, 1 row in 30 edited to another group, is loaded into a
scratch ledger as `plan` loads it; then `count_from_input` (one grouped query over the rows'
`current_groupid` cells, no call) is timed against the load, and its answer checked (the
edited rows move, the others are already in place). `plan --count-moves` is not timed here:
its cost is its `user/info/batchget` calls, N / 100 of them, which the plan shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batchmove.engine.movecount import count_from_input
from batchmove.engine.resolver import Resolution
from batchmove.intake import loader
from batchmove.ledger.rundir import load
from batchmove.ledger.store import Ledger
from batchmove.models import JobSpec, Target
from batchmove.sandbox import sandbox_openids

GROUPS = 8
EDITED_EVERY = 30


def write_export(path: Path, rows: int) -> int:
    """The export as `batchmove export` writes it; returns the rows edited."""
    edited = 0
    with path.open("w", encoding="utf-8") as out:
        out.write("openid,current_groupid,current_group_name,to_group_name\n")
        for i, openid in enumerate(sandbox_openids(rows)):
            group = i % GROUPS
            target = group
            if i % EDITED_EVERY == 0:
                target, edited = (group + 1) % GROUPS, edited + 1
            out.write(f"{openid},{100 + group},G{group},G{target}\n")
    return edited


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    resolution = Resolution(resolved={f"G{g}": 100 + g for g in range(GROUPS)})
    targets = [Target(100 + g, f"G{g}") for g in range(GROUPS)]
    with tempfile.TemporaryDirectory(prefix="bench-plan-counts-") as scratch:
        path = Path(scratch) / "export.csv"
        edited = write_export(path, args.rows)
        spec = JobSpec(input=path, name="bench", api_base="sandbox")
        with Ledger(Path(scratch) / "run").open() as ledger:
            started = time.perf_counter()
            load(ledger, loader.open_input(spec), spec, "", lambda _: None)
            loaded = time.perf_counter() - started
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                count = count_from_input(ledger, spec, resolution, targets)
                times.append(time.perf_counter() - started)
                assert count is not None
                assert sum(count.moving.values()) == edited, count
                assert count.already == args.rows - edited, count
    print(f"{args.rows:,} exported rows, {edited:,} edited: load into the ledger {loaded:.2f} s; "
          f"count from current_groupid: median {statistics.median(times):.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f}, {args.repeat} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
