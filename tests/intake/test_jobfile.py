"""Job files: every key read, every mistake one line naming the key and the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from batchmove.errors import JobFileError, UsageError
from batchmove.intake.jobfile import load_job, spec_for
from batchmove.models import ColumnMap, Credentials, JobSpec, Notify

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "users.csv").write_text("openid,group\n", encoding="utf-8")
    (tmp_path / "jobs").mkdir()
    return tmp_path


def write_job(job_dir: Path, body: str) -> Path:
    path = job_dir / "jobs" / "seg.toml"
    path.write_text('input = "../data/users.csv"\n' + body, encoding="utf-8")
    return path


def failure(path: Path) -> str:
    with pytest.raises(JobFileError) as info:
        load_job(path)
    assert "\n" not in info.value.message
    return info.value.message


def test_defaults_and_relative_paths(job_dir: Path) -> None:
    path = write_job(job_dir, "")
    spec = spec_for(path)
    assert spec == JobSpec(input=job_dir / "data" / "users.csv", job_path=path, name="seg")
    assert spec.out_dir == Path("runs") / "seg"


def test_every_key(job_dir: Path) -> None:
    path = write_job(job_dir, '''
name = "segment-2026-11"
sheet = 2
encoding = "gb18030"
target = "name"
api_base = "sandbox"
rate = 5
concurrency = 2
batch_size = 20
retries = 3
timeout = 2.5
max_failure_rate = 1
failure_sample = 10
create_groups = true
allow_blacklist = true
out = "../runs/segment"
confirm = false
snapshot = false
verify = true
xlsx_max_rows = 0
[columns]
openid = "粉丝"
group_name = "分组"
[credentials]
appid_env = "MY_APPID"
token_command = "get-token --main"
token_kind = "classic"
[sandbox]
users_file = "../data/users.csv"
groups = ["A"]
''')
    spec = spec_for(path)
    assert spec == JobSpec(
        input=job_dir / "data" / "users.csv", job_path=path, name="segment-2026-11", sheet=2,
        encoding="gb18030", columns=ColumnMap(openid="粉丝", group_name="分组"), target="name",
        api_base="sandbox", credentials=Credentials(appid_env="MY_APPID",
                                                    token_command="get-token --main",
                                                    token_kind="classic"),
        rate=5.0, concurrency=2, batch_size=20, retries=3, timeout=2.5, max_failure_rate=1.0,
        failure_sample=10, create_groups=True, allow_blacklist=True,
        out=job_dir / "runs" / "segment", confirm=False, snapshot=False, verify=True,
        xlsx_max_rows=0, sandbox={"users_file": str(job_dir / "data" / "users.csv"),
                                  "groups": ["A"]},
    )
    assert isinstance(spec.rate, float)


@pytest.mark.parametrize(("body", "message"), [
    ("batchsize = 10", "unknown key 'batchsize' (did you mean 'batch_size'?)"),
    ("colums = {}", "unknown key 'colums' (did you mean 'columns'?)"),
    ("wibble = 1", "unknown key 'wibble'"),
    ("[columns]\nopen_id = 'x'", "[columns] unknown key 'open_id' (did you mean 'openid'?)"),
    ("[credentials]\nappid = 'x'", "[credentials] unknown key 'appid' (did you mean 'appid_env'?)"),
    ('rate = "fast"', 'rate must be a number or "auto", got "fast"'),
    ("rate = true", 'rate must be a number or "auto", got true'),
    ("batch_size = 10.5", "batch_size must be an integer, got 10.5"),
    ('confirm = "no"', 'confirm must be true or false, got "no"'),
    ('target = "tag"', 'target must be "id", "name" or "set", got "tag"'),
    ("sheet = -1", "sheet must be a sheet name or a number counted from 0, got -1"),
    ("name = 5", "name must be a string, got 5"),
    ('name = " "', "name must not be empty"),
    ("columns = 'openid'", 'columns must be a table ([columns]), got "openid"'),
    ("[rate]\nx = 1", "[rate] is not a table here: rate is a plain key"),
    ("[columns]\nopenid = 3", "columns.openid must be a column header (a string), got 3"),
    ("[credentials]\ntoken_env = 'my token'",
     'credentials.token_env must be the NAME of an environment variable, got "my token"'),
    ("[credentials]\ntoken_kind = 'fresh'",
     'credentials.token_kind must be "stable" or "classic", got "fresh"'),
    ('encoding = "klingon"',
     "encoding 'klingon' is not an encoding Python knows (try \"gb18030\" or \"utf-8\")"),
    ("[sandbox]\nusers_file = 3", "sandbox.users_file must be a path (a string), got 3"),
    ("[sandbox]\nuser = 100", "[sandbox] unknown key 'user' (did you mean 'users'?)"),
    ("[sandbox]\nerror_rat = 0.1",
     "[sandbox] unknown key 'error_rat' (did you mean 'error_rate'?)"),
    ("[sandbox]\ngroups = 100", "sandbox.groups must be a list of strings, got 100"),
    ('[sandbox]\nusers = "many"', 'sandbox.users must be an integer, got "many"'),
    ("[sandbox]\nerror_rate = 3", "[sandbox] error_rate must be between 0 and 1, got 3"),
    ("[sandbox]\nminute_quota = 2.5", "sandbox.minute_quota must be an integer, got 2.5"),
    ("[sandbox]\ndaily_quota = 5",
     "sandbox.daily_quota must be a table of endpoint = calls, got 5"),
    ('[sandbox]\nusers_file = "none.txt"', "sandbox.users_file: no such file: {d}/jobs/none.txt"),
    ('[notify]\nping_evn = "X"', "[notify] unknown key 'ping_evn' (did you mean 'ping_env'?)"),
    ('[credentials]\ntoken_comand = "x"',
     "[credentials] unknown key 'token_comand' (did you mean 'token_command'?)"),
])
def test_bad_keys(job_dir: Path, body: str, message: str) -> None:
    path = write_job(job_dir, body + "\n")
    assert failure(path) == f"{path}: {message.format(d=job_dir)}"


@pytest.mark.parametrize(("body", "key", "use"), [
    ("[credentials]\nsecret = 'abc'", "[credentials] 'secret'", "secret_env"),
    ("[credentials]\nappsecret = 'abc'", "[credentials] 'appsecret'", "secret_env"),
    ("[credentials]\naccess_token = 'abc'", "[credentials] 'access_token'", "token_env"),
    ("[credentials]\ntoken = 'abc'", "[credentials] 'token'", "token_env"),
    ("AppSecret = 'abc'", "'AppSecret'", "secret_env"),
])
def test_secrets_are_refused(job_dir: Path, body: str, key: str, use: str) -> None:
    path = write_job(job_dir, body + "\n")
    assert failure(path) == (
        f"{path}: {key} would put a secret in the job file: keep it in an environment variable "
        f'and name the variable with [credentials] {use} = "..."')


def test_syntax_error_names_the_line(job_dir: Path) -> None:
    path = write_job(job_dir, "rate = 20\nbatch_size = = 3\n")
    assert failure(path).startswith(f"{path}: invalid TOML: Invalid value (at line 3, column 14)")


@pytest.mark.parametrize(("body", "message"), [
    ('input = "../data/nope.csv"', "input file not found: {d}/data/nope.csv"),
    ('input = "../data"', "input is not a file: {d}/data"),
    ("input = 3", "input must be a path (a string), got 3"),
    ("rate = 1", "missing required key 'input' (the spreadsheet to load) or a [select] table"),
])
def test_input_errors(job_dir: Path, body: str, message: str) -> None:
    path = job_dir / "jobs" / "seg.toml"
    path.write_text(body + "\n", encoding="utf-8")
    assert failure(path) == f"{path}: {message.format(d=job_dir)}"


@pytest.mark.parametrize(("body", "message"), [
    ('tga = "x"\nto = "A"', "[select] unknown key 'tga' (did you mean 'tag'?)"),
    ('all = true\ntoo = "A"', "[select] unknown key 'too' (did you mean 'to'?)"),
    ('groups = "x"\nto = "A"', "[select] unknown key 'groups' (did you mean 'group'?)"),
])
def test_select_typos_get_a_suggestion(job_dir: Path, body: str, message: str) -> None:
    path = job_dir / "jobs" / "seg.toml"
    path.write_text(f"[select]\n{body}\n", encoding="utf-8")
    assert failure(path) == f"{path}: {message}"


def test_unreadable_job_files(tmp_path: Path) -> None:
    assert failure(tmp_path / "none.toml") == f"{tmp_path / 'none.toml'}: job file not found"
    path = tmp_path / "bad.toml"
    path.write_bytes(b'name = "\xff"\n')
    assert failure(path) == f"{path}: the job file is not UTF-8 text"


def test_spec_for(job_dir: Path) -> None:
    data = job_dir / "data" / "users.csv"
    assert spec_for(data) == JobSpec(input=data, name="users")
    assert spec_for(write_job(job_dir, "")).name == "seg"
    with pytest.raises(UsageError, match=r"^no such file: .*missing\.csv$"):
        spec_for(job_dir / "missing.csv")
    with pytest.raises(UsageError, match=r"^not a file: .*data$"):
        spec_for(job_dir / "data")


@pytest.mark.parametrize(("changes", "message"), [
    ({"batch_size": 80}, "batch_size must be 1..50, got 80"),
    ({"batch_size": 0}, "batch_size must be 1..50, got 0"),
    ({"rate": -1.0}, 'rate must be >= 0 (0 = no limit) or "auto", got -1'),
    ({"rate": float("inf")}, 'rate must be >= 0 (0 = no limit) or "auto", got inf'),
    ({"concurrency": 0}, "concurrency must be >= 1, got 0"),
    ({"retries": 0}, "retries must be >= 1, got 0"),
    ({"timeout": -1.0}, "timeout must be > 0, got -1"),
    ({"max_failure_rate": 0.0}, "max_failure_rate must be > 0 and <= 1, got 0"),
    ({"max_failure_rate": 1.5}, "max_failure_rate must be > 0 and <= 1, got 1.5"),
    ({"failure_sample": 0}, "failure_sample must be >= 1, got 0"),
    ({"xlsx_max_rows": -1}, "xlsx_max_rows must be 0..1048575, got -1"),
    ({"api_base": "ftp://x"}, 'api_base must be "sandbox" or an http(s):// URL, got "ftp://x"'),
    ({"name": "../x"}, 'name must be usable as a directory name, got "../x"'),
    ({"sheet": -2}, "sheet must be a name or a number >= 0, got -2"),
    ({"snapshot_source": "lists"},
     'snapshot_source must be "auto", "batchget" or "members", got "lists"'),
    ({"snapshot_source": "members"}, 'snapshot_source = "members" needs backend = "tags"'),
])
def test_a_spec_checks_its_ranges_when_built(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as info:
        JobSpec(**{"input": Path("in.csv"), "name": "x", **changes})
    assert info.value.message == message
    with pytest.raises(UsageError) as info:  # a copy with a bad value is refused the same way
        JobSpec(input=Path("in.csv"), name="x").with_overrides(**changes)
    assert info.value.message == message


def test_override_fixes_a_file_value(job_dir: Path) -> None:
    path = write_job(job_dir, "batch_size = 80\n")
    with pytest.raises(UsageError, match=r"^batch_size must be 1\.\.50, got 80$"):
        spec_for(path)
    assert spec_for(path, batch_size=40).batch_size == 40
    assert spec_for(path, batch_size=40, rate=0.0).rate == 0.0  # no limit


@pytest.mark.parametrize(("overrides", "message"), [
    ({"batchsize": 10}, "override: unknown key 'batchsize' (did you mean 'batch_size'?)"),
    ({"rate": "fast"}, 'override: rate must be a number or "auto", got "fast"'),
    ({"create_groups": "yes"}, 'override: create_groups must be true or false, got "yes"'),
    ({"backend": "tag"}, 'override: backend must be "groups" or "tags", got "tag"'),
    ({"snapshot_source": 1},
     'override: snapshot_source must be "auto", "batchget" or "members", got 1'),
    ({"credentials": {"secret": "x"}}, "override: [credentials] 'secret' would put a secret"),
    ({"columns": {"open_id": "x"}}, "override: [columns] unknown key 'open_id'"),
])
def test_overrides_are_checked_like_job_keys(job_dir: Path, overrides: dict[str, Any],
                                             message: str) -> None:
    with pytest.raises(JobFileError) as info:
        spec_for(write_job(job_dir, ""), **overrides)
    assert info.value.message.startswith(message)


def test_overrides_take_paths_tables_and_sheet_numbers(job_dir: Path, tmp_path: Path) -> None:
    spec = spec_for(write_job(job_dir, ""), out=tmp_path / "r", sheet="2",
                    columns=ColumnMap(openid="粉丝"), sandbox={"users": 5}, rate=None)
    assert (spec.out, spec.sheet, spec.columns.openid) == (tmp_path / "r", 2, "粉丝")
    assert spec.sandbox == {"users": 5}
    assert spec.rate == "auto"  # None: not given


def test_example_job_documents_every_key() -> None:
    text = (ROOT / "jobs" / "example.toml").read_text(encoding="utf-8")
    for key in [*JobSpec.__dataclass_fields__, *Credentials.__dataclass_fields__,
                *ColumnMap.__dataclass_fields__, *Notify.__dataclass_fields__]:
        if key in ("credentials", "columns", "sandbox", "notify"):
            assert f"\n[{key}]\n" in text, key
        elif key == "select":  # a segment job's table: commented out, `input` is set here
            assert "\n# [select]\n" in text, key
        elif key != "job_path":
            assert f"{key} =" in text, key
    assert spec_for(ROOT / "jobs" / "example.toml").name == "example"


def test_notify_table(job_dir: Path) -> None:
    spec = spec_for(write_job(job_dir, """
[notify]
wecom_webhook_env = "BATCHMOVE_WECOM_WEBHOOK"
webhook_env = "BATCHMOVE_WEBHOOK"
ping_env = "BATCHMOVE_PING"
on = ["stop", "failure"]
"""))
    assert spec.notify == Notify("BATCHMOVE_WECOM_WEBHOOK", "BATCHMOVE_WEBHOOK",
                                 "BATCHMOVE_PING", ("stop", "failure"))
    assert spec_for(write_job(job_dir, "")).notify == Notify()
    assert not Notify().configured


URL = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=abc-secret-key"


@pytest.mark.parametrize(("body", "message"), [
    (f'[notify]\nwecom_webhook = "{URL}"', "[notify] 'wecom_webhook' would put a URL in the "
     "job file"),
    (f'[notify]\nwebhook_url = "{URL}"', 'name the variable with [notify] webhook_env = "..."'),
    (f'[notify]\nalerts = "{URL}"', 'name the variable with [notify] alerts_env = "..."'),
    (f'[notify]\nping_env = "{URL}"', "notify.ping_env must be the NAME of an environment "
     "variable, not a URL"),
    ('[notify]\nping_env = "my var"', "notify.ping_env must be the NAME of an environment "
     "variable"),
    ('[notify]\non = ["finished"]', 'notify.on must be a list of "finish", "stop" and '
     '"failure"'),
    ('[notify]\non = "finish"', "notify.on must be a list"),
    ('[notify]\nwecom_env = "X"', "[notify] unknown key 'wecom_env' (did you mean "
     "'webhook_env'?)"),
    ('notify = "X"', "notify must be a table ([notify])"),
])
def test_notify_mistakes(job_dir: Path, body: str, message: str) -> None:
    text = failure(write_job(job_dir, body))
    assert message in text
    assert "abc-secret-key" not in text


def test_a_platform_job(job_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHMOVE_RUNS_DIR", raising=False)
    path = write_job(job_dir, """
accounts = "all"
[credentials]
component = true
component_secret_env = "AGENCY_SECRET"
ticket_file = "state/ticket"
""")
    spec = spec_for(path)
    assert spec.credentials == Credentials(component=True, component_secret_env="AGENCY_SECRET",
                                           ticket_file=str(job_dir / "jobs" / "state" / "ticket"))
    assert (spec.accounts, spec.single_account) == ("all", None)
    one = spec_for(path, account="wxauth0000000000002")
    assert one.single_account == "wxauth0000000000002"
    assert one.out_dir == Path("runs") / spec.name / "wxauth0000000000002"
    listed = spec_for(write_job(job_dir, 'accounts = ["wxauth0000000000001"]\n'
                                         "[credentials]\ncomponent = true\n"))
    assert (listed.single_account, listed.out_dir) == ("wxauth0000000000001",
                                                       Path("runs") / listed.name)


@pytest.mark.parametrize(("body", "message"), [
    ('accounts = ["wx1234567890"]\n', "need [credentials] component = true"),
    ('accounts = "some"\n[credentials]\ncomponent = true\n', 'accounts must be "all" or a '
                                                              "list of appids"),
    ('accounts = ["gh_123"]\n[credentials]\ncomponent = true\n', '"gh_123" is not an appid'),
    ('[credentials]\ncomponent = "yes"\n', "credentials.component must be true or false"),
])
def test_bad_platform_jobs(job_dir: Path, body: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        spec_for(write_job(job_dir, body))


def test_runs_dir_from_the_environment(job_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    monkeypatch.setenv("BATCHMOVE_RUNS_DIR", str(tmp_path / "volume"))
    assert spec_for(write_job(job_dir, "")).out == tmp_path / "volume" / "seg"
    given = spec_for(write_job(job_dir, 'out = "mine"\n'))
    assert given.out == job_dir / "jobs" / "mine"  # the job's own out wins, relative to it
    monkeypatch.setenv("BATCHMOVE_RUNS_DIR", "relative")
    with pytest.raises(UsageError, match="must be an absolute path"):
        spec_for(write_job(job_dir, ""))
