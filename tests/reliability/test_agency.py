"""An agency's night: 20 accounts of one third-party platform, 2,000 users each, one command.

The ticket arrives the way WeChat sends it: the sandbox's platform pushes it, encrypted, to a
`batchmove ticket receive` process, which stores it for the machine. Then `batchmove run
JOB --parallel 4` (`accounts = "all"`, an input with an `appid` column, 40,000 rows) runs one
process per account against the platform's 20 accounts, each with its own followers:

- every account's users are exactly where the input says, moved once each;
- one `api_component_token` for the whole batch (4 processes at once share it through the
  machine's store), one `api_authorizer_token` per account, one authorizer list (the seed);
- every rotated refresh token is the one stored;
- the batch's summary.json counts 40,000 moved (the sum of the accounts' own summaries),
  accounts.csv has one line per account, and its report.csv is in.csv row for row;
- no secret, token, ticket or refresh token in any output, run directory or report;
- the same command again (a restart) fetches no token at all and moves no one twice.
About 30 s on 2 cores. Then docs/credentials.md's rehearsal (sandbox with --platform 3, ticket
receive, accounts sync and list, a job for every account with --parallel 2, export --account)
runs block by block as written, in one shell (about 7 s).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchmove.sandbox import PlatformConfig, authorizer_appid, sandbox_openids
from batchmove.sandbox.platform import (
    DEFAULT_AES_KEY,
    DEFAULT_COMPONENT_APPID,
    DEFAULT_COMPONENT_SECRET,
    DEFAULT_MSG_TOKEN,
)
from tests.support.notify import free_port
from tests.support.processes import (
    LeakAudit,
    ThreadedSandbox,
    batchmove,
    cli_env,
    spawn,
    write_csv,
)
from tests.support.sandboxes import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ACCOUNTS = 20
USERS = 2_000
GROUPS = ["A", "B", "C"]


@pytest.fixture
def platform() -> Iterator[ThreadedSandbox]:
    config = PlatformConfig(authorizers=ACCOUNTS, account={"users": USERS, "groups": GROUPS})
    with ThreadedSandbox(platform=config) as running:
        yield running


def env_for(state: Path) -> dict[str, str]:
    return cli_env(WECHAT_COMPONENT_APPID=DEFAULT_COMPONENT_APPID,
                   WECHAT_COMPONENT_SECRET=DEFAULT_COMPONENT_SECRET,
                   WECHAT_COMPONENT_TOKEN=DEFAULT_MSG_TOKEN,
                   WECHAT_COMPONENT_AESKEY=DEFAULT_AES_KEY, BATCHMOVE_STATE_DIR=str(state))


def receive_one_ticket(platform: ThreadedSandbox, env: dict[str, str], logs: Path) -> str:
    """Start `batchmove ticket receive`, have the platform push it a ticket, stop it; what
    it said."""
    port = free_port()
    receiver = spawn("ticket", "receive", "--port", str(port), env=env, logs=logs)
    try:
        deadline = time.monotonic() + 30
        while b"listening on" not in receiver.out_path.read_bytes():
            assert receiver.alive(), "the receiver ended"
            assert time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.05)
        answer = _admin(platform, {"push_to": f"http://127.0.0.1:{port}/"})
        assert answer["push"] == {"status": 200, "answer": "success"}
    finally:
        receiver.kill(signal.SIGTERM)
        done = receiver.finish(30)
    assert done.returncode in (0, -signal.SIGTERM), done.stderr
    return done.stdout + done.stderr


def _admin(platform: ThreadedSandbox, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(f"{platform.base_url}/sandbox/platform", method="POST",
                                     data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as answer:  # 127.0.0.1 only
        result: dict[str, object] = json.loads(answer.read())
    return result


def test_twenty_accounts_in_one_command(platform: ThreadedSandbox, tmp_path: Path) -> None:
    env = env_for(tmp_path / "state")
    said = receive_one_ticket(platform, env, tmp_path / "logs")
    assert "ticket received for wxcomponent000000001" in said
    rows, expected = [], {}
    for index in range(ACCOUNTS):
        appid = authorizer_appid(index)
        for n, openid in enumerate(sandbox_openids(USERS, index)):
            rows.append((appid, openid, GROUPS[(n + index) % 3]))
            expected[(appid, openid)] = GROUPS[(n + index) % 3]
    write_csv(tmp_path / "in.csv", ["appid", "openid", "to_group_name"], rows)
    job = tmp_path / "agency.toml"
    job.write_text(f'input = "in.csv"\napi_base = "{platform.base_url}"\naccounts = "all"\n'
                   'out = "runs/nightly"\nconfirm = false\n[credentials]\ncomponent = true\n')
    first = batchmove("run", str(job), "--parallel", "4", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = [s for s in first.stdout.splitlines() if s.startswith("wxauth")]
    assert len(lines) == ACCOUNTS, first.stdout
    assert all(s.endswith(": exit 0 (done): finished (2000 moved)") for s in lines), first.stdout
    plat = platform.sb.platform if platform.sb else None
    assert plat is not None
    assert plat.calls["api_component_token"] == 1
    assert plat.calls["api_get_authorizer_list"] == 1
    assert dict(plat.authorizer_tokens) == {authorizer_appid(i): 1 for i in range(ACCOUNTS)}
    _assert_exact(platform, expected)
    _assert_refresh_tokens_stored(plat, tmp_path / "state")
    _assert_batch_files(tmp_path / "runs/nightly")

    again = batchmove("run", str(job), "--parallel", "4", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert plat.calls["api_component_token"] == 1  # every token still cached in the store
    assert sum(plat.authorizer_tokens.values()) == ACCOUNTS
    assert sum(len(a.state.move_log) for a in plat.accounts.values()) == ACCOUNTS * USERS

    audit = LeakAudit(roots=[tmp_path / "runs"], extra_secrets=plat.secrets)
    for label, child in (("first", first), ("again", again)):
        audit.add_child(label, child)
    audit.texts["receiver"] = said
    audit.check(plat.first)


def _assert_batch_files(out: Path) -> None:
    """The batch's totals are its accounts' own; its report is the input, row for row."""
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["exit_code"], summary["counts"]["moved"]) == (0, ACCOUNTS * USERS)
    mine = [json.loads((out / a["appid"] / "summary.json").read_text())
            for a in summary["accounts"]]
    assert summary["counts"] == {k: sum(m["counts"][k] for m in mine) for k in summary["counts"]}
    assert summary["rows"] == sum(m["rows"] for m in mine) == ACCOUNTS * USERS
    assert len((out / "accounts.csv").read_text().splitlines()) == ACCOUNTS + 1
    with (out / "report.csv").open(encoding="utf-8-sig", newline="") as handle:
        numbers = [int(r["row"]) for r in csv.DictReader(handle)]
    assert numbers == list(range(2, ACCOUNTS * USERS + 2))  # in.csv's own row numbers


def _assert_exact(platform: ThreadedSandbox, expected: dict[tuple[str, str], str]) -> None:
    plat = platform.sb.platform if platform.sb else None
    assert plat is not None
    for appid, account in plat.accounts.items():
        state = account.state
        names = {g.id: g.name for g in state.groups.values()}
        for openid in state.followers:
            assert names[state.members[openid]] == expected[(appid, openid)]
        assert len(state.move_log) == len(set(state.move_log)) == USERS


def _assert_refresh_tokens_stored(plat: object, state_dir: Path) -> None:
    db = sqlite3.connect(state_dir / "registry.sqlite")
    try:
        stored = {kind.removeprefix("refresh:"): value for kind, value in db.execute(
            "SELECT kind, value FROM tokens WHERE kind LIKE 'refresh:%'")}
    finally:
        db.close()
    assert stored == {appid: plat.refresh_token_of(appid)  # type: ignore[attr-defined]
                      for appid in plat.accounts}  # type: ignore[attr-defined]
    assert (state_dir / "registry.sqlite").stat().st_mode & 0o777 == 0o600


# --- docs/credentials.md's rehearsal, as a new agency user pastes it ----------------------------
WAIT_FOR_BOTH = ("for i in $(seq 120); do curl -s -o /dev/null http://127.0.0.1:{0}/sandbox/platform"
                 " && curl -s -o /dev/null http://127.0.0.1:{1}/ && break; sleep 0.5; done")


def rehearsal_script(sandbox_port: int, receiver_port: int) -> str:
    """The rehearsal's blocks in order, in one shell, as written but for two free ports; after
    the first, the wait a person does for both `listening on` lines; then `kill %1 %2`."""
    text = (REPO_ROOT / "docs" / "credentials.md").read_text(encoding="utf-8")
    section = text.partition("### Try it first against the sandbox")[2]
    blocks = re.findall(r"^```(\w+)\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert [lang for lang, _ in blocks] == ["sh", "sh", "toml", "sh", "sh"]
    lines = ["set -m"]
    for number, (lang, body) in enumerate(blocks):
        body = body.replace("8791", str(sandbox_port)).replace("8766", str(receiver_port))
        lines.append(f"cat > rehearsal.toml <<'TOML'\n{body}TOML" if lang == "toml" else body)
        if number == 0:
            lines.append(WAIT_FOR_BOTH.format(sandbox_port, receiver_port))
    lines.append("status=$?; kill %1 %2; wait; exit $status")
    return "\n".join(lines) + "\n"


def test_the_rehearsal_in_docs_credentials_runs_as_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WECHAT_", "BATCHMOVE_"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-c", rehearsal_script(free_port(), free_port())],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    assert "ticket received for wxcomponent000000001 at " in said
    assert '"push":{"status":200,"answer":"success"}' in said
    assert ("3 account(s) authorised the platform: wxauth0000000000001, wxauth0000000000002, "
            "wxauth0000000000003") in said
    assert "wxauth0000000000001  沙盒公众号1  0 of 100,000 used today, 100,000 left" in said
    assert sorted(s for s in said.splitlines() if s.startswith("wxauth") and "exit" in s) == [
        f"{authorizer_appid(i)}: exit 0 (done): finished (200 moved)" for i in range(3)]
    assert "exported 200 followers to wxauth2.csv" in said
    assert not [s for s in said.splitlines() if s.startswith("batchmove: ") or "Traceback" in s]
    summary = json.loads((tmp_path / "runs/rehearsal/summary.json").read_text())
    assert (summary["exit_code"], summary["counts"]["moved"], summary["rows"]) == (0, 600, 600)
    assert (tmp_path / "rehearsal-state/registry.sqlite").stat().st_mode & 0o777 == 0o600
