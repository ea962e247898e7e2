"""What to type next: the commands a run's messages suggest, built so that, pasted, they do
what they say.

A hint is a command someone will paste, perhaps in a shell whose environment holds another
account's credentials. So a rerun hint repeats every setting that decides where the calls go
and which run directory they resume (the API address, the backend, the sheet, the encoding,
the target kind) whenever the run's own value is not what its job gives by itself, and
`--retry-failed` is suggested only when some failed row would really be sent again (invalid
rows never are), with `--create-groups` when their group does not exist yet.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchmove.engine.resolver import MISSING_GROUP
from batchmove.errors import BatchmoveError, DailyQuotaError, MinuteQuotaError, TransientError
from batchmove.intake import jobfile
from batchmove.models import JobSpec
from batchmove.wechat.errcodes import ERRCODES

#: settings a rerun must repeat when the run's value is not its job's: (job key, option)
_PINNED = (("api_base", "--api-base"), ("backend", "--backend"), ("sheet", "--sheet"),
           ("encoding", "--encoding"), ("target", "--target"), ("account", "--account"))


def retryable(errcodes: Iterable[int | None]) -> list[int | None]:
    """The failures `--retry-failed` sends again: no answer (None: also targets that could
    not be used, which are resolved afresh), transient and quota errcodes, and errcodes
    missing from the table."""
    again = (TransientError, MinuteQuotaError, DailyQuotaError)
    return [c for c in errcodes
            if c is None or c not in ERRCODES or issubclass(ERRCODES[c].kind, again)]


@dataclass(frozen=True, slots=True)
class RetryAdvice:
    """How many failed rows `--retry-failed` would send again, and how many of those failed
    because their group does not exist (they need `--create-groups` as well)."""

    retryable: int = 0
    missing_groups: int = 0

    @property
    def flags(self) -> tuple[str, ...]:
        if not self.retryable:
            return ()
        return ("--retry-failed", "--create-groups") if self.missing_groups else (
            "--retry-failed",)

    def hint(self) -> str:
        """The sentence a run's message ends with ("" when nothing can be retried)."""
        if not self.retryable:
            return ""
        flags = " ".join(self.flags)
        if self.missing_groups == self.retryable:
            return (f"{self.missing_groups} rows failed because their group does not exist: "
                    f"run again with {flags} to create it and move them")
        if self.missing_groups:
            return (f"{self.retryable} failed rows can be sent again ({self.missing_groups} "
                    f"of them because their group does not exist): run again with {flags}")
        return f"{self.retryable} failed rows can be sent again: run again with {flags}"


def retry_advice(failures: Mapping[tuple[int | None, str], int]) -> RetryAdvice:
    """From the failed rows counted by (errcode, errmsg) (`ledger.review.failures_by_answer`)."""
    again = set(retryable({code for code, _ in failures}))
    count = sum(n for (code, _), n in failures.items() if code in again)
    missing = sum(n for (code, msg), n in failures.items()
                  if code is None and msg.endswith(MISSING_GROUP))
    return RetryAdvice(count, missing)


def rerun_command(run_dir: Path, meta: Mapping[str, Any],
                  flags: Sequence[str] = ()) -> str | None:
    """`batchmove run JOB --out RUN_DIR [--api-base ...] [flags]`: the run again, on the same
    account and run directory; None when the ledger does not say which job it was."""
    job = meta.get("job_path") or meta.get("input")
    if not job:
        return None
    settings = meta.get("settings") or {"api_base": meta.get("api_base"),
                                        "backend": meta.get("backend")}
    own = _own_settings(Path(job), bool(meta.get("job_path")))
    pinned = [(option, str(settings[key])) for key, option in _PINNED
              if settings.get(key) is not None and settings[key] != own.get(key)]
    out = run_dir.absolute()
    if ("--account", out.name) in pinned:  # one account of several: it runs in OUT/<appid>
        out = out.parent
    words = ["batchmove", "run", str(job), "--out", str(out)]
    words += [word for pair in pinned for word in pair]
    return " ".join(shlex.quote(w) for w in (*words, *flags))


def _own_settings(job: Path, job_file: bool) -> dict[str, Any]:
    """What the job gives by itself, without options (a spreadsheet: the defaults)."""
    defaults = JobSpec(input=job, name="x")
    spec = defaults
    if job_file:
        try:
            spec = jobfile.spec_for(job)
        except BatchmoveError:  # changed or gone since: repeat every setting that is not a default
            spec = defaults
    found = {key: getattr(spec, key) for key, _ in _PINNED}
    return found | {"account": spec.single_account}
