"""Notifications in tests: the robot key and ping uuid that must never leak, the environment
that points a job's `[notify]` at a sandbox's receivers, and a job file that uses them."""

from __future__ import annotations

import socket
from pathlib import Path

from batchmove.models import Notify
from batchmove.sandbox import RunningSandbox
from tests.support.engine import spread, write_moves

KEY = "3f1c9e7a-robot-key-0000-secret"
UUID = "5e2b7c10-ping-uuid-secret"
SETTINGS = Notify(wecom_webhook_env="BM_ROBOT", webhook_env="BM_HOOK", ping_env="BM_PING")


def env_for(sb: RunningSandbox, key: str = KEY) -> dict[str, str]:
    return {"BM_ROBOT": sb.robot_url(key), "BM_HOOK": f"{sb.base_url}/hook/ops",
            "BM_PING": f"{sb.base_url}/ping/{UUID}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def assert_no_secret(root: Path, *texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert UUID not in text
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data, path
            assert UUID.encode() not in data, path


NOTIFY_TABLE = """
[notify]
wecom_webhook_env = "BM_ROBOT"
webhook_env = "BM_HOOK"
ping_env = "BM_PING"
"""


def write_job(tmp_path: Path, sb: RunningSandbox, name: str = "nightly",
              notify: str = NOTIFY_TABLE, users: int = 100, seed: int = 0) -> Path:
    write_moves(tmp_path / f"{name}.csv", spread(users, ["A"], seed=seed))
    job = tmp_path / f"{name}.toml"
    job.write_text(f'input = "{name}.csv"\napi_base = "{sb.base_url}"\nconfirm = false\n'
                   f'rate = 0\nsnapshot = false\nout = "runs/{name}"\n{notify}',
                   encoding="utf-8")
    return job
