"""Scenario "account": runs against an account that pushes back (issue 20's targets).

The sandbox, in its own process, allows 500 move calls per 5 s window (100/s; 45011 beyond it)
with a lognormal latency of median 30 ms (p99 10x). 100,000 users, 8 target groups; the bound
is move calls / allowed rate = 2,000 / 100 = 20 s. Side by side, each repeat:

- batchmove with its defaults (`rate = "auto"`, snapshot on), the limit reported by quota/get,
  then hidden; the threaded 16-thread script (no retries: the lists answered 45011 are lost);
  batchmove at yesterday's default `--rate 20` (first repeat only: ~2.5 minutes a run);
- two runs at once on the account (two CLI processes, then `run A.toml B.toml --parallel 2`),
  50,000 users each, a fresh registry: combined move calls in any 1 s window, token fetches,
  both exact.

Each run gets the state directory `RUNS_DIR/state-*` (never the user's own registry).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench import harness
from bench.harness import (
    BENCH_DIR,
    MOVE_ENDPOINT,
    Child,
    Row,
    Sandbox,
    arrivals,
    batchmove_env,
    fresh_dir,
    max_in_window,
    median,
    moves_csv,
    run_child,
    since,
    summary_counts,
)

if TYPE_CHECKING:
    from bench.scenarios import Context

GROUPS = 8
WINDOW = (500, 5.0)
LIMIT = WINDOW[0] / WINDOW[1]
CONTENDERS = ("auto", "hidden", "script", "rate20")  # `bench/run.py account --only auto,...`
PAIRS = ("cli", "parallel")
PUSHBACK = {"latency_ms": 30.0, "latency_tail": 10.0, "jitter_ms": 0.0,
            "rate_limit": {MOVE_ENDPOINT: list(WINDOW)}}


@dataclass(frozen=True)
class Outcome:
    wall: float
    moving: float  # first to last move call arrival
    lost: int  # rows not moved
    window: int  # most move calls in any 1 s window
    tokens: int  # token fetches that reached the sandbox
    start: float = 0.0  # process start to the first move call's arrival
    end: float = 0.0  # the last move call's arrival to the process's exit


def _state_env(name: str) -> dict[str, str]:
    return {**batchmove_env(), "BATCHMOVE_STATE_DIR": str(fresh_dir(f"state-{name}"))}


def _measure(box: Sandbox, mark: int, child: Child, lost: int) -> Outcome:
    timeline = since(box, mark)
    moves = arrivals(timeline, MOVE_ENDPOINT)
    tokens = sum(e in ("token", "stable_token") for _, e in timeline)
    if not moves:
        return Outcome(child.wall, 0.0, lost, 0, tokens)
    started = box.clock(child.started)  # where the time goes: start, moves, end
    return Outcome(child.wall, moves[-1] - moves[0], lost, max_in_window(moves), tokens,
                   moves[0] - started, started + child.wall - moves[-1])


def _batchmove(box: Sandbox, data: Path, name: str, n: int, *options: str) -> Outcome:
    out = fresh_dir(name)
    mark = len(box.timeline())
    argv = [sys.executable, "-m", "batchmove", "run", str(data), "--api-base", box.base_url,
            "--yes", "--quiet", "--out", str(out), *options]
    child = run_child(argv, env=_state_env(name), check=True)
    counts = summary_counts(out)
    return _measure(box, mark, child, n - counts.get("moved", 0) - counts.get("already", 0))


def _script(box: Sandbox, data: Path, n: int) -> Outcome:
    mark = len(box.timeline())
    child = run_child([sys.executable, str(BENCH_DIR / "threaded_script.py"), box.base_url,
                       str(data), "16", "keep-going"])
    return _measure(box, mark, child, n - int(child.stdout.strip() or 0))


def _pair(box: Sandbox, n: int, i: int, parallel: bool) -> tuple[Outcome, bool]:
    """Two runs on the account at once, n // 2 users each: (outcome, both exact)."""
    # groups shifted unlike the run just before (auto: 3 + i, hidden: 6 + i, mod 8), even
    # with `--only` leaving runs out: users already in their target would not move
    halves = [_half(n, k, 7 + 2 * i + parallel) for k in range(2)]
    name = f"pair-{'parallel' if parallel else 'cli'}-{i}"
    outs = [fresh_dir(f"{name}-{k}") for k in range(2)]
    env = _state_env(name)
    mark = len(box.timeline())
    if parallel:
        jobs = []
        for k, (data, out) in enumerate(zip(halves, outs, strict=True)):
            job = out.parent / f"{name}-{k}.toml"
            job.write_text(f'input = "{data}"\nout = "{out}"\napi_base = "{box.base_url}"\n',
                           encoding="utf-8")
            jobs.append(str(job))
        child = run_child([sys.executable, "-m", "batchmove", "run", *jobs, "--parallel", "2",
                           "--yes"], env=env)
    else:
        child = _two_processes(box, halves, outs, env)
    lost = sum(n // 2 - summary_counts(out).get("moved", 0) for out in outs)
    return _measure(box, mark, child, lost), lost == 0


def _two_processes(box: Sandbox, halves: Sequence[Path], outs: Sequence[Path],
                   env: dict[str, str]) -> Child:
    """Two `batchmove run` processes started together, timed as one."""
    script = ("import subprocess, sys\n"
              "procs = [subprocess.Popen(a) for a in (sys.argv[1:11], sys.argv[11:])]\n"
              "sys.exit(max(p.wait() for p in procs))\n")
    argv = [sys.executable, "-c", script]
    for data, out in zip(halves, outs, strict=True):
        argv += [sys.executable, "-m", "batchmove", "run", str(data), "--api-base",
                 box.base_url, "--yes", "--out", str(out)]
    assert len(argv) == 3 + 2 * 10
    return run_child(argv, env=env)


def account(ctx: Context) -> list[Row]:
    unknown = ctx.only - {*CONTENDERS, *PAIRS}
    if unknown:
        raise ValueError(f"--only: no contender {', '.join(sorted(unknown))} in account "
                         f"(choose from {', '.join((*CONTENDERS, *PAIRS))})")
    n = ctx.sizes.threaded
    box = ctx.sandbox(n)
    box.set_faults(**PUSHBACK)
    runs: dict[str, list[Outcome]] = {k: [] for k in CONTENDERS}
    pairs: dict[str, list[tuple[Outcome, bool]]] = {k: [] for k in PAIRS}
    load: list[float] = []
    try:
        for i in range(ctx.repeats):
            ctx.log(f"  account: run {i + 1}/{ctx.repeats}")
            load.append(os.getloadavg()[0])  # a shared machine: say how busy it was
            box.set_faults(rate_limit_hidden=False)
            if ctx.wants("auto"):
                runs["auto"].append(_batchmove(box, moves_csv(n, GROUPS, 3 + i),
                                               f"account-auto-{i}", n))
            if ctx.wants("script"):
                runs["script"].append(_script(box, moves_csv(n, GROUPS, 4 + i), n))
            if ctx.wants("rate20") and i == 0 and ctx.sizes.threaded >= 100_000:
                runs["rate20"].append(_batchmove(box, moves_csv(n, GROUPS, 5), "rate20", n,
                                                 "--rate", "20"))
            if ctx.wants("hidden"):
                box.set_faults(rate_limit_hidden=True)
                runs["hidden"].append(_batchmove(box, moves_csv(n, GROUPS, 6 + i),
                                                 f"account-hidden-{i}", n))
                box.set_faults(rate_limit_hidden=False)
            for kind in pairs:
                if ctx.wants(kind):
                    pairs[kind].append(_pair(box, n, i, kind == "parallel"))
    finally:
        box.set_faults(rate_limit={}, rate_limit_hidden=False, latency_tail=0.0)
    return _rows(n, runs, pairs, load)


def _rows(n: int, runs: dict[str, list[Outcome]],
          pairs: dict[str, list[tuple[Outcome, bool]]], load: Sequence[float]) -> list[Row]:
    name = "12. One account"
    bound = move_calls_of(n) / LIMIT

    def of(values: Sequence[Outcome], key: Callable[[Outcome], float]) -> tuple[float, ...]:
        return tuple(key(v) for v in values)

    auto, hidden = runs["auto"], runs["hidden"]
    ratio_auto = of(auto, lambda o: o.wall / bound)
    ratio_hidden = of(hidden, lambda o: o.wall / bound)
    rows = [
        Row(name, "load average (1 min) as each repeat began", tuple(load), digits=1),
        Row(name, f"{n:,} users, {GROUPS} groups, 500 moves / 5 s, 30 ms lognormal: bound = "
                  f"{move_calls_of(n):,} calls / {LIMIT:g}", (bound,), "s"),
        Row(name, 'defaults (rate = "auto", snapshot), limit reported: wall / bound',
            ratio_auto, "x", "<= 1.10", median(ratio_auto) <= 1.10, 3),
        *_breakdown(name, auto, bound),
        Row(name, "  rows lost", of(auto, lambda o: o.lost), target="0",
            met=all(o.lost == 0 for o in auto), digits=0),
        Row(name, "defaults, limit hidden: wall / bound", ratio_hidden, "x", "<= 1.25",
            median(ratio_hidden) <= 1.25, 3),
        *_breakdown(name, hidden, bound),
        Row(name, "  rows lost", of(hidden, lambda o: o.lost), target="0",
            met=all(o.lost == 0 for o in hidden), digits=0),
        Row(name, "threaded script (16 threads, no retries): wall",
            of(runs["script"], lambda o: o.wall), "s"),
        Row(name, "  rows lost (answered 45011)", of(runs["script"], lambda o: o.lost),
            digits=0),
        Row(name, "batchmove --rate 20 (yesterday's default), one run: wall / bound",
            of(runs["rate20"], lambda o: o.wall / bound), "x", digits=2),
    ]
    for kind, label in (("cli", "two CLI runs at once"), ("parallel", "run A B --parallel 2")):
        found = [o for o, _ in pairs[kind]]
        rows += [
            Row(name, f"{label}, {n // 2:,} users each: most move calls in any 1 s window",
                of(found, lambda o: o.window), target=f"<= {LIMIT:g}",
                met=all(o.window <= LIMIT for o in found), digits=0),
            Row(name, "  token fetches between them", of(found, lambda o: o.tokens),
                target="1", met=all(o.tokens == 1 for o in found), digits=0),
            Row(name, "  both exact (every user moved)", of(found, lambda o: o.lost),
                target="0 lost", met=all(ok for _, ok in pairs[kind]), digits=0),
            Row(name, "  wall (both)", of(found, lambda o: o.wall), "s"),
        ]
    return [row for row in rows if row.values]  # a contender left out by `--only`: no row


def _breakdown(name: str, found: Sequence[Outcome], bound: float) -> list[Row]:
    """Where a run's time goes: start-up to its first move, the moves, the end."""
    return [
        Row(name, "  start to first move (load, register, token, targets, first reads)",
            tuple(o.start for o in found), "s"),
        Row(name, "  move phase (first to last move arrival) / bound",
            tuple(o.moving / bound for o in found), "x", digits=3),
        Row(name, "  last move to exit (last answers, reports, summary)",
            tuple(o.end for o in found), "s"),
    ]


def move_calls_of(n: int) -> int:
    """Move calls of `moves_csv(n, GROUPS)`: ceil(users / 50) per group."""
    per = [len(range(g, n, GROUPS)) for g in range(GROUPS)]
    return sum(-(-k // harness.BATCH) for k in per)


def _half(n: int, k: int, shift: int) -> Path:
    """Users [k * n/2, (k + 1) * n/2) of the sandbox's n followers, over the 8 groups: the two
    runs of a pair move different users (the same users would be refused as an overlap)."""
    path = harness.RUNS_DIR / f"half-{n}-{k}-s{shift}.csv"
    if not path.exists():
        half = harness.openids(n)[k * (n // 2):(k + 1) * (n // 2)]
        lines = ["openid,group_name\n"] + [
            f"{o},{harness.GROUPS[(i + shift) % GROUPS]}\n" for i, o in enumerate(half)]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines), encoding="utf-8")
    return path
