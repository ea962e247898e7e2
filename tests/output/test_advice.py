"""The commands a run's messages suggest: pasted, they act on the same account and run."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from batchmove.engine.resolver import MISSING_GROUP
from batchmove.output.advice import RetryAdvice, rerun_command, retry_advice


@pytest.mark.parametrize(("failures", "advice", "hint"), [
    ({}, RetryAdvice(0, 0), ""),
    ({(40003, "invalid openid"): 3}, RetryAdvice(0, 0), ""),  # refused by WeChat: final
    ({(None, "no answer"): 2, (45009, "quota"): 1, (40003, "invalid openid"): 4},
     RetryAdvice(3, 0), "3 failed rows can be sent again: run again with --retry-failed"),
    ({(None, f"group 'A' {MISSING_GROUP}"): 5}, RetryAdvice(5, 5),
     "5 rows failed because their group does not exist: run again with --retry-failed "
     "--create-groups to create it and move them"),
    ({(None, f"group 'A' {MISSING_GROUP}"): 5, (-1, "system error"): 2}, RetryAdvice(7, 5),
     "7 failed rows can be sent again (5 of them because their group does not exist): run "
     "again with --retry-failed --create-groups"),
])
def test_retry_advice(failures: dict[tuple[int | None, str], int], advice: RetryAdvice,
                      hint: str) -> None:
    assert retry_advice(failures) == advice
    assert advice.hint() == hint


def job(tmp_path: Path, body: str) -> Path:
    (tmp_path / "in.csv").write_text("openid,group_name\n", encoding="utf-8")
    path = tmp_path / "job.toml"
    path.write_text('input = "in.csv"\n' + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(("body", "settings", "pinned"), [
    ("", {"api_base": "https://api.weixin.qq.com", "backend": "groups"}, []),
    ("", {"api_base": "http://127.0.0.1:8765", "backend": "tags"},
     ["--api-base", "http://127.0.0.1:8765", "--backend", "tags"]),
    ('api_base = "http://127.0.0.1:8765"\n', {"api_base": "http://127.0.0.1:8765"}, []),
    ('sheet = "名单"\n', {"sheet": "名单", "encoding": "gb18030", "target": "name"},
     ["--encoding", "gb18030", "--target", "name"]),
])
def test_a_rerun_repeats_what_the_job_does_not_say(tmp_path: Path, body: str,
                                                   settings: dict[str, str],
                                                   pinned: list[str]) -> None:
    path = job(tmp_path, body)
    command = rerun_command(tmp_path / "run", {"job_path": str(path), "settings": settings},
                            ("--retry-failed",))
    assert command is not None
    assert shlex.split(command) == ["batchmove", "run", str(path), "--out",
                                    str((tmp_path / "run").absolute()), *pinned,
                                    "--retry-failed"]


def test_a_spreadsheet_run_repeats_its_api_address(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    data.write_text("openid,group_name\n", encoding="utf-8")
    meta = {"input": str(data), "api_base": "sandbox", "backend": "groups"}  # an older ledger
    assert rerun_command(tmp_path / "run", meta) == (
        f"batchmove run {data} --out {(tmp_path / 'run').absolute()} --api-base sandbox")
    assert rerun_command(tmp_path / "run", {}) is None


def test_one_account_of_a_platform_job_reruns_in_its_own_directory(tmp_path: Path) -> None:
    path = job(tmp_path, 'accounts = "all"\n[credentials]\ncomponent = true\n')
    meta = {"job_path": str(path), "settings": {"account": "wx0123456789abcdef"}}
    command = rerun_command(tmp_path / "runs" / "wx0123456789abcdef", meta)
    assert command is not None
    assert shlex.split(command)[3:] == ["--out", str((tmp_path / "runs").absolute()),
                                        "--account", "wx0123456789abcdef"]
