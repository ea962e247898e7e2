"""Run ids, browser file names and the job.toml writer."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from batchmove.console.runfiles import (
    display_name,
    dump_toml,
    job_name,
    new_id,
    run_path,
    safe_suffix,
)


@pytest.mark.parametrize(("run_id", "ok"), [
    ("20261201-104512-3f9a", True), ("nightly", True), ("a.b_c-d", True), ("..", False),
    ("../x", False), ("a/b", False), (".hidden", False), ("", False), ("a" * 101, False),
    ("x\x00", False), ("名单", False)])
def test_run_path_accepts_only_plain_names(tmp_path: Path, run_id: str, ok: bool) -> None:
    found = run_path(tmp_path, run_id)
    assert (found is not None) == ok
    if found is not None:
        assert found.parent == tmp_path


def test_new_ids_are_run_paths(tmp_path: Path) -> None:
    assert run_path(tmp_path, new_id()) is not None


@pytest.mark.parametrize(("filename", "suffix", "shown", "name"), [
    ("moves.CSV", ".csv", "moves.CSV", "moves"),
    ("../../etc/passwd", None, "passwd", "passwd"),
    ("C:\\Users\\an\\名单 9月.xlsx", ".xlsx", "名单 9月.xlsx", "名单_9月"),
    ("evil\x1b[31m.csv", ".csv", "evil[31m.csv", "evil_31m"),
    (".csv", None, ".csv", "csv"),
    ("", None, "upload", "upload")])
def test_browser_file_names(filename: str, suffix: str | None, shown: str, name: str) -> None:
    assert safe_suffix(filename) == suffix
    assert display_name(filename) == shown
    assert job_name(filename) == name


def test_job_toml_reads_back_as_written() -> None:
    job = {"name": "a \"quoted\" \\ name\n", "input": "input.csv", "rate": 2.5,
           "create_groups": True, "batch_size": 20, "untag": ["x", "星标"],
           "credentials": {"secret_env": "MY_SECRET"},
           "sandbox": {"users": 10, "groups": ["销售", "<img src=x>"], "weird key": 1}}
    assert tomllib.loads(dump_toml(job)) == job


def test_notify_in_the_defaults_reaches_every_uploads_job(tmp_path: Path) -> None:
    """`[notify]` in `--defaults` (env var names only) goes into each run's job.toml, so the
    child `batchmove run` notifies as a job file's own table would."""
    from batchmove.console.planning import upload_job
    from batchmove.console.service import read_defaults
    from batchmove.intake.jobfile import spec_for
    from batchmove.models import Notify

    defaults = tmp_path / "defaults.toml"
    defaults.write_text('api_base = "sandbox"\n[notify]\nwecom_webhook_env = "ROBOT"\n'
                        'ping_env = "PING"\non = ["failure"]\n', encoding="utf-8")
    (tmp_path / "in.csv").write_text("openid,group_name\n", encoding="utf-8")
    job = upload_job(read_defaults(defaults), {"rate": 5.0}, "up", "in.csv")
    path = tmp_path / "job.toml"
    path.write_text(dump_toml(job), encoding="utf-8")
    assert spec_for(path).notify == Notify(wecom_webhook_env="ROBOT", ping_env="PING",
                                           on=("failure",))


def test_a_url_in_the_defaults_notify_table_is_refused(tmp_path: Path) -> None:
    from batchmove.console.service import read_defaults
    from batchmove.errors import JobFileError

    defaults = tmp_path / "defaults.toml"
    defaults.write_text('[notify]\nwecom_webhook = "https://qyapi.weixin.qq.com/x?key=1"\n',
                        encoding="utf-8")
    with pytest.raises(JobFileError) as info:
        read_defaults(defaults)
    assert "key=1" not in info.value.message


def test_a_sandbox_from_in_the_defaults_is_relative_to_the_defaults_file(
        tmp_path: Path) -> None:
    """`[sandbox] from` in `--defaults` names an export beside the defaults file, and every
    upload's job.toml (written in its own run directory) still finds it."""
    from batchmove.console.planning import upload_job
    from batchmove.console.service import read_defaults
    from batchmove.intake.jobfile import spec_for

    (tmp_path / "conf").mkdir()
    export = tmp_path / "conf" / "account.csv"
    export.write_text("openid,current_groupid,current_group_name,to_group_name\n",
                      encoding="utf-8")
    defaults = tmp_path / "conf" / "defaults.toml"
    defaults.write_text('api_base = "sandbox"\n[sandbox]\nfrom = "account.csv"\n',
                        encoding="utf-8")
    run = tmp_path / "runs" / "up"
    run.mkdir(parents=True)
    (run / "in.csv").write_text("openid,group_name\n", encoding="utf-8")
    (run / "job.toml").write_text(
        dump_toml(upload_job(read_defaults(defaults), {}, "up", "in.csv")), encoding="utf-8")
    assert spec_for(run / "job.toml").sandbox == {"from_file": str(export)}
