"""Secrets: the appsecret and every issued token stay out of every output, whatever happens.

Every suite here audits its own artefacts (stdout, stderr, every file of each run directory
incl. ledger.sqlite-wal and the deflated members of report.xlsx) for the distinctive
appsecret and every token `sb.state.issued_tokens` lists: the chaos run (100,000 rows,
tokens rotating every 3 s), the 21 crash-resume processes, the 4 quota days, the hostile
files, the file-mode runs. This module adds the paths where a secret is most at risk:
- a wrong appsecret (40001 at the token endpoint, exit 3);
- a rejected WECHAT_ACCESS_TOKEN from a "token server" (exit 3);
- a `token_command` printing a real token, with every token expired mid-run (exit 3);
- classic tokens (`/cgi-bin/token?...&secret=...`: the secret travels in the URL) with token
  fetches dropped, hung and answered HTTP 502, retried until they succeed;
- in-process: the text of every exception the client raises (formatted tracebacks with their
  chained causes, reprs) with the secret in the URL and the token in the query string, and the
  result, summary and files of `run_job` when every token fetch fails.
About 15 s.
"""

from __future__ import annotations

import asyncio
import json
import time
import traceback
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchmove.errors import ApiError
from batchmove.flows.run import RunOptions, run_job
from batchmove.models import JobSpec
from batchmove.sandbox import PlatformConfig, SandboxConfig, authorizer_appid, sandbox_openids
from batchmove.wechat.client import WeChatClient
from batchmove.wechat.token import EnvTokenSource, SecretTokenSource
from tests.support.engine import QuietEvents
from tests.support.processes import (
    APPID,
    SECRET,
    LeakAudit,
    ThreadedSandbox,
    batchmove,
    cli_env,
    leaks,
    secrets_of,
    spawn,
    write_csv,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SEED = 8
FOLLOWERS = sandbox_openids(3_000, SEED)
WRONG_SECRET = "rel-WrongSecret-Hq3Ty8Rm1Vc6"
SERVER_TOKEN = "rel-ServerToken-Jw5Nz0Kp7Bd2Xs4"


@pytest.fixture
def sandbox() -> Iterator[ThreadedSandbox]:
    config = SandboxConfig(users=len(FOLLOWERS), seed=SEED, secret=SECRET, groups=["A"])
    with ThreadedSandbox(config) as running:
        yield running


def _input(tmp: Path, n: int = 500) -> Path:
    return write_csv(tmp / "in.csv", ["openid", "group_name"], ((o, "A") for o in FOLLOWERS[:n]))


def _run(sandbox: ThreadedSandbox, tmp: Path, *extra: str,
         env: dict[str, str] | None = None, job: Path | None = None) -> LeakAudit:
    run_dir = tmp / "run"
    target = str(job) if job else str(_input(tmp))
    child = batchmove("run", target, "--api-base", sandbox.base_url, "--out", str(run_dir),
                      "--yes", "--create-groups", *extra, env=env or cli_env())
    audit = LeakAudit(roots=[run_dir])
    audit.add_child("run", child)
    audit.texts["exit code"] = str(child.returncode)
    return audit


def test_wrong_appsecret(sandbox: ThreadedSandbox, tmp_path: Path) -> None:
    audit = _run(sandbox, tmp_path, env=cli_env(secret=WRONG_SECRET))
    assert audit.texts["exit code"] == "3"
    assert "check the app secret" in audit.texts["stderr of run"]
    audit.extra_secrets.append(WRONG_SECRET)
    audit.check(sandbox.state)


def test_rejected_token_from_a_token_server(sandbox: ThreadedSandbox, tmp_path: Path) -> None:
    env = cli_env(WECHAT_ACCESS_TOKEN=SERVER_TOKEN)
    audit = _run(sandbox, tmp_path, env=env)
    assert audit.texts["exit code"] == "3"
    assert "WECHAT_ACCESS_TOKEN" in audit.texts["stderr of run"]
    assert sandbox.state.calls["stable_token"] == 0  # never fetched a token of its own
    audit.extra_secrets.append(SERVER_TOKEN)
    audit.check(sandbox.state)


def _fetch_token(sandbox: ThreadedSandbox) -> str:
    body = json.dumps({"grant_type": "client_credential", "appid": APPID, "secret": SECRET})
    request = urllib.request.Request(f"{sandbox.base_url}/cgi-bin/stable_token",
                                     data=body.encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:  # 127.0.0.1 only
        token: str = json.loads(answer.read())["access_token"]
    return token


def test_token_command_with_tokens_expiring_mid_run(sandbox: ThreadedSandbox,
                                                    tmp_path: Path) -> None:
    token = _fetch_token(sandbox)
    path = _input(tmp_path, 3_000)
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{path.name}"\nconcurrency = 1\nrate = 0\n'
                   f"[credentials]\ntoken_command = \"printf %s {token}\"\n", encoding="utf-8")
    sandbox.set_faults(latency_ms=5, fault_endpoints=["groups/members/batchupdate"])
    run_dir = tmp_path / "run"
    running = spawn("run", str(job), "--api-base", sandbox.base_url, "--out", str(run_dir),
                    "--yes", "--create-groups", env=cli_env(WECHAT_APPSECRET=""))
    while running.alive() and sandbox.state.calls["groups/members/batchupdate"] < 5:
        time.sleep(0.005)
    sandbox.call(sandbox.state.expire_tokens)
    child = running.finish(120)
    assert child.returncode == 3, child.stderr
    assert "'printf'" in child.stderr
    audit = LeakAudit(roots=[run_dir])
    audit.add_child("token command run", child)
    audit.check(sandbox.state)


def test_classic_tokens_fetched_through_faults(sandbox: ThreadedSandbox, tmp_path: Path) -> None:
    """The secret rides in the token URL; drops, hangs and 502s of that URL are retried."""
    sandbox.set_faults(drop_rate=0.3, hang_rate=0.2, http_error_rate=0.2, token_ttl=2.0,
                       fault_endpoints=["token"])
    path = _input(tmp_path, 3_000)
    job = tmp_path / "job.toml"
    job.write_text(f'input = "{path.name}"\ntimeout = 0.5\nretries = 20\nrate = 0\n'
                   'concurrency = 4\n[credentials]\ntoken_kind = "classic"\n', encoding="utf-8")
    audit = _run(sandbox, tmp_path, job=job)
    assert audit.texts["exit code"] in ("0", "3"), audit.texts["stderr of run"]
    assert sandbox.state.calls["token"] >= 2
    audit.check(sandbox.state)


def _exception_text(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        parts += [repr(seen), str(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_exception_texts_in_process(sandbox: ThreadedSandbox) -> None:
    texts: dict[str, str] = {}

    async def scenario() -> None:
        classic = SecretTokenSource(APPID, SECRET, "classic")
        async with WeChatClient(sandbox.base_url, classic, timeout=0.3) as client:
            texts["reprs"] = f"{client!r} {client.tokens!r} {classic!r}"
            for faults in ({"drop_rate": 1.0}, {"hang_rate": 1.0}, {"http_error_rate": 1.0},
                           {"error_rate": 1.0}):
                sandbox.set_faults(**faults, fault_endpoints=["token"])
                try:
                    await client.get_groups()
                except ApiError as exc:
                    texts[f"token fetch {faults}"] = _exception_text(exc)
                sandbox.set_faults(drop_rate=0, hang_rate=0, http_error_rate=0, error_rate=0)
            await client.get_groups()  # a real token now sits in every query string
            for faults in ({"drop_rate": 1.0}, {"hang_rate": 1.0}, {"http_error_rate": 1.0}):
                sandbox.set_faults(**faults, fault_endpoints=["groups/get"])
                try:
                    await client.get_groups()
                except ApiError as exc:
                    texts[f"call {faults}"] = _exception_text(exc)
                sandbox.set_faults(drop_rate=0, hang_rate=0, http_error_rate=0)
            sandbox.call(sandbox.state.expire_tokens)
            sandbox.set_faults(error_rate=1.0, fault_endpoints=["token"])
            try:
                await client.get_groups()
            except ApiError as exc:
                texts["refresh failing"] = _exception_text(exc)
        env = EnvTokenSource("TOKEN", {"TOKEN": SERVER_TOKEN})
        async with WeChatClient("http://127.0.0.1:9", env, timeout=0.3) as unreachable:
            try:
                await unreachable.get_groups()
            except ApiError as exc:
                texts["unreachable"] = _exception_text(exc)

    asyncio.run(scenario())
    assert len(texts) >= 8, sorted(texts)
    found = leaks(secrets_of(sandbox.state, [SERVER_TOKEN]), texts)
    assert not found, found


def test_run_job_in_process_when_every_token_fetch_fails(
        sandbox: ThreadedSandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WECHAT_APPID", APPID)
    monkeypatch.setenv("WECHAT_APPSECRET", SECRET)
    monkeypatch.delenv("WECHAT_ACCESS_TOKEN", raising=False)
    sandbox.set_faults(drop_rate=1.0, fault_endpoints=["stable_token"])
    spec = JobSpec(input=_input(tmp_path), name="t", api_base=sandbox.base_url,
                   out=tmp_path / "run", rate=0.0, retries=2, timeout=0.5, create_groups=True)
    try:
        result = asyncio.run(run_job(spec, RunOptions(), QuietEvents()))
        texts = {"message": result.message, "summary": json.dumps(result.summary)}
    except Exception as exc:  # any escape is itself scanned, then reported
        texts = {"exception": _exception_text(exc)}
    found = leaks(secrets_of(sandbox.state), texts, [tmp_path / "run"])
    assert not found, found
    assert "message" in texts, texts


def test_third_party_platform_paths(tmp_path: Path) -> None:
    """A platform's component secret, tickets, component and authorizer tokens and refresh
    tokens (rotated ones included) stay out of every output: a good run, `accounts sync`
    and `accounts list`, a wrong component secret, a stale ticket, a revoked account. The
    machine's state directory is the one place they live (mode 600), so it is not audited."""
    config = PlatformConfig(authorizers=2, account={"users": 300, "groups": ["A"]})
    with ThreadedSandbox(platform=config) as sandbox:
        platform = sandbox.sb.platform if sandbox.sb else None
        assert platform is not None
        (tmp_path / "ticket").write_text(platform.latest_ticket)
        rows = [(o, "A") for o in sandbox_openids(300, 0)]
        write_csv(tmp_path / "in.csv", ["openid", "to_group_name"], rows)
        job = tmp_path / "job.toml"
        job.write_text(f'input = "in.csv"\napi_base = "{sandbox.base_url}"\nout = "runs/a"\n'
                       f'accounts = ["{authorizer_appid(0)}"]\n[credentials]\ncomponent = true'
                       '\nticket_file = "ticket"\n', encoding="utf-8")
        env = cli_env(WECHAT_COMPONENT_APPID=config.component_appid,
                      WECHAT_COMPONENT_SECRET=config.component_secret,
                      BATCHMOVE_STATE_DIR=str(tmp_path / "state"))
        audit = LeakAudit(roots=[tmp_path / "runs"])
        steps = [("run", ["run", str(job), "--yes"], env, 0),
                 ("sync", ["accounts", "sync", str(job)], env, 0),
                 ("list", ["accounts", "list", str(job), "--json"], env, 0),
                 ("wrong secret", ["accounts", "sync", str(job)],
                  {**env, "WECHAT_COMPONENT_SECRET": WRONG_SECRET,
                   "BATCHMOVE_STATE_DIR": str(tmp_path / "state2")}, 3)]
        for label, args, step_env, code in steps:
            child = batchmove(*args, env=step_env)
            assert child.returncode == code, (label, child.stderr)
            audit.add_child(label, child)
        sandbox.call(platform.expire_tickets)
        stale = batchmove("run", str(job), "--yes", "--out", str(tmp_path / "runs/b"),
                          env={**env, "BATCHMOVE_STATE_DIR": str(tmp_path / "state3")})
        assert stale.returncode == 3, stale.stderr
        audit.add_child("stale ticket", stale)
        sandbox.call(lambda: platform.revoke(authorizer_appid(0)))
        sandbox.call(platform.accounts[authorizer_appid(0)].state.expire_tokens)
        revoked = batchmove("run", str(job), "--yes", "--restart", env=env)
        audit.add_child("revoked", revoked)
        assert revoked.returncode == 3, revoked.stderr
        audit.extra_secrets += [*platform.secrets, WRONG_SECRET]
        audit.check(platform.first)


def test_the_audit_finds_a_planted_secret(tmp_path: Path) -> None:
    """The scanner itself: a token in a WAL-like file and inside a deflated xlsx member."""
    (tmp_path / "ledger.sqlite-wal").write_bytes(b"\x00" * 100 + SERVER_TOKEN.encode())
    with zipfile.ZipFile(tmp_path / "report.xlsx", "w", zipfile.ZIP_DEFLATED) as book:
        book.writestr("xl/worksheets/sheet1.xml", f"<c><v>{SECRET}</v></c>" * 50)
    found = leaks(secrets_of(None, [SERVER_TOKEN]), {"stderr": "fine"}, [tmp_path])
    assert sorted(found) == sorted([f"{tmp_path}/ledger.sqlite-wal: token #1",
                                    f"{tmp_path}/report.xlsx!xl/worksheets/sheet1.xml: appsecret"])
