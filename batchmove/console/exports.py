"""Exports started from the console: the form's fields, the child's command, the run's state.

An export is `python -m batchmove export --out RUN_DIR/followers.csv --job RUN_DIR/job.toml
...` in its own run directory, like a run: job.toml holds only the connection keys of the
console's --defaults (api_base, [credentials], rate, [sandbox]...), console.json the command's
arguments, so resume is the same command again (the export's checkpoint continues it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from batchmove.api import EXPORT_KEYS
from batchmove.console.runfiles import CHILD_LOG, JOB_TOML
from batchmove.errors import EXIT_SIGINT, EXIT_SIGTERM, EXIT_STOPPED, UsageError

#: what the export form may set
EXPORT_FIELDS = ("backend", "groups", "tags", "format")
_FORMATS = ("csv", "xlsx")
#: the files an export offers for download
EXPORT_FILES = tuple(f"followers.{f}" for f in _FORMATS)
_EXIT_STOPPED = (EXIT_STOPPED, EXIT_SIGINT, EXIT_SIGTERM)


def read_export_settings(form: dict[str, Any]) -> dict[str, Any]:
    """The form's (or JSON body's) fields -> settings; a bad value is a UsageError."""
    backend = str(form.get("backend") or "groups")
    if backend not in ("groups", "tags"):
        raise UsageError(f'backend must be "groups" or "tags", got {backend[:30]!r}')
    fmt = str(form.get("format") or "csv").lower()
    if fmt not in _FORMATS:
        raise UsageError(f'format must be "csv" or "xlsx", got {fmt[:30]!r}')
    return {"backend": backend, "groups": _names(form.get("groups")),
            "tags": _names(form.get("tags")), "format": fmt}


def _names(value: Any) -> list[str]:
    """`a, b` or ["a", "b"] -> ["a", "b"] (names or ids; empty: every follower)."""
    items = value if isinstance(value, list) else re.split(r"[,，]", str(value or ""))
    return [str(v).strip() for v in items if str(v).strip()][:100]


def export_job(defaults: dict[str, Any]) -> dict[str, Any]:
    """The connection keys of the console's defaults: all an export takes from a job."""
    job = {k: (dict(v) if isinstance(v, dict) else v) for k, v in defaults.items()
           if k in EXPORT_KEYS}
    job["name"] = "followers"
    return job


def export_args(run_dir: Path, settings: dict[str, Any]) -> list[str]:
    """`batchmove export`'s arguments for the run directory (the same ones resume it)."""
    args = ["--out", str(run_dir / f"followers.{settings['format']}"),
            "--job", str(run_dir / JOB_TOML), "--backend", settings["backend"], "--quiet"]
    for name in settings["groups"]:
        args += ["--group", name]
    for name in settings["tags"]:
        args += ["--tag", name]
    return args


def export_state(exit_code: Any, live: bool) -> str:
    """running | finished | stopped (resumable) | failed (bad input: resuming repeats it)."""
    if live:
        return "running"
    if exit_code == 0:
        return "finished"
    if exit_code is None or exit_code in _EXIT_STOPPED or exit_code < 0:
        return "stopped"  # quota, SIGTERM/SIGINT, killed (before its handlers): resumable
    return "failed"


def last_line(run_dir: Path) -> str | None:
    """The export's last line (its result or its one-line error), from the child's log."""
    try:
        lines = (run_dir / CHILD_LOG).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    lines = [line for line in lines if line.strip()]
    return lines[-1][:500] if lines else None
