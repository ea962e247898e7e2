"""A local imitation of WeChat's user-group and user-tag APIs, with fault injection, for tests
and benchmarks.

    from batchmove.sandbox import SandboxConfig, running_sandbox
    async with running_sandbox(SandboxConfig(users=1000)) as sb:
        ...  # point a client at sb.base_url; inspect sb.state

Imports nothing from batchmove but the errcode table (for its errmsgs) and, for the
third-party platform's ticket push, `wechat.msgcrypt`.
"""

from __future__ import annotations

from batchmove.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_DAILY_QUOTAS,
    DEFAULT_PORT,
    DEFAULT_SECRET,
    ENDPOINTS,
    Faults,
    SandboxConfig,
    SandboxConfigError,
    is_loopback,
    sandbox_openids,
)
from batchmove.sandbox.platform import PlatformConfig, PlatformState, authorizer_appid
from batchmove.sandbox.robot import RobotState, key_hash, robot_app
from batchmove.sandbox.server import RunningSandbox, build_app, running_sandbox, serve
from batchmove.sandbox.state import SandboxGroup, SandboxState
from batchmove.sandbox.tags import SandboxTag, TagBook

__all__ = [
    "DEFAULT_APPID",
    "DEFAULT_DAILY_QUOTAS",
    "DEFAULT_PORT",
    "DEFAULT_SECRET",
    "ENDPOINTS",
    "Faults",
    "PlatformConfig",
    "PlatformState",
    "RobotState",
    "RunningSandbox",
    "SandboxConfig",
    "SandboxConfigError",
    "SandboxGroup",
    "SandboxState",
    "SandboxTag",
    "TagBook",
    "authorizer_appid",
    "build_app",
    "is_loopback",
    "key_hash",
    "robot_app",
    "running_sandbox",
    "sandbox_openids",
    "serve",
]
