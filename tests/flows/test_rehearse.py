"""`rehearse` end to end: an export of a real-looking account (a sandbox seeded through its
admin calls), a 10,000-row job whose targets mix existing and new groups, and a rehearsal that
must change exactly what the job says, roll it all back, and send nothing anywhere but the
sandbox it starts on 127.0.0.1 (the job's own `api_base` is a listening socket that counts)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import batchmove
from batchmove.flows import rehearse as rehearse_flow
from batchmove.flows.export import export_followers, export_spec
from batchmove.flows.rehearse import MARKER, Change, sandbox_config
from batchmove.registry.aimd import SAFE_START
from batchmove.sandbox import SandboxConfig
from batchmove.sandbox.seed import read_plan
from tests.support.cli import batchmove as batchmove_cli
from tests.support.sandboxes import SandboxFactory

USERS = 10_000
GROUPS = {100: "老客户", 101: "沉睡用户", 102: "VIP"}
TARGETS = ["VIP", "老客户", "新客A", "新客B", "沉睡用户"]  # two to create


@pytest.fixture
def real_api() -> Iterator[socket.socket]:
    """What the job calls the real WeChat: a socket listening on 127.0.0.1 that nobody
    accepts on; a connection attempt would wait in its backlog, where the test looks."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    yield listener
    listener.close()


def assert_never_called(listener: socket.socket) -> None:
    with pytest.raises(BlockingIOError):  # nothing waits in the backlog
        listener.accept()


@pytest.fixture
async def export_file(sandbox_factory: SandboxFactory, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> Path:
    """The real account's export: 10,000 followers over groups 0, 2 and 100-102."""
    sb = await sandbox_factory(SandboxConfig(users=USERS, groups=list(GROUPS.values())))
    for i, openid in enumerate(sb.state.followers):
        group = (0, 100, 101, 102, 2)[i % 5]
        if group:
            sb.state.move_directly(openid, group)
    monkeypatch.setenv("WECHAT_APPID", sb.state.appid)
    monkeypatch.setenv("WECHAT_APPSECRET", sb.state.secret)
    out = tmp_path / "account.csv"
    result = await export_followers(export_spec(out, api_base=sb.base_url, rate=0))
    assert result.exit_code == 0, result.message
    for name in ("WECHAT_APPID", "WECHAT_APPSECRET"):
        monkeypatch.delenv(name)
    return out


def write_job(tmp_path: Path, export: Path, api: socket.socket, rate: str = "40"
              ) -> tuple[Path, Counter[tuple[str, str]]]:
    """The job (every follower of the export to one of TARGETS), and its intent: (group
    before, group after) -> users, for the users whose group changes, from the files. Its
    `api_base` and its webhook are the listening socket `api`."""
    api_base = f"http://127.0.0.1:{api.getsockname()[1]}"
    with export.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    intent: Counter[tuple[str, str]] = Counter()
    with (tmp_path / "moves.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["openid", "to_group_name"])
        for i, row in enumerate(rows):
            target = TARGETS[(i * 3 + i // 7) % len(TARGETS)]
            writer.writerow([row["openid"], target])
            if row["current_group_name"] != target:
                intent[row["current_group_name"], target] += 1
    job = tmp_path / "job.toml"
    job.write_text(f'input = "moves.csv"\nname = "segments"\napi_base = "{api_base}"\n'
                   f'rate = {rate}\ncreate_groups = true\nout = "runs/segments"\n'
                   f'[credentials]\ntoken_command = "touch {tmp_path}/token-command-ran"\n'
                   f'[notify]\nwebhook_env = "HOOK_URL"\n', encoding="utf-8")
    return job, intent


def by_names(changes: list[Change]) -> Counter[tuple[str, str]]:
    """The printed changes by group names (a created group's id is the sandbox's)."""
    return Counter({(c.before.rsplit(" (", 1)[0], c.after.rsplit(" (", 1)[0]): c.users
                    for c in changes})


def test_rehearse_changes_what_the_job_says_and_the_rollback_restores_the_export(
        export_file: Path, tmp_path: Path, real_api: socket.socket,
        monkeypatch: pytest.MonkeyPatch) -> None:
    job, intent = write_job(tmp_path, export_file, real_api)
    monkeypatch.setenv("HOOK_URL", f"http://127.0.0.1:{real_api.getsockname()[1]}/hook")
    monkeypatch.setenv("WECHAT_APPID", "wxreal000000000001")
    monkeypatch.setenv("WECHAT_APPSECRET", "the-real-secret")
    monkeypatch.chdir(tmp_path)

    result = batchmove.rehearse(job, export_file, rate=0)

    assert result.exit_code == 0, result.message
    assert by_names(result.changes) == intent
    assert result.changed == result.intended == sum(intent.values()) > 0
    assert result.unintended == 0
    assert result.not_restored == 0
    assert "VIP (102)" in {c.after for c in result.changes}  # an existing group keeps its id
    assert result.calls["run"]["groups/create"] == 2  # 新客A, 新客B
    assert result.verify is not None
    assert result.verify.mismatches == 0
    assert result.verify.checked == result.changed
    assert result.rollback is not None
    assert result.rollback.applied is not None
    assert result.rollback.applied.exit_code == 0
    moves = result.calls["run"]["groups/members/batchupdate"]
    assert result.expected_s == pytest.approx(sum(
        n for e, n in result.calls["run"].items() if e not in ("token", "stable_token")) / 40)
    assert moves >= result.changed / 50
    assert result.run_dir == tmp_path / "runs" / "segments-rehearsal"
    assert (result.run_dir / MARKER).is_file()
    assert (result.run_dir / "report.csv").is_file()
    assert not (tmp_path / "runs" / "segments").exists()  # the real run's directory
    assert_never_called(real_api)
    assert not (tmp_path / "token-command-ran").exists()
    assert batchmove.account_status(job).runs == []  # the real account's registry entry


def test_a_second_rehearsal_replaces_the_first(export_file: Path, tmp_path: Path,
                                                real_api: socket.socket,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    job, _ = write_job(tmp_path, export_file, real_api)
    monkeypatch.chdir(tmp_path)
    first = batchmove.rehearse(job, export_file, rate=0)
    second = batchmove.rehearse(job, export_file, rate=0)
    assert first.exit_code == second.exit_code == 0
    assert second.changes == first.changes
    taken = tmp_path / "runs" / "other-rehearsal"  # not a rehearsal's: left alone
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(batchmove.UsageError, match="is not a rehearsal's run directory"):
        batchmove.rehearse(job, export_file, rate=0, out=str(tmp_path / "runs" / "other"))
    assert (taken / "keep.txt").read_text(encoding="utf-8") == "mine"


def test_the_cli_prints_the_findings_and_refuses_a_bad_export(
        export_file: Path, tmp_path: Path, real_api: socket.socket) -> None:
    job, intent = write_job(tmp_path, export_file, real_api)
    done = batchmove_cli("rehearse", str(job), "--from", str(export_file), "--rate", "0",
                         cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    before, after = next(iter(intent))
    assert f"  {before} (" in done.stdout
    assert f") -> {after} (" in done.stdout
    assert "expected time of the run: " in done.stdout
    assert "rollback: " in done.stdout
    assert "restored the export exactly" in done.stdout
    bad = tmp_path / "bad.csv"
    bad.write_text("openid,current_groupid,current_group_name,to_group_name\noA,0,x,x\n",
                   encoding="utf-8")
    refused = batchmove_cli("rehearse", str(job), "--from", str(bad), cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"batchmove: {bad} row 2: group 0 is reserved as '未分组'; the file names it 'x'"]
    plan = tmp_path / "plan.json"  # a rate edited by hand: refused, never skipped
    plan.write_text(json.dumps({"quota": {}, "rates": {"user/info/batchget": "fast"}}),
                    encoding="utf-8")
    refused = batchmove_cli("rehearse", str(job), "--from", str(export_file),
                            "--quota-from-plan", str(plan), cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"batchmove: {plan}: the rate of 'user/info/batchget' is 'fast', not a positive "
        "number of calls a second"]



async def test_rehearse_on_tags_with_untag_others(sandbox_factory: SandboxFactory,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The tags backend: each follower ends with exactly its target tag (one created)."""
    sb = await sandbox_factory(SandboxConfig(users=2_000, tags=["老客户", "VIP", "华东"]))
    for i, openid in enumerate(sb.state.followers):
        for tag in (100 + i % 3, 100 + i % 5)[: i % 3]:
            if tag <= 102:
                sb.state.tag_directly(openid, tag)
    monkeypatch.setenv("WECHAT_APPID", sb.state.appid)
    monkeypatch.setenv("WECHAT_APPSECRET", sb.state.secret)
    export = tmp_path / "tags.xlsx"
    done = await export_followers(export_spec(export, api_base=sb.base_url, rate=0,
                                              backend="tags"))
    assert done.exit_code == 0, done.message
    rows = [(o, tuple(sorted(sb.state.tags.tag_ids_of(o)))) for o in sb.state.followers]
    names = {100: "老客户", 101: "VIP", 102: "华东"}
    intent: Counter[tuple[str, str]] = Counter()
    with (tmp_path / "moves.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["openid", "tag_name"])
        for i, (openid, tids) in enumerate(rows):
            target = ("VIP", "新标签", "华东")[i % 3]
            writer.writerow([openid, target])
            before = "; ".join(names[t] for t in tids) or "(no tags)"
            if before != target:
                intent[before, target] += 1
    job = tmp_path / "job.toml"
    job.write_text('input = "moves.csv"\nbackend = "tags"\nuntag = "others"\n'
                   'create_groups = true\nrate = 0\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = await asyncio.to_thread(batchmove.rehearse, job, export)
    assert result.exit_code == 0, result.message
    assert Counter({("; ".join(n.rsplit(" (", 1)[0] for n in c.before.split("; ")),
                     c.after.rsplit(" (", 1)[0]): c.users for c in result.changes}) == intent
    assert result.unintended == 0
    assert result.not_restored == 0


def test_a_quota_stop_is_exit_3_and_still_rolled_back(
        export_file: Path, tmp_path: Path, real_api: socket.socket,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real account has 10 move calls left today (its plan says so): the rehearsal stops
    where the real run would, and what it moved is undone all the same."""
    job, intent = write_job(tmp_path, export_file, real_api)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"quota": {"groups/members/batchupdate": {
        "needed": 200, "remain": 12, "others": 2, "daily_limit": 100000, "fits_today": False,
        "days": 2}}}), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = batchmove.rehearse(job, export_file, quota_from_plan=plan, rate=0)
    assert result.exit_code == 3, result.message
    assert result.run is not None
    assert "45009" in result.run.message
    assert result.calls["run"]["groups/members/batchupdate"] > 10  # those in flight: 45009
    assert 0 < result.changed <= 10 * 50  # 10 calls of at most 50 users went through
    assert result.unintended == 0
    assert result.unmoved == sum(intent.values()) - result.changed
    assert result.rollback is not None
    assert result.rollback.applied is not None
    assert result.rollback.applied.exit_code == 0
    assert result.not_restored == 0


def test_a_follower_someone_else_moved_meanwhile_is_exit_1(
        export_file: Path, tmp_path: Path, real_api: socket.socket,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Another admin of the account moves a follower of the job while the rehearsal runs
    (here: right after the run, over the wire, to 星标组): the rehearsal says one user is not
    as the job intends and exits 1; the rollback puts that user back too."""
    job, _ = write_job(tmp_path, export_file, real_api)
    with export_file.open(encoding="utf-8-sig", newline="") as handle:
        meddled = next(row["openid"] for row in csv.DictReader(handle)
                       if row["current_groupid"] != "2")
    real_run = rehearse_flow.run_job

    async def run_then_meddle(spec: batchmove.JobSpec, *args: Any) -> Any:
        result = await real_run(spec, *args)
        base = f"{spec.api_base}/cgi-bin"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/token", params={
                    "grant_type": "client_credential",
                    "appid": os.environ[spec.credentials.appid_env],
                    "secret": os.environ[spec.credentials.secret_env]}) as resp:
                token = (await resp.json())["access_token"]
            async with http.post(f"{base}/groups/members/update",
                                 params={"access_token": token},
                                 json={"openid": meddled, "to_groupid": 2}) as resp:
                assert (await resp.json())["errcode"] == 0
        return result

    monkeypatch.setattr(rehearse_flow, "run_job", run_then_meddle)
    monkeypatch.chdir(tmp_path)
    result = batchmove.rehearse(job, export_file, rate=0)
    assert result.run is not None
    assert result.run.exit_code == 0
    assert result.exit_code == 1
    assert result.unintended == 1
    assert result.not_restored == 0
    assert "1 users not as the job intends" in result.message
    assert_never_called(real_api)


@pytest.mark.slow  # a concurrency case, in the reliability run (the default suite's budget)
def test_two_rehearsals_at_once_in_one_process_keep_their_own_credentials(
        export_file: Path, tmp_path: Path, real_api: socket.socket,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`batchmove.rehearse` works from any thread. Rehearsal A starts, B starts, A ends while
    B is between its run and its verify: B's sandbox credentials are still where its runs
    look (each sandbox's variables are its own; they used to be one set, cleared by A as it
    ended, and B's verify, needing a new token, found no appid)."""
    job, _ = write_job(tmp_path, export_file, real_api)
    with job.open("a", encoding="utf-8") as out:  # a token this short is never reused: B's
        out.write("[sandbox]\ntoken_ttl = 2\n")  # verify asks its sandbox for another
    monkeypatch.chdir(tmp_path)
    real_run = rehearse_flow.run_job
    a_ran, b_ran, a_done = threading.Event(), threading.Event(), threading.Event()

    async def run_in_turn(spec: batchmove.JobSpec, *args: Any) -> Any:
        result = await real_run(spec, *args)
        if spec.out_dir.name.startswith("a-"):
            a_ran.set()
            assert await asyncio.to_thread(b_ran.wait, 60)
        else:
            b_ran.set()
            assert await asyncio.to_thread(a_done.wait, 60)
        return result

    monkeypatch.setattr(rehearse_flow, "run_job", run_in_turn)
    found: dict[str, Any] = {}

    def rehearsal_a() -> None:
        try:
            found["a"] = batchmove.rehearse(job, export_file, rate=0,
                                            out=str(tmp_path / "runs" / "a-"))
        finally:
            a_done.set()

    thread = threading.Thread(target=rehearsal_a)
    thread.start()
    try:
        assert a_ran.wait(60)
        found["b"] = batchmove.rehearse(job, export_file, rate=0,
                                        out=str(tmp_path / "runs" / "b-"))
    finally:
        b_ran.set()
        thread.join(120)
    for name in ("a", "b"):
        assert found[name].exit_code == 0, found[name].message
        assert found[name].verify is not None
        assert found[name].not_restored == 0
    assert not [name for name in os.environ if name.startswith(rehearse_flow.ENV_PREFIX)]
    assert_never_called(real_api)


def test_row_failures_are_exit_1(export_file: Path, tmp_path: Path, real_api: socket.socket,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    job, _ = write_job(tmp_path, export_file, real_api)
    with (tmp_path / "moves.csv").open("a", encoding="utf-8") as handle:
        handle.write("oNotAFollowerOfThisAccount00,VIP\n")  # 40003 from the account
    monkeypatch.chdir(tmp_path)
    result = batchmove.rehearse(job, export_file, rate=0)
    assert result.exit_code == 1
    assert result.run is not None
    assert result.run.counts["failed"] == 1
    assert result.unintended == 0
    assert result.not_restored == 0
    assert_never_called(real_api)


def test_the_expected_time_of_an_auto_rate(export_file: Path, tmp_path: Path,
                                           real_api: socket.socket,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`rate = "auto"`: at the safe start (a bound from above, as `plan` gives it) without a
    plan or a history; at the plan's rates with one, the safe start for what it does not name."""
    job, _ = write_job(tmp_path, export_file, real_api, rate='"auto"')
    monkeypatch.chdir(tmp_path)
    blind = batchmove.rehearse(job, export_file, rate=0)
    assert blind.exit_code == 0, blind.message
    sent = {e: n for e, n in blind.calls["run"].items() if e not in ("token", "stable_token")}
    assert blind.expected_s == pytest.approx(sum(sent.values()) / SAFE_START)
    assert "safe start" in blind.rate_basis
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"quota": {}, "rates": {"groups/members/batchupdate": 20.0,
                                                       "user/info/batchget": 50.0}}),
                    encoding="utf-8")
    priced = batchmove.rehearse(job, export_file, rate=0, quota_from_plan=plan)
    run = priced.calls["run"]
    assert priced.expected_s == pytest.approx(run["groups/members/batchupdate"] / 20
                                              + run["user/info/batchget"] / 50
                                              + (run["groups/create"] + run["groups/get"])
                                              / SAFE_START)
    assert priced.rate_basis.endswith(f"groups/create, groups/get at the safe start, "
                                      f"{SAFE_START:g} calls/s")
    assert_never_called(real_api)


def test_targets_that_do_not_exist_are_meant_but_not_moved(
        export_file: Path, tmp_path: Path, real_api: socket.socket,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without create_groups the rows for 新客A and 新客B fail: exit 1, and the rehearsal
    counts their users as meant to move but not moved, never as moved otherwise."""
    job, intent = write_job(tmp_path, export_file, real_api)
    job.write_text(job.read_text(encoding="utf-8").replace("create_groups = true",
                                                           "create_groups = false"),
                   encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = batchmove.rehearse(job, export_file, rate=0)
    assert result.exit_code == 1
    new = sum(n for (_, after), n in intent.items() if after in ("新客A", "新客B"))
    assert result.unmoved == new
    assert result.changed == sum(intent.values()) - new
    assert result.unintended == 0
    assert result.not_restored == 0
    assert result.message.startswith("rehearsal: finished with row failures")


def test_a_job_without_a_snapshot_cannot_be_rehearsed(export_file: Path, tmp_path: Path,
                                                       real_api: socket.socket) -> None:
    job, _ = write_job(tmp_path, export_file, real_api)
    with pytest.raises(batchmove.UsageError, match="needs its snapshot"):
        batchmove.rehearse(job, export_file, snapshot=False)
    assert not (tmp_path / "runs").exists()


def test_the_sandbox_keeps_the_jobs_settings_but_its_followers(tmp_path: Path) -> None:
    """`[sandbox]` faults and quotas carry over (a job's own quota over the plan's); its
    followers (`users`, `users_file`, `openids`, `from`) give way to the export."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"quota": {
        "groups/members/batchupdate": {"remain": 30, "others": 0},
        "user/info/batchget": {"remain": 900, "others": 100}}}), encoding="utf-8")
    spec = batchmove.JobSpec(input=tmp_path / "in.csv", sandbox={
        "users": 5, "latency_ms": 3.0, "daily_quota": {"user/info/batchget": 7}})
    config = sandbox_config(spec, tmp_path / "account.csv", read_plan(plan))
    assert config.from_file == str(tmp_path / "account.csv")
    assert config.users == SandboxConfig().users
    assert config.latency_ms == 3.0
    assert config.daily_quota == {"groups/members/batchupdate": 30, "user/info/batchget": 7}
