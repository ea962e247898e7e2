"""Scenario 7, the web console: a 1,000,000-row upload planned while the console keeps
answering, and a 1,000,000-user run watched live (server-sent events) against the same run
from the CLI with nobody watching."""

from __future__ import annotations

import http.client
import itertools
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.harness import (
    REPO_ROOT,
    Row,
    Sandbox,
    batchmove_env,
    batchmove_run,
    fresh_dir,
    median,
    moves_csv,
)

RUN_OPTIONS = {"rate": 0, "snapshot": False, "concurrency": 16}
PROBE_EVERY_S = 0.1
CONSOLE_LINE = "console on "


class Console:
    """A `batchmove serve` process on 127.0.0.1 and a few blocking HTTP calls to it."""

    def __init__(self, proc: subprocess.Popen[str], url: str, key: str) -> None:
        self.proc = proc
        address = urlsplit(url)
        self.port = address.port
        self.prefix = address.path.rstrip("/")  # the console's own address, /c/<id>
        self.key = key

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 600) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, self.prefix + path, body=body, headers={
                "Authorization": f"Bearer {self.key}", **(headers or {})})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
            return json.loads(data)
        finally:
            conn.close()

    def upload(self, path: Path) -> dict[str, Any]:
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{path.name}"\r\nContent-Type: text/csv\r\n\r\n').encode()
        body += path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        planned: dict[str, Any] = self.request("POST", "/api/uploads", body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}"})
        return planned

    def events(self, run_id: str) -> list[tuple[float, dict[str, Any]]]:
        """Every server-sent event of the run, with its arrival time, until the stream ends."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("GET", f"{self.prefix}/api/runs/{run_id}/events",
                     headers={"Authorization": f"Bearer {self.key}"})
        response = conn.getresponse()
        found = []
        while line := response.readline():
            if line.startswith(b"data: "):
                found.append((time.monotonic(), json.loads(line[6:])))
        conn.close()
        return found


@contextmanager
def console(box: Sandbox, name: str) -> Iterator[Console]:
    root = fresh_dir(name)
    root.mkdir(mode=0o700)
    defaults = root / "defaults.toml"
    keys = {"api_base": box.base_url, **RUN_OPTIONS}
    defaults.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items()))
    key = secrets.token_urlsafe(24)
    env = {**batchmove_env(), "BENCH_CONSOLE_KEY": key}
    with (root / "console.log").open("w") as log:  # the console's own stderr, if it fails
        proc = subprocess.Popen([sys.executable, "-m", "batchmove", "serve", "--port", "0",
                                 "--workspace", str(root / "runs"), "--defaults", str(defaults),
                                 "--key-env", "BENCH_CONSOLE_KEY"], cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(CONSOLE_LINE):
            raise RuntimeError(f"the console did not start: {line!r}")
        yield Console(proc, line[len(CONSOLE_LINE):].strip(), key)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def _probe(c: Console, stop: threading.Event, waits: list[float]) -> None:
    """What a page feels meanwhile: the time `GET /api/runs` takes, every 0.1 s."""
    while not stop.is_set():
        started = time.monotonic()
        c.request("GET", "/api/runs", timeout=60)
        waits.append(time.monotonic() - started)
        stop.wait(PROBE_EVERY_S)


def plan_and_watch(box: Sandbox, data: Path, i: int) -> dict[str, float]:
    """One upload -> plan (timed, probed) -> approve -> events to the end."""
    with console(box, f"console-{i}") as c:
        warm = c.upload(moves_csv(100))  # a console is up long before its first big upload
        c.request("POST", f"/api/runs/{warm['id']}/discard")  # (its users would overlap)
        stop, waits = threading.Event(), list[float]()
        prober = threading.Thread(target=_probe, args=(c, stop, waits), daemon=True)
        prober.start()
        started = time.monotonic()
        planned = c.upload(data)
        plan_s = time.monotonic() - started
        stop.set()
        prober.join()
        run_id = planned["id"]
        cpu_before = _cpu_s(c.proc.pid)
        c.request("POST", f"/api/runs/{run_id}/approve",
                  json.dumps({"digest": planned["digest"]}).encode(),
                  {"Content-Type": "application/json"})
        events = c.events(run_id)
        console_cpu = _cpu_s(c.proc.pid) - cpu_before
        summary = c.request("GET", f"/api/runs/{run_id}/files/summary.json")
    times = [t for t, e in events if e["state"] == "running"]
    gaps = [b - a for a, b in itertools.pairwise(times)] or [0.0]
    if summary["counts"]["moved"] != planned["plan"]["users_to_move"]:
        raise RuntimeError(f"console run moved {summary['counts']}")
    return {"plan_s": plan_s, "probe_max_s": max(waits, default=0.0),
            "gap_max_s": max(gaps), "events": float(len(events)),
            "run_s": float(summary["duration_s"]),
            "console_cpu_share": 100 * console_cpu / float(summary["duration_s"])}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def console_scenario(box: Sandbox, n: int, repeats: int,
                     log: Any) -> list[Row]:
    """The console's runs and their CLI twins keep their account registry to themselves (the
    machine's own, shared with every other batchmove on it, answered "database is locked" to
    a 1,000,000-user claim while other sessions ran)."""
    before = os.environ.get("BATCHMOVE_STATE_DIR")
    os.environ["BATCHMOVE_STATE_DIR"] = str(fresh_dir("console-state"))
    try:
        return _console_scenario(box, n, repeats, log)
    finally:
        if before is None:
            os.environ.pop("BATCHMOVE_STATE_DIR", None)
        else:
            os.environ["BATCHMOVE_STATE_DIR"] = before


def _console_scenario(box: Sandbox, n: int, repeats: int, log: Any) -> list[Row]:
    data = moves_csv(n)
    watched, alone = [], []
    for i in range(repeats):
        log(f"  console: run {i + 1}/{repeats}")
        watched.append(plan_and_watch(box, data, i))
        out = fresh_dir(f"console-cli-{i}")
        batchmove_run(box, data, out, "--rate", "0", "--no-snapshot", "--concurrency",
                      str(RUN_OPTIONS["concurrency"]))
        alone.append(float(json.loads((out / "summary.json").read_text())["duration_s"]))
    plan_s = tuple(w["plan_s"] for w in watched)
    probe = tuple(w["probe_max_s"] for w in watched)
    gap = tuple(w["gap_max_s"] for w in watched)
    slower = tuple(100 * (w["run_s"] / a - 1) for w, a in zip(watched, alone, strict=True))
    name = "10. Console"
    return [
        Row(name, f"upload of {n:,} rows -> plan on the page (HTTP, whole)", plan_s, "s",
            "< 15 s", median(plan_s) < 15),
        Row(name, "slowest page request while planning (GET /api/runs)", probe, "s", digits=3),
        Row(name, "longest gap between progress events while running", gap, "s", "<= 1 s",
            median(gap) <= 1.05),
        Row(name, "run watched live vs the same run from the CLI, unwatched", slower, "%",
            "< 3 %", median(slower) < 3, 1),
        Row(name, "console CPU while watching, share of one core over the run", tuple(
            w["console_cpu_share"] for w in watched), "%", digits=1),
        Row(name, "the same run from the CLI, unwatched", tuple(alone), "s"),
    ]

