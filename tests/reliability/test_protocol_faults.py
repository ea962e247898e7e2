"""Protocol faults: `batchmove run` against the fault server (tests/support/faultserver.py), a
server that answers like WeChat, badly on purpose, in front of a real sandbox.

Each case is run as a user would run it (a `batchmove` process, a job file) and checked for:
the exit code, one line that names what went wrong, no group or tag created twice, the ledger's
state (intact, rows pending or settled as they should be), and that the same command then
finishes exactly against a healthy server (every follower where the input asks, `rollback.csv`
covering every moved user). Figures: 300 followers, 3 target groups (2 created), concurrency 4,
2 attempts a call, 1 s timeout. About 90 s on 2 cores, plus up to two minutes for the 45011
window, which ends with the wall-clock minute as WeChat's do.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.faultserver import Fault, RunningFaults, ThreadedFaultServer
from tests.support.processes import SECRET, Child, batchmove, ledger_check, write_csv

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

N = 300
GROUPS = ("老客户", "新客户", "沉睡用户")  # the first exists; the others are created
TAGS = ("甲", "乙", "丙")
READ, MOVE = "user/info/batchget", "groups/members/batchupdate"


@dataclass
class Case:
    fs: RunningFaults
    job: Path
    run_dir: Path
    logs: Path
    wanted: dict[str, str]  # follower -> target name
    backend: str

    def run(self, *extra: str) -> Child:
        return batchmove("run", str(self.job), "--yes", *extra, logs=self.logs)


def case_for(tmp_path: Path, fs: RunningFaults, backend: str = "groups",
             source: str = "batchget") -> Case:
    followers = sandbox_openids(N, 7)
    names = GROUPS if backend == "groups" else TAGS
    wanted = {o: names[i % 3] for i, o in enumerate(followers)}
    column = "group_name" if backend == "groups" else "tag_name"
    data = write_csv(tmp_path / "in.csv", ["openid", column], wanted.items())
    run_dir = tmp_path / "run"
    extra = f'snapshot_source = "{source}"\n' if backend == "tags" else ""
    job = tmp_path / "job.toml"
    job.write_text(
        f'input = "{data}"\napi_base = "{fs.base_url}"\nout = "{run_dir}"\n'
        f'backend = "{backend}"\nrate = 0\nconcurrency = 4\nretries = 2\ntimeout = 1.0\n'
        f'create_groups = true\n{extra}', encoding="utf-8")
    return Case(fs, job, run_dir, tmp_path / "logs", wanted, backend)


def server(backend: str = "groups") -> ThreadedFaultServer:
    config = SandboxConfig(users=N, seed=7, secret=SECRET,
                           groups=GROUPS[:1] if backend == "groups" else (),
                           tags=TAGS[:1] if backend == "tags" else ())
    return ThreadedFaultServer(config)


def stop_line(child: Child, code: int = 3) -> str:
    """The exit code, no traceback, and the one verdict line (`finished ...`/`stopped: ...`,
    with or without the `batchmove: ` prefix), before the line naming the report."""
    assert child.returncode == code, (child.returncode, child.stderr[-2000:])
    assert "Traceback" not in child.output, child.stderr[-2000:]
    lines = [line.removeprefix("batchmove: ") for line in child.output.splitlines()]
    verdicts = [line for line in lines if line.startswith(("finished", "stopped"))]
    assert len(verdicts) == 1, child.stderr[-2000:]
    return verdicts[0]


def targets_named(case: Case) -> Counter[str]:
    state = case.fs.sandbox.state
    found = state.groups.values() if case.backend == "groups" else state.tags.tags.values()
    return Counter(t.name for t in found)


def assert_nothing_created_twice(case: Case) -> None:
    twice = [name for name, n in targets_named(case).items() if n > 1]
    assert not twice, twice


def statuses(case: Case) -> dict[str, int]:
    verdict, counts = ledger_check(case.run_dir)
    assert verdict == "ok"
    return counts


def where_now(case: Case) -> dict[str, str]:
    state = case.fs.sandbox.state
    if case.backend == "groups":
        names = {g.id: g.name for g in state.groups.values()}
        return {o: names[state.members[o]] for o in case.wanted}
    tags = {t.id: t.name for t in state.tags.tags.values()}
    return {o: ";".join(tags[t] for t in state.tags.tag_ids_of(o)) for o in case.wanted}


def assert_finishes_exactly_when_healthy(case: Case) -> None:
    """The same command, the faults gone: exit 0, everyone where asked, each target once,
    every row moved, rollback.csv covering every moved user."""
    case.fs.set()
    child = case.run()
    assert stop_line(child, 0).startswith("finished ("), child.stderr[-2000:]
    assert where_now(case) == case.wanted
    assert_nothing_created_twice(case)
    assert statuses(case) == {"moved": N}
    rollback = batchmove("rollback", str(case.run_dir), logs=case.logs)
    assert rollback.returncode == 0, rollback.stderr
    with (case.run_dir / "rollback.csv").open(encoding="utf-8-sig", newline="") as f:
        assert {r["openid"] for r in csv.DictReader(f)} == set(case.wanted)


@pytest.mark.parametrize(("fault", "said"), [
    (Fault("groups/get", "drop", "groups"), "unexpected answer from groups/get: `groups` is "
                                            "missing"),
    (Fault("groups/get", "retype", "groups[*].name"), "unexpected answer from groups/get: "
                                                      "`groups[0].name` is an int"),
    (Fault("groups/get", "html"), "unexpected answer from groups/get: the body is not a JSON "
                                  "object (HTTP 200, text/html"),
], ids=["missing", "mistyped", "html"])
def test_a_group_list_out_of_contract_creates_nothing(tmp_path: Path, fault: Fault,
                                                      said: str) -> None:
    with server() as fs:
        case = case_for(tmp_path, fs)
        fs.set(fault)
        line = stop_line(case.run())
        assert line.startswith(f"stopped: {said}"), line
        assert line.endswith(f"({N} pending)"), line
        assert fault.fired == 2  # retried once (retries = 2), then the stop
        assert targets_named(case) == Counter({"未分组": 1, "黑名单": 1, "星标组": 1, "老客户": 1})
        assert fs.sandbox.state.calls.get("groups/create", 0) == 0
        assert statuses(case) == {"pending": N}
        assert_finishes_exactly_when_healthy(case)


@pytest.mark.parametrize(("path", "kind", "field"), [
    ("user_info_list", "drop", "user_info_list"),
    ("user_info_list[*].groupid", "drop", "user_info_list[0].groupid"),
    ("user_info_list[5]", "drop", "user_info_list"),
    ("user_info_list[*].subscribe", "retype", "user_info_list[0].subscribe"),
], ids=["no-list", "no-groupid", "a-user-left-out", "mistyped-subscribe"])
def test_a_snapshot_out_of_contract_moves_nobody(tmp_path: Path, path: str, kind: str,
                                                 field: str) -> None:
    with server() as fs:
        case = case_for(tmp_path, fs)
        fs.set(Fault(READ, kind, path))  # type: ignore[arg-type]
        line = stop_line(case.run())
        assert line.startswith(f"stopped: unexpected answer from {READ}: `{field}` "), line
        assert fs.sandbox.state.calls.get(MOVE, 0) == 0  # nobody moved without a snapshot
        assert statuses(case) == {"pending": N}
        assert_finishes_exactly_when_healthy(case)


@pytest.mark.parametrize("kind", ["cut", "hang"])
def test_moves_never_answered_are_read_back_not_reported_failed(tmp_path: Path,
                                                                kind: str) -> None:
    """Every batchupdate is applied and its answer cut off (or never sent after the headers):
    the rows are `unknown`, read back at the end of the run, and reported moved."""
    with server() as fs:
        case = case_for(tmp_path, fs)
        fs.set(Fault(MOVE, kind))  # type: ignore[arg-type]
        child = case.run()
        assert stop_line(child, 0).startswith(f"finished ({N} moved)"), child.stderr[-2000:]
        assert f"read back {N} users whose moves were never answered: {N} moved" in child.stderr
        assert fs.state.faults[0].fired == fs.state.calls[MOVE] >= N // 50
        assert where_now(case) == case.wanted
        assert statuses(case) == {"moved": N}
        assert_finishes_exactly_when_healthy(case)


def test_unknown_rows_whose_read_back_fails_are_settled_by_the_same_command(
        tmp_path: Path) -> None:
    with server() as fs:
        case = case_for(tmp_path, fs)
        reads = -(-N // 100)  # the snapshot's reads pass; the read back fails
        fs.set(Fault(MOVE, "hang"), Fault(READ, "errcode", errcode=-1, after=reads))
        line = stop_line(case.run())
        assert line.startswith(f"stopped: WeChat never answered the moves of {N} rows"), line
        assert statuses(case) == {"unknown": N}
        report = (case.run_dir / "report.csv").read_text(encoding="utf-8-sig")
        assert report.count(",unknown,") == N
        moves = fs.sandbox.state.calls[MOVE]
        assert_finishes_exactly_when_healthy(case)
        assert fs.sandbox.state.calls[MOVE] == moves  # settled by reading, not by resending


@pytest.mark.parametrize("times", [1, None], ids=["once", "always"])
def test_a_create_answered_out_of_contract_is_looked_up_not_repeated(
        tmp_path: Path, times: int | None) -> None:
    with server() as fs:
        case = case_for(tmp_path, fs)
        fs.set(Fault("groups/create", "drop", "group.id", times=times))
        child = case.run()
        assert stop_line(child, 0).startswith(f"finished ({N} moved)"), child.stderr[-2000:]
        assert fs.sandbox.state.calls["groups/create"] == 2  # each new name created once
        assert_nothing_created_twice(case)
        assert_finishes_exactly_when_healthy(case)


@pytest.mark.parametrize(("fault", "said"), [
    (Fault("groups/get", "errcode", errcode=40001),
     "a newly obtained token from appid="),
    (Fault("stable_token", "errcode", errcode=40001), "WeChat refused the appid/secret"),
], ids=["api", "token-endpoint"])
def test_40001_forever_stops_without_looping(tmp_path: Path, fault: Fault, said: str) -> None:
    with server() as fs:
        case = case_for(tmp_path, fs)
        fs.set(fault)
        line = stop_line(case.run())
        assert said in line, line
        assert fs.state.calls["stable_token"] <= 2  # one fetch, at most one refresh
        assert fault.fired <= 2
        assert statuses(case) == {"pending": N}
        assert_finishes_exactly_when_healthy(case)


def test_a_45011_window_is_waited_out(tmp_path: Path) -> None:
    """45011 for group creation and moves until the wall-clock minute ends: the run waits
    for the next minute instead of failing rows or hammering."""
    with server() as fs:
        case = case_for(tmp_path, fs)
        create = Fault("groups/create", "errcode", errcode=45011, minute_window=True)
        moves = Fault(MOVE, "errcode", errcode=45011, minute_window=True)
        fs.set(create, moves)
        child = case.run()
        assert stop_line(child, 0).startswith(f"finished ({N} moved)"), child.stderr[-2000:]
        assert create.fired >= 1
        assert moves.fired >= 1
        assert moves.fired <= 2 * 4  # about one refusal per worker, then the wait
        assert where_now(case) == case.wanted
        assert_nothing_created_twice(case)
        assert_finishes_exactly_when_healthy(case)


@pytest.mark.parametrize(("source", "fault", "said"), [
    ("batchget", Fault("tags/get", "drop", "tags"), "tags/get: `tags` is missing"),
    ("batchget", Fault(READ, "retype", "user_info_list[*].tagid_list"),
     f"{READ}: `user_info_list[0].tagid_list` is"),
    ("members", Fault("user/tag/get", "retype", "count"), "user/tag/get: `count` is"),
], ids=["tag-list", "tag-snapshot", "member-list"])
def test_tags_out_of_contract_tag_nobody(tmp_path: Path, source: str, fault: Fault,
                                         said: str) -> None:
    with server("tags") as fs:
        case = case_for(tmp_path, fs, "tags", source)
        fs.set(fault)
        line = stop_line(case.run())
        assert f"unexpected answer from {said}" in line, line
        assert not fs.sandbox.state.tag_log  # nobody tagged without a snapshot
        assert statuses(case) == {"pending": N}
        assert_nothing_created_twice(case)
        assert_finishes_exactly_when_healthy(case)
