"""`batchmove serve`: a web console a team shares: analysts upload a spreadsheet and read the
plan, someone who answers for the account approves it, everyone watches the run and downloads
its reports, and the audit log says who did what.

    people     who may do what: roles, the users file, scrypt-hashed secrets
    sessions   login sessions (the cookie's random token), failed-login throttle
    security   Host, Origin and session checks; login.py: the login page and API
    audit      the append-only audit log (a sha256 chain)
    runfiles   the console's files in a run directory; ids; job.toml writer
    planning   upload/job file -> job.toml, digest, plan (in a planning process)
    runs       child processes (`batchmove run` / `verify` / `export`), each run's state
    progress   live figures from the ledger, at most one poll a second per run
    service    the actions (plan, approve, discard, stop, resume, verify, rollback)
    history    the history's filters and pages; planview: the plan page's figures
    i18n       the page's words; messages: the library's messages, in both languages
    errtext    what a WeChat errcode means, in both languages (not WeChat's own errmsg)
    jsonapi    /api/ (the pages use it too); pages: the pages; app: the app and `serve`
"""

from __future__ import annotations

from batchmove.console.app import make_app, serve, tls_context
from batchmove.console.people import add_person, read_people
from batchmove.console.planning import read_defaults
from batchmove.console.service import Console, ConsoleConfig

__all__ = ["Console", "ConsoleConfig", "add_person", "make_app", "read_defaults",
           "read_people", "serve", "tls_context"]
