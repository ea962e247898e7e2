"""Scenario 11: the tags backend's snapshot from tag member lists against `user/info/batchget`.

Set-up: one `--no-snapshot` run on the tags backend gives every follower one of 8 tags
(12,500 each at 100,000 users). Then each repeat runs the same job twice, back to back on the
same sandbox process: `snapshot_source = "members"` (`user/tag/get`, 10,000 a page: 8 tags x
(2 pages + the empty last one), and 1 call each for the reserved tags 1 and 2 = 26 calls) and
`snapshot_source = "batchget"` (100 users a call: 1,000 calls), each with `untag = "others"` so
every user keeps exactly one tag and the counts stay the same from run to run, at `--rate 0
--concurrency 16` and 20 ms latency. Run k sends user i to tag (i + k) % 8, so every user moves.
The snapshot phase is read from the sandbox's timeline: first to last snapshot call's arrival,
plus one latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING

from bench.harness import (
    Child,
    Row,
    arrivals,
    batchmove_run,
    fresh_dir,
    median,
    moves_csv,
    since,
    summary_counts,
)

if TYPE_CHECKING:  # scenarios.py imports this module to register it
    from bench.harness import Sandbox
    from bench.scenarios import Context

TAGS = 8
CONCURRENCY = 16
LATENCY_MS = 20.0
SOURCES = {"members": "user/tag/get", "batchget": "user/info/batchget"}
MB = 1024 * 1024
_QUOTAS = {"tags/members/batchtagging": 10**9, "tags/members/batchuntagging": 10**9,
           "user/tag/get": 10**6, "tags/get": 10**6, "tags/create": 10**6}


@dataclass(frozen=True)
class Run:
    child: Child
    calls: int  # snapshot calls
    phase: float  # first to last snapshot call, + latency
    first_move: float  # process start -> first (un)tagging call: everything before the moves


def tag_snapshot(ctx: Context) -> list[Row]:
    n = ctx.sizes.tagsnap
    box = ctx.sandbox(n)
    box.set_faults(daily_quota=_QUOTAS)
    ctx.log(f"  tag snapshot: giving {n:,} followers one of {TAGS} tags")
    setup = fresh_dir("tagsnap-setup")
    batchmove_run(box, moves_csv(n, TAGS, 0), setup, "--backend", "tags", "--no-snapshot",
                  "--create-groups", "--rate", "0", "--concurrency", str(CONCURRENCY))
    box.set_faults(latency_ms=LATENCY_MS)
    turn = count(1)
    runs: dict[str, list[Run]] = {s: [] for s in SOURCES}
    for i in range(ctx.repeats):
        ctx.log(f"  tag snapshot: run {i + 1}/{ctx.repeats}")
        for source in SOURCES:
            runs[source].append(_one(box, n, source, next(turn) % TAGS, i))
    box.set_faults(latency_ms=0)
    return _rows(n, runs)


def _one(box: Sandbox, n: int, source: str, shift: int, i: int) -> Run:
    """One run: the process, its snapshot calls and its snapshot phase in seconds."""
    data = moves_csv(n, TAGS, shift)
    job = data.parent / f"tagsnap-{n}-{source}-{shift}.toml"  # DATA_DIR as `--work-dir` set it
    job.write_text(f'input = "{data}"\nbackend = "tags"\n'
                   f'untag = "others"\nsnapshot_source = "{source}"\n', encoding="utf-8")
    out = fresh_dir(f"tagsnap-{source}-{i}")
    mark = len(box.timeline())
    child = batchmove_run(box, job, out, "--rate", "0", "--concurrency", str(CONCURRENCY))
    counts = summary_counts(out)
    if counts.get("moved", 0) != n:
        raise RuntimeError(f"{out}: expected {n} moved, got {counts}")
    timeline = since(box, mark)
    snap = arrivals(timeline, SOURCES[source])
    phase = snap[-1] - snap[0] + LATENCY_MS / 1000 if snap else 0.0
    moves = arrivals(timeline, "tags/members/batchuntagging") + arrivals(
        timeline, "tags/members/batchtagging")
    return Run(child, len(snap), phase, min(moves) - box.clock(child.started))


def _rows(n: int, runs: dict[str, list[Run]]) -> list[Row]:
    name = "11. Tag snapshot"
    members, batchget = runs["members"], runs["batchget"]
    rows = [Row(name, f"{n:,} users, {TAGS} tags, {LATENCY_MS:g} ms, concurrency {CONCURRENCY}, "
                      f"--rate 0: snapshot calls, {label}", tuple(float(r.calls) for r in rs),
                digits=0)
            for label, rs in (("user/tag/get", members), ("user/info/batchget", batchget))]
    fewer = tuple(float(b.calls - m.calls) for m, b in zip(members, batchget, strict=True))
    rows.append(Row(name, "calls saved by the member lists", fewer, "", "> 0",
                    median(fewer) > 0, 0))
    for label, rs in (("user/tag/get", members), ("user/info/batchget", batchget)):
        rows += [
            Row(name, f"{label}: snapshot calls, first to last answer", tuple(r.phase for r in rs),
                "s", digits=3),
            Row(name, f"{label}: process start -> first move call (load, resolve, snapshot)",
                tuple(r.first_move for r in rs), "s"),
            Row(name, f"{label}: wall (whole process)", tuple(r.child.wall for r in rs), "s"),
            Row(name, f"{label}: CPU (user+sys) of the process", tuple(r.child.cpu for r in rs),
                "s"),
            Row(name, f"{label}: peak RSS", tuple(r.child.max_rss / MB for r in rs), "MB",
                digits=0),
        ]
    return rows
