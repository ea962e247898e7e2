"""Scenario 9: flat memory at ten million rows, against the same commands at one million.

`batchmove plan` and `batchmove run --rate 0 --no-snapshot` (the raw engine, whose calls the
sandbox answers at once) on 1,000,000 and 10,000,000 rows, each in a process of its own whose
peak RSS comes from its wait4 rusage; and the sandbox process holding 10,000,000 followers,
whose peak RSS (VmHWM) is read from /proc once the run is over. report.xlsx is skipped at
these sizes (past `xlsx_max_rows`), report.csv and failed.csv are streamed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import (
    Child,
    Row,
    Sandbox,
    batchmove_env,
    batchmove_run,
    fresh_dir,
    median,
    moves_csv,
    run_child,
    summary_counts,
)

if TYPE_CHECKING:  # scenarios.py imports this module to register it
    from bench.scenarios import Context

MB = 1024 * 1024
RSS_LIMIT_MB = 500
SANDBOX_LIMIT_MB = 2048
CONCURRENCY = 16


def scale(ctx: Context) -> list[Row]:
    small, large = ctx.sizes.scale_small, ctx.sizes.scale_large
    walls: dict[str, list[float]] = {}
    rss: dict[str, list[float]] = {}
    for n in (small, large):
        data = moves_csv(n)
        box = ctx.sandbox(n)
        for i in range(ctx.repeats):
            ctx.log(f"  scale {n:,} rows: run {i + 1}/{ctx.repeats}")
            plan = _plan(box, data, n, i)
            out = fresh_dir(f"scale-run-{n}-{i}")
            run = batchmove_run(box, data, out, "--rate", "0", "--no-snapshot",
                                "--concurrency", str(CONCURRENCY))
            if summary_counts(out).get("moved") != n:
                raise RuntimeError(f"{out}: expected {n:,} moved, got {summary_counts(out)}")
            for key, child in ((f"plan {n}", plan), (f"run {n}", run)):
                walls.setdefault(key, []).append(child.wall)
                rss.setdefault(key, []).append(child.max_rss / MB)
        rss.setdefault(f"sandbox {n}", []).append(box.peak_rss() / MB)
    return _rows(small, large, walls, rss)


def _plan(box: Sandbox, data: Path, n: int, i: int) -> Child:
    out = fresh_dir(f"scale-plan-{n}-{i}")
    return run_child([sys.executable, "-m", "batchmove", "plan", str(data), "--api-base",
                      box.base_url, "--out", str(out), "--quiet"], env=batchmove_env())


def _rows(small: int, large: int, walls: dict[str, list[float]],
          rss: dict[str, list[float]]) -> list[Row]:
    name = "9. Ten million rows"
    rows: list[Row] = []
    for command in ("plan", "run"):
        low, high = walls[f"{command} {small}"], walls[f"{command} {large}"]
        ratio = tuple(h / median(low) for h in high)
        factor = large / small
        rows += [
            Row(name, f"`{command}` {small:,} rows: wall", tuple(low), "s"),
            Row(name, f"`{command}` {large:,} rows: wall", tuple(high), "s"),
            Row(name, f"`{command}` wall {large:,} / {small:,} rows", ratio, "x",
                f"<= {1.1 * factor:g}", median(ratio) <= 1.1 * factor, 2),
            Row(name, f"`{command}` {small:,} rows: peak RSS", tuple(rss[f"{command} {small}"]),
                "MB", digits=0),
            Row(name, f"`{command}` {large:,} rows: peak RSS", tuple(rss[f"{command} {large}"]),
                "MB", f"<= {RSS_LIMIT_MB} MB",
                median(rss[f"{command} {large}"]) <= RSS_LIMIT_MB, 0),
        ]
    sandbox = tuple(rss[f"sandbox {large}"])
    rows.append(Row(name, f"sandbox process with {large:,} followers: peak RSS", sandbox, "MB",
                    f"< {SANDBOX_LIMIT_MB} MB", median(sandbox) < SANDBOX_LIMIT_MB, 0))
    return rows
