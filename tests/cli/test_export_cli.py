"""`batchmove export` and segment job errors as a user runs them: a real process, exit codes,
and the exact first line of each message."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.support.cli import batchmove

SANDBOX_JOB = """
api_base = "sandbox"
rate = 0
[sandbox]
users = 300
page_size = 50
groups = ["老客户"]
tags = ["旧分层A"]
"""


def job(tmp_path: Path, text: str, name: str = "job.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_export_on_the_embedded_sandbox(tmp_path: Path) -> None:
    out = tmp_path / "all.csv"
    done = batchmove("export", "--out", str(out), "--job", str(job(tmp_path, SANDBOX_JOB)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"exported 300 followers to {out}"
    assert "export: about 300 followers (300 left to list, 50 a page)" in done.stderr
    with out.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["openid", "current_groupid", "current_group_name", "to_group_name"]
    assert len({r[0] for r in rows[1:]}) == 300
    assert {tuple(r[1:]) for r in rows[1:]} == {("0", "未分组", "未分组")}


def test_export_job_lends_its_select_and_ignores_its_input(tmp_path: Path) -> None:
    body = SANDBOX_JOB.replace("[sandbox]", 'input = "missing.csv"\n[select]\ngroup = 0\n'
                                            'to = "老客户"\n[sandbox]')
    out = tmp_path / "g.csv"
    done = batchmove("export", "--out", str(out), "--job", str(job(tmp_path, body)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"exported 300 followers to {out}"


@pytest.mark.parametrize(("args", "first"), [
    (["--out", "{d}/missing/x.csv"], "the output directory {d}/missing does not exist"),
    (["--out", "{d}/x.csv", "--group", "不存在"],
     "unknown group '不存在'; this account has: 未分组 (0), 黑名单 (1), 星标组 (2), 老客户 (100)"),
    (["--out", "{d}/x.csv", "--backend", "tags", "--tag", "旧分层B"], "unknown tag '旧分层B'"),
    (["--out", "{d}/x.csv", "--group", "0", "--tag", "100"],
     "choose followers by --group or by --tag, not both"),
    (["--out", "{d}/x.json"], "--out must end in .csv or .xlsx"),
])
def test_export_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str],
                                             first: str) -> None:
    argv = [a.format(d=tmp_path) for a in args]
    done = batchmove("export", *argv, "--job", str(job(tmp_path, SANDBOX_JOB)))
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("batchmove: ")]
    assert len(errors) == 1
    assert errors[0].startswith("batchmove: " + first.format(d=tmp_path)), errors[0]
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob(".x.*"))  # no checkpoint left behind


@pytest.mark.parametrize(("body", "first"), [
    ('input = "in.csv"\n[select]\ntag = "旧分层A"\nto = "高价值客户"\n',
     "give either input (a spreadsheet) or [select]"),
    ('[select]\ntag = "旧分层A"\n', '[select] needs a target: to = "name" or to_id = 120'),
    ('[select]\nto = "高价值客户"\n', '[select] needs exactly one of tag = "name"'),
    ('[select]\ntag = "A"\ngroup = 3\nto = "B"\n', '[select] needs exactly one of tag'),
    ('[select]\nall = false\nto = "B"\n', "select.all must be true, got false"),
    ('[select]\ngroup = -1\nto = "B"\n', "select.group must be a name or an id"),
    ('[select]\ngroup = "A"\nto_id = "x"\n', 'select.to_id must be an id (a whole number >= 0)'),
    ('[select]\ngroup = "A"\nto = "B"\nuntil = 3\n', "[select] unknown key 'until'"),
])
def test_bad_select_is_one_line_exit_2(tmp_path: Path, body: str, first: str) -> None:
    (tmp_path / "in.csv").write_text("openid,group_name\n", encoding="utf-8")
    path = job(tmp_path, body)
    done = batchmove("run", str(path), "--yes")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"batchmove: {path}: {first}"), done.stderr
