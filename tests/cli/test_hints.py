"""The hints a user pastes and the lines a user reads (issue 19): each symptom as the user met
it, a real `batchmove` process, its exit code and its exact line."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from batchmove.cli.parallel import JobEnd
from batchmove.sandbox import SandboxConfig, sandbox_openids
from tests.support.cli import batchmove_async
from tests.support.engine import group_ids_by_name, user_state, write_moves
from tests.support.sandboxes import ENV, SandboxFactory

REHEARSAL = '[credentials]\nappid_env = "REHEARSAL_APPID"\nsecret_env = "REHEARSAL_SECRET"\n'


@pytest.fixture
def env() -> dict[str, str]:
    """The CLI's environment for the sandbox account, with this test's account registry."""
    return {**ENV, "BATCHMOVE_STATE_DIR": os.environ["BATCHMOVE_STATE_DIR"]}


@pytest.fixture
def shell(env: dict[str, str]) -> dict[str, str]:
    """A shell holding another account's credentials (production, say) under the usual names,
    and the rehearsal account's under the names the job file gives."""
    return {**env, "WECHAT_APPID": "wxproduction000000", "WECHAT_APPSECRET": "production-secret",
            "REHEARSAL_APPID": SandboxConfig().appid,
            "REHEARSAL_SECRET": SandboxConfig().secret}


def job_file(tmp_path: Path, body: str, rows: list[tuple[str, str]] | None = None) -> Path:
    """A job whose run directory is tmp_path/run (the CLI runs in the repository)."""
    if rows is not None:
        write_moves(tmp_path / "in.csv", rows)
        body = f'input = "{tmp_path / "in.csv"}"\n' + body
    path = tmp_path / "job.toml"
    path.write_text(f'out = "{tmp_path / "run"}"\nrate = 0\n' + body, encoding="utf-8")
    return path


def last_line(err: str) -> str:
    return err.rstrip("\n").splitlines()[-1]


async def test_the_printed_rollback_hint_undoes_the_rehearsal_not_production(
        tmp_path: Path, sandbox_factory: SandboxFactory, shell: dict[str, str]) -> None:
    sb = await sandbox_factory(SandboxConfig(users=90, groups=["A", "B"]))
    before = user_state(sb)
    rows = [(o, "AB"[i % 2]) for i, o in enumerate(sandbox_openids(90))]
    job = job_file(tmp_path, REHEARSAL, rows)
    code, _, err = await batchmove_async("run", str(job), "--api-base", sb.base_url, "--yes",
                                         env=shell)
    assert code == 0, err
    code, out, err = await batchmove_async("rollback", str(tmp_path / "run"), env=shell)
    assert code == 0, err
    hint = out.splitlines()[-1]
    assert hint == f"undo with: batchmove rollback {tmp_path / 'run'} --apply"
    argv = shlex.split(hint.removeprefix("undo with: "))[1:]
    code, _, err = await batchmove_async(*argv, env=shell)  # pasted, with no terminal
    assert code == 2
    assert last_line(err).startswith("batchmove: this run needs confirmation")
    assert user_state(sb) != before  # nothing was sent
    code, out, err = await batchmove_async(*argv, "--yes", env=shell)
    assert code == 0, err
    assert out.splitlines() == ["finished (90 moved)",
                                f"report: {tmp_path / 'run' / 'rollback' / 'report.csv'}"]
    assert f"through {sb.base_url}, in {tmp_path / 'run' / 'rollback'}" in err
    assert user_state(sb) == before  # the rehearsal account, back as it was


async def test_missing_groups_name_the_command_that_repairs_them(
        tmp_path: Path, sandbox_factory: SandboxFactory, env: dict[str, str]) -> None:
    sb = await sandbox_factory(SandboxConfig(users=60, groups=["A"]))
    openids = sandbox_openids(60)
    rows = [(o, "A" if i < 30 else "新分组") for i, o in enumerate(openids)]
    job = job_file(tmp_path, "", [*rows, ("not an openid!", "A")])
    args = ("run", str(job), "--api-base", sb.base_url, "--yes")
    code, _, err = await batchmove_async(*args, env=env)
    assert code == 1, err
    said = ("finished with row failures (30 moved, 30 failed, 1 invalid); see failed.csv; "
            "30 rows failed because their group does not exist: run again with --retry-failed "
            "--create-groups to create it and move them")
    assert err.splitlines()[-2:] == [said, f"report: {tmp_path / 'run' / 'report.csv'}"]
    code, _, err = await batchmove_async(*args, "--create-groups", env=env)  # alone: says so
    assert (code, err.splitlines()[-2]) == (1, said)
    code, _, err = await batchmove_async(*args, "--retry-failed", "--create-groups", env=env)
    assert code == 1, err  # the invalid row: nothing --retry-failed could send again
    assert err.splitlines()[-2] == ("finished with row failures (60 moved, 1 invalid); "
                                    "see failed.csv")
    new = group_ids_by_name(sb)["新分组"]
    assert len(new) == 1
    assert all(sb.state.members[o] == new[0] for o in openids[30:])


async def test_a_wrong_secret_stops_with_one_prefixed_line(
        tmp_path: Path, sandbox_factory: SandboxFactory, env: dict[str, str]) -> None:
    sb = await sandbox_factory(SandboxConfig(users=10, groups=["A"]))
    job = job_file(tmp_path, "", [(o, "A") for o in sandbox_openids(10)])
    code, out, err = await batchmove_async("run", str(job), "--api-base", sb.base_url, "--yes",
                                           env={**env, "WECHAT_APPSECRET": "wrong"})
    assert code == 3, err
    line = last_line(err)
    assert line.startswith("batchmove: stopped: ")
    assert line.count("batchmove: ") == 1
    assert "stopped: stopped" not in out + err


async def test_a_segment_listing_stop_says_stopped_once(tmp_path: Path,
                                                       env: dict[str, str]) -> None:
    job = job_file(tmp_path, 'api_base = "sandbox"\n[select]\nall = true\nto = "X"\n'
                   '[sandbox]\nusers = 20\ndaily_quota = {"user/get" = 0}\n')
    code, out, err = await batchmove_async("run", str(job), "--yes", env=env)
    assert code == 3, err
    assert last_line(err) == (
        "batchmove: listing the selection stopped: the daily API quota of user/get is used up "
        "(45009); 0 followers listed so far; run the same command again to resume")
    assert "stopped: stopped" not in out + err


def test_a_parallel_job_line_says_stopped_once() -> None:
    end = JobEnd("a.toml", 3, "stopped: WeChat errcode 40001: invalid credential")
    assert end.line == ("a.toml: exit 3 (stopped early, resumable): WeChat errcode 40001: "
                        "invalid credential")


async def test_a_file_with_no_data_rows_is_refused(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "in.csv"
    path.write_text("openid,group_name\n\n", encoding="utf-8")
    code, out, err = await batchmove_async("run", str(path), "--api-base", "sandbox", "--yes",
                                           "--out", str(tmp_path / "run"), env=env)
    assert (code, out) == (2, "")
    assert err == f"batchmove: {path}: no data rows (a header and 1 blank rows only): nothing " \
                  "to move\n"


async def test_an_empty_selection_says_so_and_exits_0(tmp_path: Path, env: dict[str, str]) -> None:
    job = job_file(tmp_path, 'api_base = "sandbox"\n[select]\ntag = "T"\nto = "X"\n'
                   '[sandbox]\nusers = 20\ntags = ["T"]\n')
    code, out, err = await batchmove_async("run", str(job), "--yes", "--quiet", env=env)
    assert code == 0, err
    assert out == "the selection is empty (tag T -> to X: no follower matches): nothing to move\n"
    assert not (tmp_path / "run" / "input.csv").exists()  # nothing frozen: listed afresh


@pytest.mark.parametrize(("table", "said"), [
    ("[sandbox]\nuser = 100", "[sandbox] unknown key 'user' (did you mean 'users'?)"),
    ("[sandbox]\nusers = 100\nerror_rate = 2", "[sandbox] error_rate must be between 0 and 1, "
     "got 2"),
    ('[notify]\nwecom_webhok_env = "X"',
     "[notify] unknown key 'wecom_webhok_env' (did you mean 'wecom_webhook_env'?)"),
])
async def test_unknown_keys_are_refused_before_anything_is_written(
        tmp_path: Path, table: str, said: str, env: dict[str, str]) -> None:
    job = job_file(tmp_path, 'api_base = "sandbox"\n' + table + "\n",
                   [(o, "A") for o in sandbox_openids(5)])
    code, out, err = await batchmove_async("run", str(job), "--yes", env=env)
    assert (code, out, err) == (2, "", f"batchmove: {job}: {said}\n")
    assert not (tmp_path / "run").exists()


async def test_plan_says_how_many_users_will_really_move(
        tmp_path: Path, sandbox_factory: SandboxFactory, env: dict[str, str]) -> None:
    """An export edited in 100 places plans 100 moves; a plain list says "up to", and
    --count-moves reads the account to know."""
    sb = await sandbox_factory(SandboxConfig(users=300, groups=["A"]))
    openids = sandbox_openids(300)
    for openid in openids[:100]:
        sb.state.move_directly(openid, 100)
    code, _, err = await batchmove_async("export", "--out", str(tmp_path / "f.csv"),
                                         "--api-base", sb.base_url, env=env)
    assert code == 0, err
    lines = (tmp_path / "f.csv").read_text(encoding="utf-8-sig").splitlines()
    edited = [line.replace(",0,未分组,未分组", ",0,未分组,A", 1) for line in lines]
    assert sum(a != b for a, b in zip(lines, edited, strict=True)) == 200
    (tmp_path / "f.csv").write_text("\n".join(edited) + "\n", encoding="utf-8")
    plain = write_moves(tmp_path / "plain.csv", [(o, "A") for o in openids])
    plan = ("plan", "--api-base", sb.base_url, "--out", str(tmp_path / "p"))
    code, out, err = await batchmove_async(*plan[:1], str(tmp_path / "f.csv"), *plan[1:],
                                           env=env)
    assert code == 0, err
    assert "  users to move: 200 (100 already in their target, by the input's current group " \
           "or tags, as exported)" in out.splitlines()
    assert "  API calls: 8 (1 groups/get, 3 user/info/batchget, 4 groups/members/batchupdate)" \
        in out.splitlines()
    code, out, err = await batchmove_async(*plan[:1], str(plain), *plan[1:], env=env)
    assert "  users to move: up to 300 (the snapshot skips users already in their target; " \
           "`plan --count-moves` counts them now with 3 user/info/batchget calls)" \
        in out.splitlines()
    assert "  API calls: up to 10 (1 groups/get, 3 user/info/batchget, " \
           "6 groups/members/batchupdate)" in out.splitlines()
    code, out, err = await batchmove_async(*plan[:1], str(plain), *plan[1:], "--count-moves",
                                           env=env)
    assert "  users to move: 200 (100 already in their target: read now, 3 user/info/batchget)" \
        in out.splitlines()


async def test_an_export_stop_is_one_prefixed_last_line(tmp_path: Path,
                                                        env: dict[str, str]) -> None:
    job = job_file(tmp_path, 'api_base = "sandbox"\n[sandbox]\nusers = 20\n'
                   'daily_quota = {"user/get" = 0}\n')
    code, _, err = await batchmove_async("export", "--out", str(tmp_path / "f.csv"), "--job",
                                         str(job), env=env)
    assert code == 3, err
    assert last_line(err) == (
        "batchmove: the daily API quota of user/get is used up (45009); 0 followers listed so "
        "far; run the same command again to resume")


async def test_an_embedded_sandbox_undo_says_it_restores_nothing(
        tmp_path: Path, env: dict[str, str]) -> None:
    job = job_file(tmp_path, 'api_base = "sandbox"\ncreate_groups = true\n',
                   [(o, "A") for o in sandbox_openids(30)])
    code, _, err = await batchmove_async("run", str(job), "--yes", env=env)
    assert code == 0, err
    run_dir = str(tmp_path / "run")
    code, out, err = await batchmove_async("rollback", run_dir, "--yes", env=env)
    assert (code, out, err) == (
        2, "", "batchmove: --yes, --restart and --quiet go with --apply (they run the undo)\n")
    code, out, err = await batchmove_async("rollback", run_dir, "--apply", "--yes", "--quiet",
                                           env=env)
    assert code == 0, err
    assert err.startswith("note: this run used the embedded sandbox, whose account ended with "
                          "the run: ")
    assert "restores nothing" in err
    assert out.splitlines()[0] == "finished (30 already)"


async def test_a_run_refused_before_sending_never_asks_for_restart(
        tmp_path: Path, sandbox_factory: SandboxFactory, env: dict[str, str]) -> None:
    """The old hint's trap: `run rollback.csv` refused for want of credentials, then the same
    with --api-base added asked for --restart. A run that sent nothing protects nothing."""
    sb = await sandbox_factory(SandboxConfig(users=40, groups=["A"]))
    data = write_moves(tmp_path / "in.csv", [(o, "A") for o in sandbox_openids(40)])
    out = ("--out", str(tmp_path / "run"), "--yes")
    bare = {k: v for k, v in env.items() if not k.startswith("WECHAT_")}
    code, _, err = await batchmove_async("run", str(data), *out, env=bare)
    assert code == 2
    assert last_line(err).startswith("batchmove: no WeChat credentials")
    code, out_text, err = await batchmove_async("run", str(data), *out, "--api-base",
                                                sb.base_url, env=env)
    assert code == 0, err
    assert out_text.splitlines()[0] == "finished (40 moved)"
