"""Where a job's run directory is, so that no scheduler's working directory decides it.

A job's own `out` wins (a relative one is relative to the job file: `jobfile`). Without it,
`$BATCHMOVE_RUNS_DIR/<name>` when that variable is set (an absolute path: a relative one would
move with the working directory, so it is refused), else `runs/<name>` under the current
directory. One account of a platform job naming several gets `<that>/<appid>`, the layout
`batchmove run JOB --parallel N` gives its children.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from batchmove.errors import UsageError
from batchmove.models import JobSpec

RUNS_DIR_ENV = "BATCHMOVE_RUNS_DIR"


def placed(spec: JobSpec, environ: Mapping[str, str] = os.environ) -> JobSpec:
    """The spec with its run directory settled as the module docstring says."""
    runs = runs_dir(environ)
    if spec.out is None and runs is not None:
        spec = replace(spec, out=runs / spec.name)
    if spec.account and (spec.accounts == "all" or len(spec.accounts) > 1):
        spec = replace(spec, out=spec.out_dir / spec.account)  # one of several: OUT/<appid>
    return spec


def runs_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """`BATCHMOVE_RUNS_DIR` (absolute), or None when it is not set."""
    given = environ.get(RUNS_DIR_ENV, "").strip()
    if not given:
        return None
    path = Path(given).expanduser()
    if not path.is_absolute():
        raise UsageError(f"{RUNS_DIR_ENV} must be an absolute path, got {given!r}")
    return path
