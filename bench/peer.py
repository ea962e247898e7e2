"""Scenario 7: batchmove against the threaded script, and where batchmove's time goes.

Every repeat runs the three contenders back to back on the same sandbox process, so a busy
machine slows all three alike: the peer (`threaded_script.py`, 16 threads, lists of 50),
batchmove with its defaults (snapshot, ledger, reports) and batchmove `--no-snapshot`, each at
`--rate 0 --concurrency 16`. Each run moves every user: run k sends user i to group
(i + k) % 8, so no run finds its users already where it wants them.

The phase breakdown is read from the sandbox's timeline (arrival times, on our clock after
`Sandbox.calibrate`) and the process's own start and exit: a phase runs from its first call's
arrival to its last call's answer (arrival + latency); its bound is calls x latency /
concurrency, what 16 calls always in flight would take.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import TYPE_CHECKING

from bench.harness import (
    BENCH_DIR,
    MOVE_ENDPOINT,
    Child,
    Row,
    Sandbox,
    arrivals,
    batchmove_run,
    fresh_dir,
    median,
    moves_csv,
    run_child,
    since,
    summary_counts,
)

if TYPE_CHECKING:  # scenarios.py imports this module to register it
    from bench.scenarios import Context

GROUPS = 8
CONCURRENCY = 16
LATENCIES = (20.0, 0.0)
SNAPSHOT_ENDPOINT = "user/info/batchget"
CONTENDERS = ("script", "defaults", "no-snapshot")


@dataclass(frozen=True)
class Timing:
    """One contender's run, seen from the sandbox: phases in seconds."""

    wall: float
    cpu: float  # user + sys of the process
    calls: int
    first_call: float  # process start -> first API call's arrival
    snapshot: float  # first to last snapshot call (+ latency); 0 without one
    snapshot_calls: int
    gap: float  # last snapshot answer -> first move arrival (negative: overlapped)
    moving: float  # first to last move call (+ latency)
    move_calls: int
    calls_phase: float  # first snapshot-or-move call to the last move's answer
    tail: float  # last move's arrival -> process exit


def measure(box: Sandbox, child: Child, mark: int, latency_s: float) -> Timing:
    timeline = since(box, mark)
    start = box.clock(child.started)
    everything = arrivals(timeline)
    snap = arrivals(timeline, SNAPSHOT_ENDPOINT)
    moves = arrivals(timeline, MOVE_ENDPOINT)
    if not moves:
        raise RuntimeError(f"{child.argv[:4]}: no move call arrived")
    work = sorted(snap + moves)
    return Timing(
        wall=child.wall, cpu=child.cpu, calls=len(everything), first_call=everything[0] - start,
        snapshot=(snap[-1] + latency_s - snap[0]) if snap else 0.0, snapshot_calls=len(snap),
        gap=(moves[0] - (snap[-1] + latency_s)) if snap else 0.0,
        moving=moves[-1] + latency_s - moves[0], move_calls=len(moves),
        calls_phase=moves[-1] + latency_s - work[0],
        tail=start + child.wall - moves[-1])


def threaded(ctx: Context) -> list[Row]:
    """Both latencies, each with its own rows."""
    n = ctx.sizes.threaded
    box = ctx.sandbox(n)
    turn = count(1)
    rows: list[Row] = []
    for latency in LATENCIES:
        box.set_faults(latency_ms=latency)
        runs: dict[str, list[Timing]] = {c: [] for c in CONTENDERS}
        for i in range(ctx.repeats):
            ctx.log(f"  threaded at {latency:g} ms: run {i + 1}/{ctx.repeats}")
            for contender in CONTENDERS:
                data = moves_csv(n, GROUPS, next(turn) % GROUPS)
                runs[contender].append(_one(box, contender, data, n, latency / 1000, i))
        rows += _rows(n, latency, runs)
    return rows


def _one(box: Sandbox, contender: str, data: Path, n: int, latency_s: float,
         i: int) -> Timing:
    mark = len(box.timeline())
    if contender == "script":
        child = run_child([sys.executable, str(BENCH_DIR / "threaded_script.py"), box.base_url,
                           str(data), str(CONCURRENCY)])
        if child.stdout.strip() != str(n):
            raise RuntimeError(f"the threaded script moved {child.stdout.strip()} of {n}")
    else:
        out = fresh_dir(f"threaded-{contender}-{latency_s * 1000:g}-{i}")
        extra = ["--no-snapshot"] if contender == "no-snapshot" else []
        child = batchmove_run(box, data, out, "--rate", "0", "--concurrency",
                              str(CONCURRENCY), *extra)
        counts = summary_counts(out)
        if counts.get("moved", 0) + counts.get("already", 0) != n:
            raise RuntimeError(f"{out}: expected {n} moved or already, got {counts}")
    return measure(box, child, mark, latency_s)


def _rows(n: int, latency: float, runs: dict[str, list[Timing]]) -> list[Row]:
    name = f"7. Threaded peer, {latency:g} ms"
    script, full, bare = runs["script"], runs["defaults"], runs["no-snapshot"]
    c = CONCURRENCY

    def of(timings: Sequence[Timing], key: Callable[[Timing], float]) -> tuple[float, ...]:
        return tuple(key(t) for t in timings)

    def ratio(top: Sequence[Timing], bottom: Sequence[Timing]) -> tuple[float, ...]:
        return tuple(a.wall / b.wall for a, b in zip(top, bottom, strict=True))

    faster, faster_bare = ratio(script, full), ratio(script, bare)
    rows = [
        Row(name, f"{n:,} users, {GROUPS} groups, concurrency {c}: threaded script wall",
            of(script, lambda t: t.wall), "s"),
        Row(name, "batchmove --rate 0 (defaults: snapshot, ledger, reports): wall",
            of(full, lambda t: t.wall), "s"),
        Row(name, "batchmove --rate 0 --no-snapshot: wall", of(bare, lambda t: t.wall), "s"),
        Row(name, "script wall / batchmove defaults wall", faster, "x", ">= 1.0",
            median(faster) >= 1.0, 2),
        Row(name, "script wall / batchmove --no-snapshot wall", faster_bare, "x", ">= 1.5",
            median(faster_bare) >= 1.5, 2),
    ]
    contenders = (("script", script), ("defaults", full), ("--no-snapshot", bare))
    rows += [Row(name, f"{label}: API calls, all endpoints", of(timings, lambda t: t.calls),
                 digits=0) for label, timings in contenders]
    rows += [Row(name, f"{label}: CPU (user+sys) of the process", of(timings, lambda t: t.cpu),
                 "s") for label, timings in contenders]
    for label, timings in (("defaults", full), ("--no-snapshot", bare), ("script", script)):
        rows += _phases(name, label, timings, latency / 1000, c)
    return rows


def _phases(name: str, label: str, runs: Sequence[Timing], latency_s: float,
            c: int) -> list[Row]:
    def of(key: Callable[[Timing], float]) -> tuple[float, ...]:
        return tuple(key(t) for t in runs)

    overlapped = runs[0].snapshot_calls and median(of(lambda t: t.gap)) < 0

    def share(what: str, phase: Callable[[Timing], float],
              calls: Callable[[Timing], int]) -> Row | None:
        if not latency_s or not phase(runs[0]):
            return None
        values = of(lambda t: calls(t) * latency_s / c / phase(t) if phase(t) else math.nan)
        metric = f"{label}: {what}: bound / measured (bound = calls x latency / {c})"
        if label == "script" or (overlapped and what != "together"):
            # overlapped, each phase spans the other's calls: only the two together have a bound
            return Row(name, metric, values, digits=2)
        return Row(name, metric, values, "", ">= 0.90", median(values) >= 0.9, 2)

    first = of(lambda t: t.first_call)
    tail = of(lambda t: t.tail)
    rows: list[Row | None] = [Row(name, f"{label}: process start -> first API call", first, "s",
                *(("<= 1.0 s", median(first) <= 1.0) if label != "script" else ()))]
    if runs[0].snapshot_calls:
        rows.append(Row(name, f"{label}: snapshot phase ({runs[0].snapshot_calls:,} calls)",
                        of(lambda t: t.snapshot), "s"))
        rows.append(share("snapshot", lambda t: t.snapshot, lambda t: t.snapshot_calls))
        rows.append(Row(name, f"{label}: last snapshot answer -> first move (< 0: overlapped)",
                        of(lambda t: t.gap), "s"))
    rows.append(Row(name, f"{label}: move phase ({runs[0].move_calls:,} calls)",
                    of(lambda t: t.moving), "s"))
    rows.append(share("moves", lambda t: t.moving, lambda t: t.move_calls))
    if runs[0].snapshot_calls:
        rows.append(Row(name, f"{label}: snapshot and moves together",
                        of(lambda t: t.calls_phase), "s"))
        rows.append(share("together", lambda t: t.calls_phase,
                          lambda t: t.snapshot_calls + t.move_calls))
    rows.append(Row(name, f"{label}: last move call -> process exit", tail, "s",
                    *(("<= 0.5 s", median(tail) <= 0.5) if label != "script" else ())))
    return [row for row in rows if row is not None]
