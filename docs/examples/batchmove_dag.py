"""Airflow: every night, one task per Official Account over `batchmove.run(...)`.

Dynamic task mapping makes one task instance per job file; the `batchmove` pool caps how many
accounts move at once (create it once: `airflow pools set batchmove 4 "WeChat accounts"`).
Each task is an ordinary library call: its own token, rate limit, quota, ledger, lock and
[notify]; a resumed task continues where the last one stopped.

`move_account` is plain Python (no Airflow import), so it can be tried without Airflow:
    python3 -c 'import batchmove_dag; print(batchmove_dag.move_account("jobs/sample.toml"))'
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import batchmove

#: one job file per account (paths as the Airflow workers see them)
ACCOUNTS = [
    "/srv/batchmove/jobs/acct-a.toml",
    "/srv/batchmove/jobs/acct-b.toml",
    "/srv/batchmove/jobs/acct-c.toml",
]


class AccountStopped(RuntimeError):
    """The run stopped early (quota, wrong secret, too many failures): the task fails, and
    the next run (a retry or tomorrow's) resumes it."""


def move_account(job: str) -> dict[str, Any]:
    """Run one account's job; what Airflow keeps (XCom) is the run's outcome, no follower id.

    Exit 0 and 1 succeed (row failures are in the run's failed.csv and its robot message);
    exit 3 raises, so the task shows red; 2 (bad job) raises through `BatchmoveError`.
    """
    result = batchmove.run(job)  # a library call never prompts: calling it is the yes
    outcome = {"job": job, "exit_code": result.exit_code, "stop_reason": result.stop_reason,
               "counts": dict(result.counts), "run_dir": str(result.run_dir),
               "message": result.message}
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
         catchup=False, max_active_runs=1, tags=["batchmove"],
         default_args={"retries": 1, "retry_delay": timedelta(minutes=30)})
    def batchmove_nightly() -> None:
        @task(pool="batchmove", execution_timeout=timedelta(hours=20))
        def move(job: str) -> dict[str, Any]:
            return move_account(job)

        move.expand(job=ACCOUNTS)

    batchmove_nightly()
