"""The account registry: what the runs on one machine share about each WeChat account.

Runs on one account (API address + appid, or the token source for token-command and
token-server jobs) find each other in one SQLite file in the state directory
(`BATCHMOVE_STATE_DIR`; see `store`). It holds:

- `budget`: the rate budget, one schedule of call slots per account and endpoint shared by every
  process whatever its rate setting, with leases that lapse when their process dies; `aimd`
  moves the rate under `rate = "auto"`; `gate` is the client's `RateGate` over it; the calls
  each process sent, per endpoint (the account's day, and its run's own);
- `tokens`: one cached access token per account (and other kinds of tokens for third-party
  platforms), fetched single-flight across processes;
- `claims`: who is moving whom, so `plan` reports overlapping runs and `run` refuses them, and
  what each run plans to send, so `plan` and the runs see what is left of today's quota.

It sits beside the ledger in the layers: below the engine (which wires it into the client
through `wechat.gate`'s Protocols), above `wechat`.
"""

from __future__ import annotations

import os

from batchmove.models import JobSpec
from batchmove.registry.aimd import SAFE_START
from batchmove.registry.budget import Budget
from batchmove.registry.claims import Claims, InLedger
from batchmove.registry.gate import SharedGate
from batchmove.registry.store import Registry, account_key, state_dir
from batchmove.registry.tokens import SharedTokens
from batchmove.results import AccountRun, Overlap

__all__ = [
    "AccountRun",
    "Budget",
    "Claims",
    "InLedger",
    "Overlap",
    "Registry",
    "SharedGate",
    "SharedTokens",
    "account_key",
    "account_of",
    "shared_gate",
    "state_dir",
]


def account_of(spec: JobSpec) -> str:
    """The registry's key of the account a job talks to, as `token_source_from` picks its
    source: a token command, else a token variable, else the appid (from the environment)."""
    creds = spec.credentials
    base = spec.api_base.rstrip("/")
    if creds.component:  # an account of a third-party platform: its own rate and token
        component = os.environ.get(creds.component_appid_env, "").strip()
        return account_key(base, "component", component, spec.single_account or "")
    if creds.token_command:
        return account_key(base, "command", creds.token_command)
    if os.environ.get(creds.token_env, "").strip():
        return account_key(base, "token-env", creds.token_env)
    return account_key(base, "appid", os.environ.get(creds.appid_env, "").strip())


def shared_gate(registry: Registry, account: str, spec: JobSpec) -> SharedGate | None:
    """The gate of a job's client, its lease taken; None at `rate = 0` (no limit, and no
    registry work per call)."""
    if not spec.auto_rate and float(spec.rate) <= 0:
        return None
    fixed = None if spec.auto_rate else float(spec.rate)
    budget = Budget(registry, account, fixed_rate=fixed, max_rate=spec.max_rate)
    budget.join()
    start = SAFE_START if fixed is None else fixed
    return SharedGate(budget, auto=fixed is None, concurrency=spec.workers, start_rate=start)
