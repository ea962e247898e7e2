"""Machinery shared by the reliability suites (marked `slow`).

- `ThreadedSandbox`: a real sandbox on 127.0.0.1, served from its own thread and event loop, so
  a suite can drive `batchmove` child processes with plain blocking calls, watch `sb.state`
  while they run, and change faults live.
- `spawn` / `Child`: a `python -m batchmove ...` child whose stdout/stderr go to files (no pipe
  can fill up), its peak RSS sampled from /proc/PID/status (VmHWM) every 5 ms; an optional
  watchdog kills it past a size, and an address-space cap (`resource.prlimit`, 3 GB) keeps a
  runaway child from taking the CI machine down with it.
- `leaks`: the appsecret and every token the sandbox issued, searched in the raw bytes of every
  artefact (stdout, stderr, every file of a run directory incl. `ledger.sqlite-wal`, and the
  members of `.xlsx` files, which are deflated).
- `ledger_check`: `PRAGMA integrity_check` on a copy of the ledger (+ WAL), so the check never
  checkpoints or repairs the file the next resume will open.
"""

from __future__ import annotations

import asyncio
import csv
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batchmove.sandbox import PlatformConfig, RunningSandbox, SandboxConfig, running_sandbox
from tests.support.sandboxes import REPO_ROOT

T = TypeVar("T")

#: a distinctive appsecret: any occurrence outside the sandbox is a leak
SECRET = "rel-AppSecret-Zq7Vb2Lk9Xw4Pd8N"
APPID = SandboxConfig().appid
#: what a hostile input may cost a `batchmove` process at most
RSS_LIMIT_MB = 500
#: address-space cap of every child: far above any honest run, far below the CI machine
AS_LIMIT = 3 << 30
FINAL_STATUSES = frozenset({"moved", "already", "failed", "invalid", "duplicate"})
TEMP_SUFFIX = ".tmp"


def cli_env(secret: str = SECRET, **extra: str) -> dict[str, str]:
    env = {**os.environ, "WECHAT_APPID": APPID, "WECHAT_APPSECRET": secret,
           "PYTHONUNBUFFERED": "1"}
    env.pop("WECHAT_ACCESS_TOKEN", None)
    return {**env, **extra}


# --- the sandbox on its own thread ----------------------------------------------------------
class ThreadedSandbox:
    """`with ThreadedSandbox(config) as sb:` a started sandbox served by a background thread.

    Reading `sb.state` from the test thread is fine (plain dicts and lists under the GIL);
    anything that must not interleave with a request goes through `call`.
    """

    def __init__(self, config: SandboxConfig | None = None,
                 platform: PlatformConfig | None = None) -> None:
        self.config = config
        self.platform = platform  # a third-party platform and its authorizers instead
        self.loop = asyncio.new_event_loop()
        self._ready: Future[RunningSandbox] = Future()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="sandbox", daemon=True)
        self.sb: RunningSandbox | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with running_sandbox(self.config, host="127.0.0.1", port=0,
                                       platform=self.platform) as sb:
                self._ready.set_result(sb)
                await self._stop.wait()
        except BaseException as exc:  # surface start-up failures in the test thread
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def __enter__(self) -> ThreadedSandbox:
        self._thread.start()
        self.sb = self._ready.result(timeout=60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    @property
    def base_url(self) -> str:
        assert self.sb is not None
        return self.sb.base_url

    @property
    def state(self) -> Any:
        assert self.sb is not None
        return self.sb.state

    def call(self, func: Callable[[], T]) -> T:
        """Run `func` on the sandbox's loop (between requests) and return its result."""

        async def wrapper() -> T:
            return func()

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout=30)

    def set_faults(self, **changes: Any) -> None:
        self.call(lambda: self.state.set_faults(**changes))


# --- child processes ------------------------------------------------------------------------
@dataclass
class Child:
    """A finished `batchmove` process."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float
    killed_by_watchdog: bool = False

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Running:
    """A `batchmove` process still going; `finish()` waits for it and reaps it."""

    proc: subprocess.Popen[bytes]
    args: list[str]
    out_path: Path
    err_path: Path
    started: float = field(default_factory=time.monotonic)
    rss_watch_mb: float | None = None
    peak_mb: float = 0.0
    _watchdog_fired: bool = False

    def __post_init__(self) -> None:
        self._status = Path(f"/proc/{self.proc.pid}/status")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        self._sample()
        return self.proc.returncode is None and self._poll() is None

    def _sample(self) -> float:
        """VmHWM, the peak RSS of the process since its exec. (wait4's ru_maxrss would not
        do: exec carries the forking parent's high-water mark over, here pytest's.)"""
        try:
            for line in self._status.read_text().splitlines():
                if line.startswith(("VmHWM:", "VmRSS:")):
                    self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
        except (OSError, ValueError, IndexError):
            pass
        return self.peak_mb

    def _poll(self) -> int | None:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return self.proc.returncode

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.returncode is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def finish(self, timeout: float = 600.0) -> Child:
        deadline = time.monotonic() + timeout
        while self.proc.returncode is None:
            peak = self._sample()
            if self._poll() is not None:
                break
            if self.rss_watch_mb is not None and peak > self.rss_watch_mb:
                self._watchdog_fired = True
                self.kill()
            if time.monotonic() > deadline:
                self.kill()
                os.waitpid(self.pid, 0)
                raise AssertionError(f"batchmove {' '.join(self.args)} did not end in {timeout}s")
            time.sleep(0.005)
        seconds = time.monotonic() - self.started
        out = self.out_path.read_bytes().decode("utf-8", errors="replace")
        err = self.err_path.read_bytes().decode("utf-8", errors="replace")
        return Child(self.args, self.proc.returncode, out, err, round(self.peak_mb, 1),
                     seconds, self._watchdog_fired)


def spawn(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT,
          logs: Path | None = None, umask: int = -1, rss_watch_mb: float | None = None,
          wrap: tuple[str, ...] = ()) -> Running:
    """Start `[WRAP...] python -m batchmove ARGS`; `rss_watch_mb` kills it past that size."""
    logs = logs or Path(tempfile.mkdtemp(prefix="bm-child-"))
    logs.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="out-", dir=logs)
    os.close(fd)
    out_path = Path(name)
    err_path = out_path.with_name(out_path.name.replace("out-", "err-"))
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen([*wrap, sys.executable, "-m", "batchmove", *args], cwd=cwd,
                                env=env or cli_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, umask=umask)
    with suppress(ProcessLookupError, PermissionError):  # already gone: nothing to protect
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
    return Running(proc, list(args), out_path, err_path, rss_watch_mb=rss_watch_mb)


def batchmove(*args: str, timeout: float = 600.0, **kwargs: Any) -> Child:
    return spawn(*args, **kwargs).finish(timeout)


def assert_one_line_error(child: Child, code: int = 2) -> str:
    """Exit `code`, and stderr ends with exactly one `batchmove: ` line and has no traceback."""
    assert child.returncode == code, (child.returncode, child.stderr[-2000:])
    assert "Traceback" not in child.output, child.stderr[-2000:]
    assert "stack backtrace" not in child.output, child.stderr[-2000:]
    errors = [line for line in child.stderr.splitlines() if line.startswith("batchmove: ")]
    assert len(errors) == 1, child.stderr[-2000:]
    assert child.stderr.rstrip().splitlines()[-1] == errors[0], child.stderr[-2000:]
    return errors[0]


# --- secrets --------------------------------------------------------------------------------
def secrets_of(state: Any | None = None, extra: Iterable[str] = ()) -> list[str]:
    """The appsecret plus every token the sandbox ever issued (never empty)."""
    found = [SECRET, *extra]
    if state is not None:
        found += list(state.issued_tokens)
    return [s for s in dict.fromkeys(found) if s]


def artefacts(*roots: Path) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) of every file under the roots, plus each member of every zip
    (`.xlsx`) file, since deflate would hide a secret from a plain byte search."""
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # a temp file renamed away meanwhile
                continue
            yield str(path), data
            if data[:4] == b"PK\x03\x04":
                try:
                    with zipfile.ZipFile(path) as archive:
                        for member in archive.infolist():
                            yield f"{path}!{member.filename}", archive.read(member)
                except (zipfile.BadZipFile, OSError, EOFError):
                    pass


def leaks(secrets: list[str], texts: dict[str, str] | None = None,
          roots: Iterable[Path] = ()) -> list[str]:
    """Where any secret appears: `["stderr of run 3: token #2", ...]` (empty: no leak)."""
    needles = [(f"token #{i}" if s != SECRET else "appsecret", s.encode())
               for i, s in enumerate(secrets)]
    found = []
    blobs: list[tuple[str, bytes]] = [(k, v.encode()) for k, v in (texts or {}).items()]
    blobs += list(artefacts(*roots))
    for name, blob in blobs:
        for label, needle in needles:
            if needle in blob:
                found.append(f"{name}: {label}")
    return found


@dataclass
class LeakAudit:
    """Collects every artefact a suite produced; `check()` asserts none holds a secret."""

    texts: dict[str, str] = field(default_factory=dict)
    roots: list[Path] = field(default_factory=list)
    extra_secrets: list[str] = field(default_factory=list)

    def add_child(self, label: str, child: Child) -> None:
        self.texts[f"stdout of {label}"] = child.stdout
        self.texts[f"stderr of {label}"] = child.stderr

    def check(self, state: Any | None) -> dict[str, int]:
        secrets = secrets_of(state, self.extra_secrets)
        found = leaks(secrets, self.texts, self.roots)
        assert not found, f"secrets leaked: {found[:10]}"
        files = sum(1 for _ in artefacts(*self.roots))
        return {"secrets": len(secrets), "texts": len(self.texts), "files": files}


# --- ledger and reports ---------------------------------------------------------------------
@contextmanager
def ledger_copy(run_dir: Path) -> Iterator[sqlite3.Connection | None]:
    """A connection to a copy of the ledger + WAL (the run's own file is never touched), or
    None when there is no ledger yet."""
    if not (run_dir / "ledger.sqlite").exists():
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bm-ledger-") as scratch:
        for suffix in ("", "-wal"):
            if (run_dir / f"ledger.sqlite{suffix}").exists():
                shutil.copyfile(run_dir / f"ledger.sqlite{suffix}",
                                Path(scratch) / f"ledger.sqlite{suffix}")
        conn = sqlite3.connect(Path(scratch) / "ledger.sqlite")
        try:
            yield conn
        finally:
            conn.close()


def _has_rows_table(conn: sqlite3.Connection) -> bool:
    return "rows" in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


def ledger_check(run_dir: Path) -> tuple[str, dict[str, int]]:
    """(`PRAGMA integrity_check` verdict, rows per status) of a copy of the ledger + WAL."""
    with ledger_copy(run_dir) as conn:
        if conn is None:
            return "ok", {}
        verdict = "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
        counts = dict(conn.execute("SELECT status, count(*) FROM rows GROUP BY status")) \
            if _has_rows_table(conn) else {}
    return verdict, counts


def moved_openids(run_dir: Path) -> set[str]:
    """Openids the ledger records as moved, read from a copy (the file is never touched)."""
    with ledger_copy(run_dir) as conn:
        if conn is None or not _has_rows_table(conn):
            return set()
        return {o for (o,) in conn.execute("SELECT openid FROM rows WHERE status='moved'")}


def report_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "report.csv").open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))


def report_temps(run_dir: Path, *, final_only: bool = False) -> list[str]:
    """Report files being written right now (`.report.csv.XXXX.tmp` and the like).
    `final_only`: those of the end of a run only (report.csv and report.xlsx are written
    while the run sends, for the rows already settled; failed.csv and summary.json last)."""
    try:
        names = os.listdir(run_dir)
    except FileNotFoundError:
        return []
    last = (".failed.csv.", ".summary.json.") if final_only else (".",)
    return [n for n in names if n.startswith(last) and n.endswith(TEMP_SUFFIX)]


def write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(list(header))
        writer.writerows(rows)
    return path


def group_names(state: Any) -> list[str]:
    return [g.name for g in list(state.groups.values())]


@contextmanager
def timed(figures: dict[str, Any], key: str = "seconds") -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        figures[key] = round(time.monotonic() - start, 1)


@contextmanager
def holder(script: str, ready: str) -> Iterator[subprocess.Popen[str]]:
    """A `python -c script` child that prints `ready` once it holds something of the account
    registry (a lease, a lock): yielded then, killed at the end if the test has not."""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == ready
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
