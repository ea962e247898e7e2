"""Running the docs' fenced examples as a reader would paste them (`tests/test_docs.py`).

Each runs in a copy of the checkout's `jobs/` and `sample_data/` (the current directory), with
the sandbox account's credentials in the environment:
- Python: executed as it is; a function it defines that takes no argument is then called
  (a block that only defines a scheduler's task still has that task run).
- TOML: a job file with `input` is planned (on the embedded sandbox unless it names it); with
  `[select]`, planned against a sandbox that has the groups or tags it names, some followers in
  the selection; a block of tables only (`[notify]`) is appended to a small job and planned; a
  block of settings only is an `export --job` file, and the export runs.
- sh: run by bash with `.venv/bin` first on PATH and no `WECHAT_*` of the test's (the block
  sets what it needs); port 8765 becomes a free one, and background jobs are ended with it.
  It passes when it exits 0 and no line is a traceback or a `batchmove: ` error or stop line.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import batchmove
from batchmove.sandbox import RunningSandbox, SandboxConfig
from tests.support.sandboxes import SandboxFactory

#: what a block of tables only (`[notify]`, `[sandbox]`...) is appended to
SMALL_JOB = ('name = "doc"\ninput = "../sample_data/users.xlsx"\nsheet = "名单"\n'
             'api_base = "sandbox"\ncreate_groups = true\n')
SANDBOX_PORT = "8765"  # the port the docs' sh examples use


def run_python(code: str, name: str) -> None:
    namespace: dict[str, Any] = {"__name__": f"doc_example_{name}"}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, name, "exec"), namespace)
        for value in list(namespace.values()):
            if (inspect.isfunction(value) and value.__module__ == namespace["__name__"]
                    and not inspect.signature(value).parameters):
                value()


async def run_toml(body: str, workspace: Path, sandbox_factory: SandboxFactory) -> None:
    data = tomllib.loads(body)
    path = workspace / "jobs" / "doc.toml"
    if "input" in data or "select" in data:
        path.write_text(body, encoding="utf-8")
        where = {} if data.get("api_base") == "sandbox" else {"api_base": "sandbox"}
        if "select" in data:
            where = {"api_base": (await selection_sandbox(data, sandbox_factory)).base_url}
        plan = await batchmove.plan_async(path, **where)
        assert plan.can_run, plan.blocked
        assert plan.selection is None or plan.selection["followers"] > 0, plan.selection
    elif all(isinstance(value, dict) for value in data.values()):
        path.write_text(SMALL_JOB + body, encoding="utf-8")
        plan = await batchmove.plan_async(path)
        assert plan.can_run, plan.blocked
    else:
        path.write_text(body, encoding="utf-8")
        result = await batchmove.export_async(workspace / "followers.csv", job=path)
        assert result.exit_code == 0, result.message
        assert result.rows > 0


async def selection_sandbox(job: dict[str, Any],
                            sandbox_factory: SandboxFactory) -> RunningSandbox:
    """An account with the groups or tags a segment job names, 20 followers selected."""
    select, tags = job["select"], job.get("backend") == "tags"
    names = [str(v) for k, v in select.items()
             if k in ("tag", "group", "to") and not str(v).isdigit()]
    names += [str(u) for u in job.get("untag", []) if not str(u).isdigit()]
    unique = list(dict.fromkeys(names))
    sb = await sandbox_factory(SandboxConfig(users=60, groups=[] if tags else unique,
                                             tags=unique if tags else []))
    ids = ({t["name"]: t["id"] for t in sb.state.tags.listing()} if tags
           else {g.name: g.id for g in sb.state.groups.values()})
    for openid in sb.state.followers[:20]:
        if "tag" in select:
            sb.state.tag_directly(openid, ids.get(str(select["tag"]), select["tag"]))
        elif "group" in select:
            sb.state.move_directly(openid, ids.get(str(select["group"]), select["group"]))
    return sb


def run_sh(body: str, workspace: Path) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    env = {k: v for k, v in os.environ.items() if not k.startswith("WECHAT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    script = "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + body.replace(SANDBOX_PORT, port)
    done = subprocess.run(["bash", "-c", script], cwd=workspace, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    assert "Traceback" not in said, said[-3000:]
    errors = [line for line in said.splitlines() if line.startswith("batchmove: ")]
    assert not errors, errors
