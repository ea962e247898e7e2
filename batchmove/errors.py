"""The one exception tree of batchmove, classified by what the caller must do.

    BatchmoveError                 every error batchmove raises on purpose; carries an exit code
    ├── UsageError                 bad invocation or job file (exit 2, nothing sent)
    │   └── JobFileError           a job file key is unknown, mistyped or points nowhere
    ├── InputError                 the spreadsheet cannot be read as asked (exit 2, nothing sent)
    ├── RunStateError              the run directory refuses this run (exit 2, nothing sent)
    │   ├── RunLockedError         another process holds this run's ledger
    │   ├── InputChangedError      the input changed while a run is unfinished: offer --restart
    │   └── LedgerDamagedError     the ledger is not intact (malformed, statuses, counts): its path
    ├── ConfirmationRequired       a run needs a yes that nobody can give (no TTY) (exit 2)
    ├── StoppedEarly               the run stopped but can resume with the same command (exit 3)
    │   └── StorageError           a file could not be written (disk full, read-only, I/O error,
    │                              the ledger deleted): the ledger is intact, the command resumes
    └── ApiError                   WeChat answered with an errcode, or did not answer at all
        ├── TransientError         retry with backoff: -1, HTTP 5xx, refused connections
        │   └── OutcomeUnknownError  sent, no usable answer: retry; if never answered, read back
        │       └── ProtocolError    an answer without a field its endpoint must return: retry,
        │                            then stop the run (exit 3) naming the endpoint and the field
        ├── TokenError             refresh the token once (single-flight), then retry
        ├── MinuteQuotaError       45011: wait for the next minute, then retry
        ├── DailyQuotaError        45009: stop dispatching, keep the checkpoint, resume tomorrow
        ├── RowError               this row (or a row of this batch) is bad: record it, go on
        └── FatalApiError          configuration is wrong: stop the whole run at once (exit 3)

`ApiError` subclasses are chosen from one table, `batchmove.wechat.errcodes`. Nothing in this
module may hold a token or secret: messages are built from errcodes, endpoints and redacted URLs.
"""

from __future__ import annotations

import re
from typing import Any

EXIT_OK = 0
EXIT_ROW_FAILURES = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

_TOKEN_IN_URL = re.compile(r"((?:access_token|secret|key)=)[^&\s#\"']+", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide access tokens, secrets and WeCom robot keys that travel in query strings
    (`access_token=***`, `key=***`)."""
    return _TOKEN_IN_URL.sub(r"\1***", text)


class BatchmoveError(Exception):
    """Base of every error batchmove raises on purpose."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(BatchmoveError):
    """The command line or the job asks for something that cannot be done."""


class JobFileError(UsageError):
    """A job file key is unknown, has the wrong type, or names a missing file."""


class InputError(BatchmoveError):
    """The input spreadsheet is refused as a whole (format, encoding, columns, size)."""


class RunStateError(BatchmoveError):
    """The run directory's ledger does not allow this run to start."""


class RunLockedError(RunStateError):
    """Another batchmove process is running this job right now."""


class InputChangedError(RunStateError):
    """The input or the settings changed while the previous run is unfinished."""


class LedgerDamagedError(RunStateError):
    """The ledger is damaged (not SQLite, malformed, unknown statuses, rows missing): exit 2,
    naming its path; resuming from it could send or count rows wrongly."""


class ConfirmationRequired(BatchmoveError):
    """The run must be confirmed, but there is no terminal to ask (use --yes)."""


class StoppedEarly(BatchmoveError):
    """The run stopped before finishing; the same command resumes it."""

    exit_code = EXIT_STOPPED


class StorageError(StoppedEarly):
    """A file of the run could not be written or read (disk full, read-only, I/O error, the
    ledger deleted or replaced): the ledger holds every committed result; exit 3."""


class ApiError(BatchmoveError):
    """WeChat (or the network on the way to it) refused a call."""

    exit_code = EXIT_STOPPED

    def __init__(self, errcode: int | None, errmsg: str, endpoint: str = "") -> None:
        self.errcode = errcode
        self.errmsg = redact(errmsg)
        self.endpoint = redact(endpoint)
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f" from {self.endpoint}" if self.endpoint else ""
        code = f"errcode {self.errcode}" if self.errcode is not None else "no errcode"
        return f"WeChat {code}{where}: {self.errmsg}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(errcode={self.errcode!r}, endpoint={self.endpoint!r})"

    def __reduce__(self) -> tuple[type[ApiError], tuple[Any, ...]]:
        return (type(self), (self.errcode, self.errmsg, self.endpoint))


class TransientError(ApiError):
    """A passing failure (-1, HTTP 5xx, timeout, dropped connection): retry with backoff."""


class OutcomeUnknownError(TransientError):
    """The call was sent but no usable answer came back (a timeout, a cut-off body, a dropped
    connection, a malformed answer): it may have been applied. Retried like any transient
    failure; a move never answered is settled by reading the users back, never reported as
    failed unread."""


class ProtocolError(OutcomeUnknownError):
    """WeChat answered without a field its endpoint must return, or with it of the wrong type:
    retried like a transient failure, then the run stops (exit 3), naming the endpoint and the
    field (`field`, e.g. `groups` or `user_info_list[3].groupid`)."""

    def __init__(self, errcode: int | None, errmsg: str, endpoint: str = "",
                 field: str = "") -> None:
        self.field = field
        super().__init__(errcode, errmsg, endpoint)

    def _describe(self) -> str:
        return f"unexpected answer from {self.endpoint or 'WeChat'}: {self.errmsg}"

    def __reduce__(self) -> tuple[type[ApiError], tuple[Any, ...]]:
        return (type(self), (self.errcode, self.errmsg, self.endpoint, self.field))


class TokenError(ApiError):
    """The access token is invalid or expired: refresh once and retry."""


class MinuteQuotaError(ApiError):
    """45011: the per-minute quota is used up; wait for the next minute."""

    #: the client's rate gate holds every call of the endpoint until the window turns: retry
    #: at once (the retry waits in the gate) instead of sleeping to the next minute
    managed = False


class DailyQuotaError(ApiError):
    """45009: the daily quota is used up; stop and resume after it resets."""


class RowError(ApiError):
    """The call was refused because of its data (openid, group): record it, do not retry."""


class FatalApiError(ApiError):
    """Wrong appid or secret, IP not whitelisted, unauthorised, frozen: stop the run."""
