"""What every scenario needs: seeded data, a sandbox process, timed child processes, statistics.

Nothing here talks to anything but 127.0.0.1: the sandbox is started on the loopback address and
every URL the bench builds comes from the sandbox's own `listening on` line.
"""

from __future__ import annotations

import json
import math
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchmove.dev.__main__ import compile_package
from batchmove.sandbox import DEFAULT_APPID, DEFAULT_SECRET, is_loopback, sandbox_openids

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DATA_DIR = BENCH_DIR / ".data"  # generated inputs, kept between runs (see `use_work_dir`)
RUNS_DIR = BENCH_DIR / ".runs"  # run directories of the last bench run
SEED = 20240601
GROUPS = tuple(f"分组{i:02d}" for i in range(1, 21))
BATCH = 50
MOVE_ENDPOINT = "groups/members/batchupdate"
LISTENING = "listening on "


def compile_batchmove() -> None:
    """batchmove byte-compiled where its sources changed (`batchmove.dev`'s own step), as pip
    leaves any install but an editable one: the script's libraries come compiled from pip,
    and without this every batchmove process the bench timed could compile its own ~90
    modules first (~0.1 s of each run where PYTHONDONTWRITEBYTECODE is set)."""
    compile_package(Path(sys.executable))


# --- statistics ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of the results table: a metric over the repeats and the target it answers."""

    scenario: str
    metric: str
    values: tuple[float, ...]
    unit: str = ""
    target: str = ""
    met: bool | None = None  # None: reported, no target
    digits: int = 2

    def cells(self) -> list[str]:
        if not self.values:
            return [self.scenario, self.metric, "-", "-", self.target, _verdict(self.met)]
        med = statistics.median(self.values)
        spread = (f"{_num(min(self.values), self.digits)}–{_num(max(self.values), self.digits)}"
                  if len(self.values) > 1 else "")
        unit = f" {self.unit}" if self.unit else ""
        return [self.scenario, self.metric, f"{_num(med, self.digits)}{unit}", spread,
                self.target, _verdict(self.met)]


def _num(value: float, digits: int) -> str:
    if math.isinf(value) or math.isnan(value):
        return str(value)
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _verdict(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**NO**")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def markdown_table(rows: Sequence[Row]) -> str:
    header = ["Scenario", "Metric", "Median", "Min–max", "Target", "Met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def machine_line() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        import psutil

        mem = f", {psutil.virtual_memory().total / 2**30:.1f} GiB RAM"
    except ImportError:
        pass
    return (f"{cpu}, {cores} cores{mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def use_work_dir(path: Path) -> None:
    """Keep data and runs under `path` instead of bench/ (e.g. a test's temporary directory,
    so a smoke test never shares run directories with a full bench running meanwhile)."""
    global DATA_DIR, RUNS_DIR
    DATA_DIR, RUNS_DIR = path / ".data", path / ".runs"


# --- data ----------------------------------------------------------------------------------
def openids(n: int) -> list[str]:
    """n follower openids: exactly what `batchmove sandbox --users n --seed SEED` holds."""
    return sandbox_openids(n, SEED)


def followers_file(n: int) -> Path:
    """n openids, one a line, for `batchmove sandbox --users-file` (cached)."""
    path = DATA_DIR / f"followers-{n}.txt"
    if not path.exists():
        _write_atomic(path, "".join(f"{o}\n" for o in openids(n)))
    return path


def moves_csv(n: int, groups: int = len(GROUPS), shift: int = 0) -> Path:
    """n rows `openid,group_name`, round-robin over the first `groups` groups, user i to
    group (i + shift) % groups (cached). A different `shift` moves every user again."""
    suffix = "" if (groups, shift) == (len(GROUPS), 0) else f"-{groups}g-s{shift}"
    path = DATA_DIR / f"moves-{n}{suffix}.csv"
    if not path.exists():
        lines = ["openid,group_name\n"]
        lines += [f"{o},{GROUPS[(i + shift) % groups]}\n" for i, o in enumerate(openids(n))]
        _write_atomic(path, "".join(lines))
    return path


def moves_xlsx(n: int) -> Path:
    """The same rows as `moves_csv(n)` as a workbook (cached)."""
    path = DATA_DIR / f"moves-{n}.xlsx"
    if not path.exists():
        import xlsxwriter

        tmp = path.with_suffix(".tmp.xlsx")
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        book = xlsxwriter.Workbook(str(tmp), {"constant_memory": True})
        sheet = book.add_worksheet("moves")
        sheet.write_row(0, 0, ["openid", "group_name"])
        for i, o in enumerate(openids(n), start=1):
            sheet.write_string(i, 0, o)
            sheet.write_string(i, 1, GROUPS[(i - 1) % len(GROUPS)])
        book.close()
        tmp.replace(path)
    return path


def per_group(n: int) -> list[int]:
    """Users per target group of `moves_csv(n)`."""
    return list(Counter(i % len(GROUPS) for i in range(n)).values())


def move_calls(n: int) -> int:
    """The fewest move calls n users need: ceil(users / 50) per group."""
    return sum(math.ceil(k / BATCH) for k in per_group(n))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def fresh_dir(name: str) -> Path:
    path = RUNS_DIR / name
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- the sandbox process -------------------------------------------------------------------
@dataclass
class Sandbox:
    """A `python -m batchmove sandbox` process on 127.0.0.1 and its admin endpoints."""

    base_url: str
    proc: subprocess.Popen[str]
    offset: float = 0.0  # sandbox clock = time.monotonic() - offset (see `calibrate`)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=60) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(f"{self.base_url}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            return json.loads(resp.read())

    def set_faults(self, **changes: Any) -> None:
        self.post("/sandbox/faults", changes)

    def timeline(self) -> list[tuple[float, str]]:
        return [(float(t), str(e)) for t, e in self.get("/sandbox/timeline")["calls"]]

    def calibrate(self) -> None:
        """Find the sandbox clock's origin on ours: both are CLOCK_MONOTONIC, so one probe call
        (an unauthenticated `groups/get`, logged on arrival) pins the offset to within its RTT."""
        best = math.inf
        for _ in range(5):
            before = time.monotonic()
            with suppress(OSError):
                urllib.request.urlopen(f"{self.base_url}/cgi-bin/groups/get", timeout=10).read()
            after = time.monotonic()
            arrival = self.timeline()[-1][0]
            if after - before < best:
                best = after - before
                self.offset = (before + after) / 2 - arrival

    def peak_rss(self) -> int:
        """The sandbox process's peak RSS so far (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc: not Linux?")

    def clock(self, monotonic: float) -> float:
        """A time.monotonic() reading on the sandbox's clock."""
        return monotonic - self.offset


@contextmanager
def sandbox(*args: str) -> Iterator[Sandbox]:
    """Start a sandbox process (20 groups pre-created, quotas out of the way) for the block."""
    groups = [arg for name in GROUPS for arg in ("--group", name)]
    command = [sys.executable, "-m", "batchmove", "sandbox", "--host", "127.0.0.1", "--port", "0",
               "--seed", str(SEED), *groups,
               "--daily-quota", f"{MOVE_ENDPOINT}=1000000000",
               "--daily-quota", "groups/members/update=1000000000",
               "--daily-quota", "stable_token=1000000", "--daily-quota", "token=1000000",
               "--daily-quota", "groups/get=1000000", *args]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith(LISTENING):
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"the sandbox did not start: {line!r} {err[-2000:]!r}")
        base_url = line[len(LISTENING):].strip()
        host = base_url.split("//", 1)[1].rsplit(":", 1)[0]
        if not is_loopback(host):
            raise RuntimeError(f"the sandbox listens on {host}, not on loopback")
        box = Sandbox(base_url, proc)
        box.calibrate()
        yield box
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# --- timed child processes -----------------------------------------------------------------
@dataclass
class Child:
    """A finished child process: wall time, CPU time (user + sys), output."""

    argv: list[str]
    returncode: int
    started: float  # time.monotonic() just before the fork
    wall: float
    cpu: float
    max_rss: int  # bytes
    stdout: str
    stderr: str


def run_child(argv: Sequence[str], *, env: dict[str, str] | None = None,
              check: bool = True) -> Child:
    """Run one process to the end; its CPU time and peak RSS are its own wait4 rusage, taken
    by `launch.py` (a small process that forks it), never the bench's own high-water mark,
    which a child spawned from the bench inherits across exec."""
    read, write = os.pipe()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            subprocess.run([sys.executable, "-S", str(BENCH_DIR / "launch.py"), str(write),
                            *argv], cwd=REPO_ROOT, stdout=out, stderr=err, env=env,
                           pass_fds=(write,), check=False)
        finally:
            os.close(write)
        with os.fdopen(read, "rb") as report:
            took = json.loads(report.read() or b"{}")
        out.seek(0)
        err.seek(0)
        if not took:
            raise RuntimeError(f"bench/launch.py could not run {argv[0]}: {err.read()[-2000:]}")
        child = Child(list(argv), took["returncode"], took["started"], took["wall"],
                      took["cpu"], took["max_rss"], out.read(), err.read())
    if check and child.returncode != 0:
        raise RuntimeError(f"{' '.join(child.argv[:4])} ... exited {child.returncode}: "
                           f"{child.stderr.strip()[-2000:]}")
    return child


_STATE: list[Path] = []  # the bench's account registry, made fresh once per bench process


def batchmove_env() -> dict[str, str]:
    """The environment of the batchmove processes the bench times: the sandbox's account,
    and an account registry of the bench's own (`.runs/state`, fresh each bench) unless
    BATCHMOVE_STATE_DIR names one: the runs on the bench's sandboxes, each an account of its
    own, never land in the user's registry."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WECHAT_")}
    env.update(WECHAT_APPID=DEFAULT_APPID, WECHAT_APPSECRET=DEFAULT_SECRET,
               PYTHONUNBUFFERED="1")
    if not env.get("BATCHMOVE_STATE_DIR", "").strip():
        if not _STATE:
            _STATE.append(fresh_dir("state"))
        env["BATCHMOVE_STATE_DIR"] = str(_STATE[0])
    return env


def batchmove_run(box: Sandbox, input_path: Path, out: Path, *options: str,
                  check: bool = True) -> Child:
    argv = [sys.executable, "-m", "batchmove", "run", str(input_path), "--api-base", box.base_url,
            "--yes", "--quiet", "--out", str(out), *options]
    child = run_child(argv, env=batchmove_env(), check=False)
    if check and child.returncode != 0:
        raise RuntimeError(f"batchmove run exited {child.returncode}: {child.stderr[-2000:]}")
    return child


def batchmove_export(box: Sandbox, out: Path, *options: str) -> Child:
    argv = [sys.executable, "-m", "batchmove", "export", "--out", str(out), "--api-base",
            box.base_url, "--quiet", *options]
    child = run_child(argv, env=batchmove_env(), check=False)
    if child.returncode != 0:
        raise RuntimeError(f"batchmove export exited {child.returncode}: {child.stderr[-2000:]}")
    return child


def summary_counts(run_dir: Path) -> dict[str, int]:
    """The run's row counts by status, from its summary.json."""
    counts: dict[str, int] = json.loads(
        (run_dir / "summary.json").read_text(encoding="utf-8"))["counts"]
    return counts


# --- timelines -----------------------------------------------------------------------------
def arrivals(calls: Sequence[tuple[float, str]], endpoint: str | None = None) -> list[float]:
    return sorted(t for t, e in calls if endpoint is None or e == endpoint)


def max_in_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most arrivals in any half-open window [t, t + window) (sliding, per arrival)."""
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def since(box: Sandbox, mark: int) -> list[tuple[float, str]]:
    """Timeline entries after position `mark` (taken with `len(box.timeline())`)."""
    return box.timeline()[mark:]
