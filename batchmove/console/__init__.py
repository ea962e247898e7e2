"""`batchmove serve`: a local web console where analysts upload a spreadsheet, read the plan,
approve it, watch the run and download its reports.

    runfiles   the console's files in a run directory; ids; job.toml writer
    planning   upload/job file -> job.toml, digest, plan (in a planning process)
    runs       child processes (`batchmove run` / `verify`) and each run's state
    progress   live figures from the ledger, at most one poll a second per run
    service    the actions (plan, approve, stop, resume, verify, rollback) over those
    security   key, Host and Origin checks, a log without query strings
    jsonapi    /api/ (the pages use it too); app: pages and `serve`
"""

from __future__ import annotations

from batchmove.console.app import make_app, serve
from batchmove.console.service import Console, ConsoleConfig, read_defaults

__all__ = ["Console", "ConsoleConfig", "make_app", "read_defaults", "serve"]
