"""The six scenarios. Each one returns table rows; the targets are the issue's, on 2 cores."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.account import account
from bench.agency import agency
from bench.harness import (
    BENCH_DIR,
    MOVE_ENDPOINT,
    Child,
    Row,
    Sandbox,
    arrivals,
    batchmove_export,
    batchmove_run,
    followers_file,
    fresh_dir,
    max_in_window,
    median,
    move_calls,
    moves_csv,
    moves_xlsx,
    run_child,
    sandbox,
    since,
)
from bench.hostile import hostile
from bench.peer import threaded
from bench.scale import scale
from bench.tagsnap import tag_snapshot

MB = 1024 * 1024
MOVE_ENDPOINTS = (MOVE_ENDPOINT, "groups/members/update")


@dataclass(frozen=True)
class Sizes:
    intake_csv: int = 1_000_000
    intake_xlsx: int = 200_000
    raw: int = 1_000_000
    limit: int = 50_000
    sdk_single: int = 5_000
    sdk_lists: int = 50_000
    resume: int = 1_000_000
    resume_pending: int = 10_000
    export: int = 1_000_000
    threaded: int = 100_000
    tagsnap: int = 100_000
    scale_small: int = 1_000_000
    scale_large: int = 10_000_000
    console: int = 1_000_000
    agency: int = 1_000_000
    hostile: int = 1 << 30


QUICK = Sizes(intake_csv=2_000, intake_xlsx=2_000, raw=2_000, limit=2_000, sdk_single=200,
              sdk_lists=2_000, resume=2_000, resume_pending=20, export=2_000, threaded=2_000,
              tagsnap=2_000, scale_small=2_000, scale_large=20_000, console=2_000,
              agency=2_000, hostile=32 << 20)

RAW_CONCURRENCY = 16
LIMIT_RATE = 100.0
VERSUS_RATE = 200.0
LATENCY_MS = 20.0
JITTER_MS = 10.0
ERROR_RATE = 0.10


@dataclass
class Context:
    """What a bench run shares between scenarios: sizes, repeats, and the sandboxes started."""

    sizes: Sizes
    repeats: int
    stack: ExitStack = field(default_factory=ExitStack)
    only: frozenset[str] = frozenset()  # a scenario's contenders to run (empty: all)
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)
    _sandboxes: dict[int, Sandbox] = field(default_factory=dict)

    def wants(self, contender: str) -> bool:
        """Whether `--only` leaves this contender of a scenario in (every one without it)."""
        return not self.only or contender in self.only

    def sandbox(self, users: int) -> Sandbox:
        """One sandbox process per follower count, kept for the whole bench run."""
        if users not in self._sandboxes:
            self.log(f"  starting a sandbox with {users:,} followers")
            box = self.stack.enter_context(sandbox("--users-file", str(followers_file(users))))
            self._sandboxes[users] = box
        box = self._sandboxes[users]
        box.set_faults(latency_ms=0, jitter_ms=0, error_rate=0, fault_endpoints=[])
        return box


def _repeat(ctx: Context, what: str) -> Iterator[int]:
    for i in range(ctx.repeats):
        ctx.log(f"  {what}: run {i + 1}/{ctx.repeats}")
        yield i


def _summary(run_dir: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return data


def _moved(run_dir: Path, expected: int) -> None:
    counts = _summary(run_dir)["counts"]
    assert isinstance(counts, dict)
    if counts.get("moved") != expected:
        raise RuntimeError(f"{run_dir}: expected {expected} moved, got {counts}")


# --- 1. intake ----------------------------------------------------------------------------------
def intake(ctx: Context) -> list[Row]:
    n_csv, n_xlsx = ctx.sizes.intake_csv, ctx.sizes.intake_xlsx
    csv_path, xlsx_path = moves_csv(n_csv), moves_xlsx(n_xlsx)
    results: dict[str, list[dict[str, float]]] = {"csv": [], "xlsx": []}
    for i in _repeat(ctx, "intake"):
        for kind, path in (("csv", csv_path), ("xlsx", xlsx_path)):
            child = run_child([sys.executable, str(BENCH_DIR / "intake_child.py"), str(path),
                               str(fresh_dir(f"intake-{kind}-{i}"))])
            data = json.loads(child.stdout.strip().splitlines()[-1])
            if data["pending"] != (n_csv if kind == "csv" else n_xlsx):
                raise RuntimeError(f"intake of {path}: {data}")
            results[kind].append(data)
    csv_s = tuple(r["intake_s"] for r in results["csv"])
    rss = tuple(r["peak_rss"] / MB for r in results["csv"])
    xlsx_s = tuple(r["intake_s"] for r in results["xlsx"])
    name = "1. Intake"
    return [
        Row(name, f"CSV {n_csv:,} rows -> ledger", csv_s, "s", "< 5 s", median(csv_s) < 5),
        Row(name, "CSV peak RSS (child process, imports included)", rss, "MB", "< 400 MB",
            median(rss) < 400, 0),
        Row(name, f"XLSX {n_xlsx:,} rows -> ledger", xlsx_s, "s", "< 5 s", median(xlsx_s) < 5),
        Row(name, "XLSX peak RSS", tuple(r["peak_rss"] / MB for r in results["xlsx"]), "MB",
            digits=0),
    ]


# --- 2. raw engine ------------------------------------------------------------------------------
def raw_engine(ctx: Context) -> list[Row]:
    n = ctx.sizes.raw
    box = ctx.sandbox(n)
    data = moves_csv(n)
    runs: list[Child] = []
    calls: list[float] = []
    for i in _repeat(ctx, "raw engine"):
        mark = len(box.timeline())
        out = fresh_dir(f"raw-{i}")
        runs.append(batchmove_run(box, data, out, "--rate", "0", "--no-snapshot",
                                  "--concurrency", str(RAW_CONCURRENCY)))
        _moved(out, n)
        calls.append(len(arrivals(since(box, mark), MOVE_ENDPOINT)))
    rate = tuple(n / r.wall for r in runs)
    name = "2. Raw engine"
    return [
        Row(name, f"{n:,} users, 20 groups, --rate 0: wall (whole process)",
            tuple(r.wall for r in runs), "s"),
        Row(name, "users moved per second, end to end", rate, "users/s", ">= 50,000",
            median(rate) >= 50_000, 0),
        Row(name, "CPU (user+sys) of the batchmove process per 1,000 users",
            tuple(1e6 * r.cpu / n for r in runs), "ms", digits=1),
        Row(name, "batchmove process peak RSS", tuple(r.max_rss / MB for r in runs), "MB",
            digits=0),
        Row(name, f"move calls (fewest possible: {move_calls(n):,})", tuple(calls),
            target=f"= {move_calls(n):,}", met=all(c == move_calls(n) for c in calls), digits=0),
    ]


# --- 3 and 6. at the rate limit -----------------------------------------------------------------
def _at_limit(ctx: Context, name: str, error_rate: float, slack: float) -> list[Row]:
    n = ctx.sizes.limit
    box = ctx.sandbox(n)
    faults: dict[str, object] = {"latency_ms": LATENCY_MS, "jitter_ms": JITTER_MS}
    if error_rate:  # errors (and so latency) on the move calls only: the token fetch has no retry
        faults.update(error_rate=error_rate, fault_endpoints=[MOVE_ENDPOINT])
    box.set_faults(**faults)
    data = moves_csv(n)
    bound = move_calls(n) / LIMIT_RATE
    span, wall, window, calls = [], [], [], []
    for i in _repeat(ctx, name):
        mark = len(box.timeline())
        out = fresh_dir(f"limit-{error_rate:g}-{i}")
        child = batchmove_run(box, data, out, "--rate", f"{LIMIT_RATE:g}", "--no-snapshot")
        _moved(out, n)
        timeline = since(box, mark)
        moves = arrivals(timeline, MOVE_ENDPOINT)
        span.append(moves[-1] - moves[0])
        wall.append(child.wall)
        window.append(float(max_in_window(arrivals(timeline))))
        calls.append(float(len(moves)))
    ratio = tuple(s / bound for s in span)
    worst = max(window)
    faulted = f", {error_rate:.0%} errcode -1" if error_rate else ""
    return [
        Row(name, f"{n:,} users, --rate {LIMIT_RATE:g}, {LATENCY_MS:g}+0..{JITTER_MS:g} ms"
                  f"{faulted}: bound = {move_calls(n):,} calls / {LIMIT_RATE:g}", (bound,), "s"),
        Row(name, "move phase (first to last batchupdate arrival)", tuple(span), "s"),
        Row(name, "move phase / bound", ratio, "x", f"<= {1 + slack:.2f}",
            median(ratio) <= 1 + slack, 3),
        Row(name, "whole process wall / bound", tuple(w / bound for w in wall), "x", digits=3),
        Row(name, "whole process wall", tuple(wall), "s"),
        Row(name, "move calls (retries included)", tuple(calls), digits=0),
        Row(name, "most calls in any 1 s window (all endpoints)", tuple(window),
            target=f"<= {LIMIT_RATE:g}", met=worst <= LIMIT_RATE, digits=0),
    ]


def at_limit(ctx: Context) -> list[Row]:
    return _at_limit(ctx, "3. At the limit", 0.0, 0.03)


def under_faults(ctx: Context) -> list[Row]:
    return _at_limit(ctx, "6. Under faults", ERROR_RATE, 0.15)


# --- 4. versus the usual script -----------------------------------------------------------------
def versus(ctx: Context) -> list[Row]:
    small, large = ctx.sizes.sdk_single, ctx.sizes.sdk_lists
    box = ctx.sandbox(max(small, large))
    box.set_faults(latency_ms=LATENCY_MS)
    script = str(BENCH_DIR / "usual_script.py")
    cases = {
        "a": ([sys.executable, script, box.base_url, str(moves_csv(small)), "single"], None),
        "b": ([sys.executable, script, box.base_url, str(moves_csv(large)), "list50"], None),
        "c5": ([], moves_csv(small)),
        "c50": ([], moves_csv(large)),
    }
    wall: dict[str, list[float]] = {k: [] for k in cases}
    calls: dict[str, list[float]] = {k: [] for k in cases}
    moves: dict[str, list[float]] = {k: [] for k in cases}
    for i in _repeat(ctx, "versus"):
        for key, (argv, data) in cases.items():
            mark = len(box.timeline())
            if data is None:
                child = run_child(argv)
            else:
                out = fresh_dir(f"versus-{key}-{i}")
                child = batchmove_run(box, data, out, "--rate", f"{VERSUS_RATE:g}",
                                      "--no-snapshot")
            timeline = since(box, mark)
            wall[key].append(child.wall)
            calls[key].append(float(len(timeline)))
            moves[key].append(float(sum(e in MOVE_ENDPOINTS for _, e in timeline)))
    name = "4. Versus the usual script"
    rate = f"--rate {VERSUS_RATE:g}"

    def ratio(top: str, bottom: str, of: dict[str, list[float]]) -> tuple[float, ...]:
        return tuple(t / b for t, b in zip(of[top], of[bottom], strict=True))

    speed_a, speed_b = ratio("a", "c5", wall), ratio("b", "c50", wall)
    calls_a, moves_a = ratio("a", "c5", calls), ratio("a", "c5", moves)
    return [
        Row(name, f"(a) wechatpy, one user a call, {small:,} users: wall", tuple(wall["a"]), "s"),
        Row(name, "(a) API calls", tuple(calls["a"]), digits=0),
        Row(name, f"(b) wechatpy, lists of 50 in sequence, {large:,} users: wall",
            tuple(wall["b"]), "s"),
        Row(name, "(b) API calls", tuple(calls["b"]), digits=0),
        Row(name, f"(c) batchmove {rate}, {small:,} users: wall", tuple(wall["c5"]), "s"),
        Row(name, f"(c) batchmove {rate}, {small:,} users: API calls", tuple(calls["c5"]),
            digits=0),
        Row(name, f"(c) batchmove {rate}, {large:,} users: wall", tuple(wall["c50"]), "s"),
        Row(name, f"(c) batchmove {rate}, {large:,} users: API calls", tuple(calls["c50"]),
            digits=0),
        Row(name, "speed-up (c) over (a)", speed_a, "x", ">= 50x", median(speed_a) >= 50, 1),
        Row(name, "fewer calls (c) than (a), all endpoints", calls_a, "x", ">= 50x",
            median(calls_a) >= 50, 1),
        Row(name, "fewer move calls (c) than (a)", moves_a, "x", ">= 50x",
            median(moves_a) >= 50, 1),
        Row(name, "speed-up (c) over (b)", speed_b, "x", ">= 4x", median(speed_b) >= 4, 2),
    ]


# --- 5. resume ----------------------------------------------------------------------------------
def resume(ctx: Context) -> list[Row]:
    n, pending = ctx.sizes.resume, ctx.sizes.resume_pending
    box = ctx.sandbox(n)
    data = moves_csv(n)
    # built here, not taken from the raw scenario: its fingerprint must be this code's
    ctx.log(f"  resume: building a finished {n:,}-row run")
    base = fresh_dir("resume-base")
    batchmove_run(box, data, base, "--rate", "0", "--no-snapshot",
                  "--concurrency", str(RAW_CONCURRENCY))
    first, wall = [], []
    for i in _repeat(ctx, "resume"):
        out = fresh_dir(f"resume-{i}")
        out.mkdir(parents=True)
        shutil.copy2(base / "ledger.sqlite", out / "ledger.sqlite")
        _reopen(out / "ledger.sqlite", n - pending)
        mark = len(box.timeline())
        child = batchmove_run(box, data, out, "--rate", f"{LIMIT_RATE:g}", "--no-snapshot")
        _moved(out, n)
        moves = arrivals(since(box, mark), MOVE_ENDPOINT)
        first.append(moves[0] - box.clock(child.started))
        wall.append(child.wall)
    name = "5. Resume"
    return [
        Row(name, f"{n:,}-row ledger, {n - pending:,} done: command to first move call",
            tuple(first), "s", "< 2 s", median(first) < 2),
        Row(name, f"whole process wall ({pending:,} users at --rate {LIMIT_RATE:g})",
            tuple(wall), "s"),
    ]


def _reopen(ledger: Path, done: int) -> None:
    """Make a finished run look interrupted: all but the first `done` rows back to pending."""
    db = sqlite3.connect(ledger)
    try:
        with db:
            db.execute("UPDATE rows SET status = 'pending', attempts = 0, updated_at = NULL "
                       "WHERE row IN (SELECT row FROM rows ORDER BY row LIMIT -1 OFFSET ?)",
                       (done,))
            db.execute("UPDATE meta SET value = 'null' WHERE key = 'finished_at'")
    finally:
        db.close()


# --- 7. the web console ------------------------------------------------------------------------
def web_console(ctx: Context) -> list[Row]:
    from bench.console import console_scenario

    n = ctx.sizes.console
    return console_scenario(ctx.sandbox(n), n, ctx.repeats, ctx.log)


# --- 8. export ----------------------------------------------------------------------------------
def export(ctx: Context) -> list[Row]:
    """`batchmove export` of every follower (the sandbox's default 10,000 a page) to a CSV."""
    n = ctx.sizes.export
    box = ctx.sandbox(n)
    runs: list[Child] = []
    calls: list[float] = []
    for i in _repeat(ctx, "export"):
        out = fresh_dir(f"export-{i}")
        out.mkdir(parents=True)
        mark = len(box.timeline())
        child = batchmove_export(box, out / "followers.csv", "--rate", "0",
                                 "--concurrency", str(RAW_CONCURRENCY))
        with (out / "followers.csv").open(encoding="utf-8-sig") as f:
            rows = sum(1 for _ in f) - 1
        if rows != n:
            raise RuntimeError(f"export wrote {rows} rows, expected {n}")
        runs.append(child)
        calls.append(float(len(since(box, mark))))
    wall = tuple(r.wall for r in runs)
    rss = tuple(r.max_rss / MB for r in runs)
    name = "8. Export"
    return [
        Row(name, f"{n:,} followers, --rate 0, to CSV: wall (whole process)", wall, "s",
            "< 30 s", median(wall) < 30),
        Row(name, "batchmove process peak RSS", rss, "MB", "< 400 MB", median(rss) < 400, 0),
        Row(name, "CPU (user+sys) of the batchmove process", tuple(r.cpu for r in runs), "s"),
        Row(name, f"API calls (user/get pages + user/info/batchget {n // 100:,} + token, "
                  "quota)", tuple(calls), digits=0),
    ]


SCENARIOS: dict[str, Callable[[Context], list[Row]]] = {
    "intake": intake,
    "raw": raw_engine,
    "limit": at_limit,
    "versus": versus,
    "resume": resume,
    "faults": under_faults,
    "threaded": threaded,
    "export": export,
    "scale": scale,
    "console": web_console,
    "tagsnap": tag_snapshot,
    "account": account,
    "agency": agency,
    "hostile": hostile,
}
