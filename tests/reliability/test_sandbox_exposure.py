"""Sandbox exposure: the sandbox listens on 127.0.0.1 unless told otherwise, explicitly.

Figures: `batchmove sandbox --host H` is refused (exit 2, one line, before binding) for 9
non-loopback hosts: 0.0.0.0, ::, "" (aiohttp would bind every interface), 192.0.2.10,
10.0.0.1, 169.254.1.1, example.com, 127.0.0.1.nip.io and ::ffff:127.0.0.1. The refusals
run inside a private network namespace (`unshare -n`) when one can be made, so even a
regression could not expose anything; without one, the wildcard hosts are skipped. Default,
`localhost` and `::1` sandboxes (and the embedded sandbox of `run --api-base sandbox`) are
checked with psutil to listen on loopback addresses only. A job file cannot set a host for the
embedded sandbox. No non-loopback address is ever bound. About 10 s.
"""

from __future__ import annotations

import ipaddress
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import psutil
import pytest

from batchmove.sandbox import is_loopback, sandbox_openids
from tests.support.processes import assert_one_line_error, batchmove, spawn, write_csv
from tests.support.sandboxes import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WILDCARDS = ["0.0.0.0", "::", ""]
OTHERS = ["192.0.2.10", "10.0.0.1", "169.254.1.1", "example.com", "127.0.0.1.nip.io",
          "::ffff:127.0.0.1"]


@cache
def private_network() -> tuple[str, ...]:
    """A command prefix that runs a process in a network namespace of its own, or ()."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True)
    return (unshare, "-n") if probe.returncode == 0 else ()


@pytest.mark.parametrize("host", WILDCARDS + OTHERS)
def test_non_loopback_host_is_refused_before_binding(host: str) -> None:
    assert not is_loopback(host)
    wrap = private_network()
    if not wrap and host in WILDCARDS:
        pytest.skip("no private network namespace: never risk binding every interface")
    child = spawn("sandbox", "--host", host, "--port", "0", wrap=wrap).finish(timeout=30)
    line = assert_one_line_error(child, 2)
    assert line.startswith("batchmove: refusing to bind non-loopback address")
    assert "--allow-non-loopback" in line
    assert "listening on" not in child.stdout


@pytest.fixture
def served() -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    procs: list[tuple[subprocess.Popen[str], str]] = []
    yield procs
    for proc, _ in procs:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()


def _listening(pid: int) -> list[str]:
    return [c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN]


@pytest.mark.parametrize(("args", "url_host"), [
    ((), "127.0.0.1"), (("--host", "localhost"), "localhost"), (("--host", "::1"), "[::1]")])
def test_sandbox_listens_on_loopback_only(served: list[tuple[subprocess.Popen[str], str]],
                                          args: tuple[str, ...], url_host: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "batchmove", "sandbox", "--port", "0", *args],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    served.append((proc, url_host))
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else ""
    if url_host == "[::1]" and not line:
        pytest.skip("no IPv6 loopback here")
    assert line.startswith(f"listening on http://{url_host}:"), line
    addresses = _listening(proc.pid)
    assert addresses
    assert all(ipaddress.ip_address(a).is_loopback for a in addresses), addresses


def test_embedded_sandbox_listens_on_loopback_only(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["openid", "group_name"],
                     ((o, "A") for o in sandbox_openids(1_000, 1)))
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{path.name}"\napi_base = "sandbox"\nout = "run"\nconfirm = false\n'
                   "create_groups = true\nconcurrency = 1\n[sandbox]\nlatency_ms = 40\n",
                   encoding="utf-8")
    running = spawn("run", str(job))
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while running.alive() and time.monotonic() < deadline and not seen:
        try:
            seen.update(_listening(running.pid))
        except psutil.Error:
            break
        time.sleep(0.05)
    child = running.finish(120)
    assert child.returncode == 0, child.stderr
    assert seen, "the embedded sandbox was never seen listening"
    assert all(ipaddress.ip_address(a).is_loopback for a in seen), seen


def test_job_file_cannot_choose_the_embedded_sandbox_host(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["openid", "group_name"],
                     ((o, "A") for o in sandbox_openids(10, 1)))
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{path.name}"\napi_base = "sandbox"\nconfirm = false\n'
                   '[sandbox]\nhost = "0.0.0.0"\n', encoding="utf-8")
    child = batchmove("run", str(job), "--out", str(tmp_path / "run"),
                      wrap=private_network())
    line = assert_one_line_error(child, 2)
    assert "host" in line
