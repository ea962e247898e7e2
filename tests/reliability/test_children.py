"""Child processes: nothing batchmove starts speaks for it, and nothing outlives it.

Figures: a sandbox of 24,000 followers; jobs of 3,000 users each, rate-limited (20 calls/s) so
a run lasts seconds and can be interrupted while it sends.
- A token command that writes a secret-shaped line to stderr and prints a valid token: the run
  with `--log-format json` has only JSON lines on stderr, and the line is nowhere. Under
  `--parallel 2` with a second job whose token command fails (stderr, exit 5), each job's
  result line is its own verdict (exit status and a redacted last line for the failing one).
- `batchmove run A.toml B.toml --parallel 2` SIGKILLed while both children send: the children
  get SIGTERM from the kernel (PR_SET_PDEATHSIG), stop within seconds (exit 143, the sandbox's
  call count stops growing; before the fix they sent on for 42 s), and the same command then
  finishes both jobs exactly, sending no user recorded as moved again.
- SIGINT and SIGTERM to the parent: each child stops resumably, the parent exits 130/143, the
  same command finishes both jobs exactly. About 60 s.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.processes import (
    SECRET,
    Child,
    Running,
    ThreadedSandbox,
    batchmove,
    moved_openids,
    spawn,
    write_csv,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEED = 31
FOLLOWERS = sandbox_openids(24_000, SEED)
PART = {openid: i // 3_000 for i, openid in enumerate(FOLLOWERS)}  # which job moves them
#: what a helper's stderr might say: shaped like a secret, so it must never be shown
CHATTY = "vault lease for app-Secret-7Qm2Xv9Lp4Rt8Wz1"
PY = sys.executable


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ThreadedSandbox]:
    config = SandboxConfig(users=len(FOLLOWERS), seed=SEED, secret=SECRET,
                           groups=["A", "B", "C", "D"])
    with ThreadedSandbox(config) as running:
        yield running


def _job(tmp: Path, sb: ThreadedSandbox, name: str, part: int, group: str,
         extra: str = "", rate: float = 20) -> Path:
    users = FOLLOWERS[part * 3_000:(part + 1) * 3_000]
    write_csv(tmp / f"{name}.csv", ["openid", "group_name"], ((o, group) for o in users))
    job = tmp / f"{name}.toml"
    job.write_text(f'input = "{name}.csv"\napi_base = "{sb.base_url}"\nconfirm = false\n'
                   f'rate = {rate}\nconcurrency = 2\nout = "runs/{name}"\n{extra}',
                   encoding="utf-8")
    return job


def _token_command(script: str) -> str:
    """A `[credentials]` table whose token command is this Python script."""
    return f"[credentials]\ntoken_command = '''{PY} -c \"{script}\"'''\n"


def _valid_token(sb: ThreadedSandbox) -> str:
    token, _ = sb.call(lambda: sb.state.tokens.stable(7200, False))
    return token


def test_token_command_stderr_is_never_batchmoves(sandbox: ThreadedSandbox,
                                                  tmp_path: Path) -> None:
    token = _valid_token(sandbox)
    chatty = _token_command(f"import sys; print('{CHATTY}', file=sys.stderr); print('{token}')")
    failing = _token_command(f"import sys; print('{CHATTY}', file=sys.stderr); sys.exit(5)")
    good = _job(tmp_path, sandbox, "good", 0, "A", chatty, rate=0)
    bad = _job(tmp_path, sandbox, "bad", 1, "A", failing, rate=0)
    json_run = batchmove("run", str(good), "--log-format", "json", "--create-groups",
                         cwd=tmp_path)
    assert json_run.returncode == 0, json_run.stderr[-2000:]
    events = [json.loads(line) for line in json_run.stderr.splitlines() if line.strip()]
    assert events[-1]["event"] == "run_finished"
    assert CHATTY not in json_run.output
    both = batchmove("run", str(good), str(bad), "--parallel", "2", "--create-groups",
                     "--restart", cwd=tmp_path)
    lines = both.stdout.splitlines()
    assert [line.split(": ")[0] for line in sorted(lines)] == [str(bad), str(good)]
    good_line = next(line for line in lines if line.startswith(f"{good}: "))
    bad_line = next(line for line in lines if line.startswith(f"{bad}: "))
    assert good_line.startswith(f"{good}: exit 0 (done): finished (3000 already)"), lines
    assert bad_line.startswith(f"{bad}: exit 3 "), lines
    assert "token command 'python" in bad_line
    assert "exited with status 5: vault lease for *** (" in bad_line, bad_line
    assert CHATTY not in both.output
    assert "7Qm2Xv9Lp4Rt8Wz1" not in both.output


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[-1].split()
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (pid 1 of a container may never reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _sending(sb: ThreadedSandbox, parts: list[int], calls: int) -> bool:
    """Each job (its part of the followers) has had `calls` of its users moved at least."""
    moved = Counter(PART[o] for o in list(sb.state.move_log))
    return all(moved[p] >= calls * 50 for p in parts)


def _start_two(tmp_path: Path, sb: ThreadedSandbox, first: int, target: str
               ) -> tuple[Running, list[Path]]:
    jobs = [_job(tmp_path, sb, f"job{p}", p, target) for p in (first, first + 1)]
    parent = spawn("run", *map(str, jobs), "--parallel", "2", "--create-groups",
                   cwd=tmp_path, logs=tmp_path / "logs")
    deadline = time.monotonic() + 60
    while not _sending(sb, [first, first + 1], 3):
        assert parent.alive(), parent.finish().stderr
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return parent, jobs


def _quiet_calls(sb: ThreadedSandbox, within: float) -> float:
    """Seconds until the sandbox's call count stops moving for 1 s (at most `within`)."""
    start = time.monotonic()
    count, since = sum(sb.state.calls.values()), time.monotonic()
    while time.monotonic() - since < 1.0:
        assert time.monotonic() - start < within, "calls still arriving"
        time.sleep(0.05)
        now = sum(sb.state.calls.values())
        if now != count:
            count, since = now, time.monotonic()
    return round(since - start, 2)


def _finish_exactly(tmp_path: Path, sb: ThreadedSandbox, jobs: list[Path], target: str) -> None:
    """The same command again: both jobs finish, every user in the target, and no user the
    ledgers recorded as moved is sent again."""
    recorded = set().union(*(moved_openids(tmp_path / "runs" / job.stem) for job in jobs))
    before = len(sb.state.move_log)
    again = batchmove("run", *map(str, jobs), "--parallel", "2", "--create-groups",
                      cwd=tmp_path)
    assert again.returncode == 0, again.output
    resent = recorded & set(list(sb.state.move_log)[before:])
    assert not resent, f"{len(resent)} users recorded as moved were sent again"
    group = next(g.id for g in list(sb.state.groups.values()) if g.name == target)
    for job in jobs:
        part = int(job.stem.removeprefix("job"))
        users = FOLLOWERS[part * 3_000:(part + 1) * 3_000]
        assert {sb.state.members[o] for o in users} == {group}


def test_children_die_with_a_killed_parent(sandbox: ThreadedSandbox, tmp_path: Path) -> None:
    parent, jobs = _start_two(tmp_path, sandbox, 2, "B")
    children = _children_of(parent.pid)
    assert len(children) == 2
    parent.kill(signal.SIGKILL)
    parent.finish(30)
    deadline = time.monotonic() + 15
    while any(map(_alive, children)):
        assert time.monotonic() < deadline, "the children outlived their parent by 15 s"
        time.sleep(0.05)
    quiet = _quiet_calls(sandbox, 15)
    print(f"\nchildren gone; calls stopped {quiet} s after that")
    for job in jobs:  # each stopped as on SIGTERM: its summary says so
        summary = json.loads((tmp_path / "runs" / job.stem / "summary.json").read_text())
        assert (summary["exit_code"], summary["stop_reason"]) == (143, "sigterm")
    _finish_exactly(tmp_path, sandbox, jobs, "B")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_parent_stops_each_child_resumably(
        sandbox: ThreadedSandbox, tmp_path: Path, sig: int, code: int) -> None:
    first, target = (4, "C") if sig == signal.SIGINT else (6, "D")
    parent, jobs = _start_two(tmp_path, sandbox, first, target)
    os.kill(parent.pid, sig)
    ended: Child = parent.finish(60)
    assert ended.returncode == code, ended.output
    lines = ended.stdout.splitlines()
    assert len(lines) == 2
    assert all(f": exit {code} " in line for line in lines), lines
    _finish_exactly(tmp_path, sandbox, jobs, target)
