"""Airflow: every night, one task per Official Account over `batchmove.run(...)`.

An agency's accounts come from its third-party platform: the first task lists them
(`batchmove.sync_accounts`, which also stores every account's refresh token for the machine),
and dynamic task mapping makes one `move` task per account; the `batchmove` pool caps how many
accounts move at once (create it once: `airflow pools set batchmove 4 "WeChat accounts"`).
Each task is an ordinary library call for one account: its own token (through the platform),
rate limit, quota, ledger, lock and [notify].

Where state lives, so that a retry on another worker or in another working directory finds it:
- `BATCHMOVE_RUNS_DIR` (an absolute path on a shared volume): each account's run directory,
  `$BATCHMOVE_RUNS_DIR/<job name>/<appid>`, with the ledger a retry resumes;
- `BATCHMOVE_STATE_DIR` (the same volume): the platform's tickets, tokens and refresh tokens;
- the job file (`BATCHMOVE_AGENCY_JOB`): `[credentials] component = true`, `accounts = "all"`,
  and an input with an `appid` column (each account moves its own rows).

A task that stops early (exit 3: the day's quota, a stale ticket) fails and is retried after
`BATCHMOVE_RETRY_DELAY_S` seconds (default 6 h); the retry resumes the same run directory, and
so would tomorrow's run.

`move_account` is plain Python (no Airflow import), so it can be tried without Airflow:
    python3 -c 'import batchmove_dag; print(batchmove_dag.move_account("jobs/sample.toml"))'
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import batchmove

#: the agency's job file (a path every worker sees)
JOB = os.environ.get("BATCHMOVE_AGENCY_JOB", "/srv/batchmove/jobs/agency.toml")
RETRY_DELAY = timedelta(seconds=float(os.environ.get("BATCHMOVE_RETRY_DELAY_S", 6 * 3600)))


class AccountStopped(RuntimeError):
    """The run stopped early (quota, stale ticket, wrong secret): the task fails, and the next
    attempt (a retry or tomorrow's run) resumes it."""


def move_account(job: str, account: str | None = None) -> dict[str, Any]:
    """Run one account's job; what Airflow keeps (XCom) is the run's outcome, no follower id.

    Exit 0 and 1 succeed (row failures are in the run's failed.csv and its robot message);
    exit 3 raises, so the task shows red; 2 (bad job) raises through `BatchmoveError`.
    """
    overrides = {"account": account} if account else {}
    result = batchmove.run(job, **overrides)  # a library call never prompts: calling it is the yes
    outcome = {"job": job, "account": account, "exit_code": result.exit_code,
               "stop_reason": result.stop_reason, "counts": dict(result.counts),
               "run_dir": str(result.run_dir), "message": result.message}
    if result.exit_code not in (batchmove.EXIT_OK, batchmove.EXIT_ROW_FAILURES):
        raise AccountStopped(result.message)
    return outcome


try:  # Airflow 3 (airflow.sdk) or 2.x (airflow.decorators); without Airflow, only the above
    from airflow.sdk import dag, task
except ImportError:
    try:
        from airflow.decorators import dag, task
    except ImportError:
        dag = task = None

if dag is not None and task is not None:
    import pendulum

    @dag(schedule="0 2 * * *", start_date=pendulum.datetime(2026, 12, 1, tz="Asia/Shanghai"),
         catchup=False, max_active_runs=1, tags=["batchmove"])
    def batchmove_nightly() -> None:
        @task(retries=2, retry_delay=timedelta(minutes=5))
        def accounts() -> list[str]:
            return batchmove.sync_accounts(JOB)

        @task(pool="batchmove", execution_timeout=timedelta(hours=20), retries=1,
              retry_delay=RETRY_DELAY)
        def move(account: str) -> dict[str, Any]:
            return move_account(JOB, account)

        move.expand(account=accounts())

    nightly = batchmove_nightly()
