"""The values that flow through the pipeline: a job's settings, input rows, groups, batches.

Frozen and free of stages: every stage imports these, none of them imports a stage. A `JobSpec`
checks its own ranges when it is built (`__post_init__`, which `dataclasses.replace` runs too),
so a spec that exists is a valid one, however it was made: job file, CLI options, Python.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple

from batchmove.errors import UsageError

TargetKind = Literal["id", "name", "set"]  # "set": a tag backend's exact set of tag ids
TokenKind = Literal["stable", "classic"]
Backend = Literal["groups", "tags"]
SnapshotSource = Literal["auto", "batchget", "members"]
SNAPSHOT_SOURCES = ("auto", "batchget", "members")

BLACKLIST_GROUP_ID = 1
MAX_BATCH = 50
MAX_USER_INFO_BATCH = 100
MAX_GROUP_NAME_CHARS = 30
XLSX_ROW_LIMIT = 1_048_575  # Excel's rows, less the header
SANDBOX = "sandbox"
AUTO: Literal["auto"] = "auto"  # rate = "auto"
DEFAULT_CONCURRENCY = 8  # with a fixed rate
AUTO_CONCURRENCY = 32  # with rate = "auto": the ceiling of the adapted concurrency


class RowStatus(StrEnum):
    """A row's state in the ledger and its `status` in the report, in the order reports list
    them (`STATUSES`)."""

    MOVED = "moved"
    ALREADY = "already"  # the snapshot showed the user already in the target group
    FAILED = "failed"  # WeChat refused it, or its group could not be resolved
    INVALID = "invalid"  # rejected by validation; never sent
    DUPLICATE = "duplicate"  # same openid and target as an earlier row; moved with it
    #: its move was sent but never answered (it may have been applied): read back to settle
    UNKNOWN = "unknown"
    PENDING = "pending"  # valid, not yet moved


#: every status a row can have, as plain strings, in the order reports list them
STATUSES: tuple[str, ...] = tuple(s.value for s in RowStatus)


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """Header names chosen by the job file; None means "find it by its usual names"."""

    openid: str | None = None
    group_id: str | None = None
    group_name: str | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where the access token comes from. Holds names of variables, never a secret."""

    appid_env: str = "WECHAT_APPID"
    secret_env: str = "WECHAT_APPSECRET"
    token_env: str = "WECHAT_ACCESS_TOKEN"
    token_command: str | None = None
    token_kind: TokenKind = "stable"
    #: a third-party platform's account: component appid and secret from these variables,
    #: the ticket from `ticket_file`, `ticket_command` or the machine's ticket store
    component: bool = False
    component_appid_env: str = "WECHAT_COMPONENT_APPID"
    component_secret_env: str = "WECHAT_COMPONENT_SECRET"
    ticket_file: str | None = None
    ticket_command: str | None = None


SelectKind = Literal["all", "group", "tag"]


@dataclass(frozen=True, slots=True)
class Selection:
    """A segment job's `[select]`: who moves (everyone, one group's or one tag's followers,
    listed from the account on the first run) and where to (`to` a name, or `to_id`)."""

    kind: SelectKind
    value: str = ""  # the group's or tag's name, or its id as digits ("" for all)
    to: str | None = None
    to_id: int | None = None

    @property
    def target(self) -> str:
        return str(self.to_id) if self.to_id is not None else str(self.to)
NotifyOutcome = Literal["finish", "stop", "failure"]
NOTIFY_OUTCOMES: tuple[NotifyOutcome, ...] = ("finish", "stop", "failure")


@dataclass(frozen=True, slots=True)
class Notify:
    """Who hears about a run. Names of environment variables holding URLs, never the URLs:
    a robot's URL carries its key, and whoever has it can post to the group."""

    wecom_webhook_env: str | None = None  # WeCom group robot: one markdown message a run
    webhook_env: str | None = None  # any URL: POST summary.json
    ping_env: str | None = None  # healthchecks-style base URL: GET <url>/start, <url>/<exit>
    on: tuple[NotifyOutcome, ...] = NOTIFY_OUTCOMES  # which outcomes message (pings: always)

    @property
    def configured(self) -> bool:
        return bool(self.wecom_webhook_env or self.webhook_env or self.ping_env)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a run needs to know; built from a job file and CLI options (options win)."""

    input: Path
    job_path: Path | None = None
    name: str = ""  # "": the input's file name without its extension
    sheet: str | int | None = None
    encoding: str | None = None
    columns: ColumnMap = field(default_factory=ColumnMap)
    target: TargetKind | None = None  # None: decided by which column the input has
    backend: Backend = "groups"  # "tags": the same moves on WeChat's user-tag API
    untag: tuple[str, ...] | Literal["others"] = ()  # tags backend: tags to remove on a move
    api_base: str = "https://api.weixin.qq.com"
    credentials: Credentials = field(default_factory=Credentials)
    #: "auto": as fast as the account allows (AIMD, shared with the account's other runs);
    #: a number: API calls per second, every attempt and token fetch included (0 = no limit)
    rate: float | Literal["auto"] = AUTO
    max_rate: float = 200.0  # rate = "auto" never goes above this
    concurrency: int | None = None  # None: 8 with a fixed rate; up to 32, adapted, with "auto"
    batch_size: int = MAX_BATCH
    retries: int = 6  # attempts per call for transient failures
    timeout: float = 15.0  # seconds per HTTP request
    max_failure_rate: float = 0.5  # stop when more than this share of sent rows failed...
    failure_sample: int = 200  # ...once at least this many rows have had a final answer
    create_groups: bool = False
    allow_blacklist: bool = False
    allow_overlap: bool = False  # run even when another run on the account moves some users
    out: Path | None = None  # None: runs/<name> under the current directory
    confirm: bool = True  # ask before sending (on a TTY); without a TTY refuse unless False
    snapshot: bool = True  # record every user's current group before moving
    #: tags backend: where the snapshot reads tags: "auto" (the cheaper in calls), "batchget"
    #: (`user/info/batchget`) or "members" (tag member lists, `user/tag/get`)
    snapshot_source: SnapshotSource = "auto"
    verify: bool = False  # read every moved user's group back after the run
    xlsx_max_rows: int = 200_000  # report.xlsx is written only up to this many rows
    sandbox: dict[str, Any] = field(default_factory=dict)  # settings of the embedded sandbox
    select: Selection | None = None  # a segment job: `input` is then RUN_DIR/input.csv
    notify: Notify = field(default_factory=Notify)  # [notify]: robot, webhook, pings
    #: several accounts of a platform ([credentials] component): appids, or "all" authorised
    accounts: tuple[str, ...] | Literal["all"] = ()
    account: str | None = None  # the one account of the platform this run moves

    def __post_init__(self) -> None:
        if not self.name:  # like a spreadsheet run on its own: named after the file
            object.__setattr__(self, "name", Path(self.input).stem or "run")
        _check_ranges(self)
        _check_choices(self)

    def with_overrides(self, **changes: Any) -> JobSpec:
        """A copy with the given fields replaced; None values leave the field as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def single_account(self) -> str | None:
        """The platform account this run moves: `account`, or the only one of `accounts`."""
        if self.account:
            return self.account
        if isinstance(self.accounts, tuple) and len(self.accounts) == 1:
            return self.accounts[0]
        return None

    @property
    def auto_rate(self) -> bool:
        return self.rate == AUTO

    @property
    def workers(self) -> int:
        """Calls in flight at most (the worker pool's size)."""
        if self.concurrency is not None:
            return self.concurrency
        return AUTO_CONCURRENCY if self.auto_rate else DEFAULT_CONCURRENCY

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path("runs") / (self.name or "run")


_NUMBERS = ("max_rate", "batch_size", "retries", "timeout", "max_failure_rate",
            "failure_sample", "xlsx_max_rows")


def _check_ranges(spec: JobSpec) -> None:
    """Ranges, named by job key; raises UsageError."""
    for key in _NUMBERS:
        value = getattr(spec, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UsageError(f"{key} must be a number, got {show(value)}")
    if spec.rate != AUTO:
        if isinstance(spec.rate, bool) or not isinstance(spec.rate, int | float):
            raise UsageError(f'rate must be a number or "auto", got {show(spec.rate)}')
        _range("rate", spec.rate, spec.rate >= 0 and math.isfinite(spec.rate),
               '>= 0 (0 = no limit) or "auto"')
    _range("max_rate", spec.max_rate, spec.max_rate >= 1 and math.isfinite(spec.max_rate),
           ">= 1")
    if spec.concurrency is not None:
        if isinstance(spec.concurrency, bool) or not isinstance(spec.concurrency, int):
            raise UsageError(f"concurrency must be a number, got {show(spec.concurrency)}")
        _range("concurrency", spec.concurrency, spec.concurrency >= 1, ">= 1")
    _range("batch_size", spec.batch_size, 1 <= spec.batch_size <= MAX_BATCH, f"1..{MAX_BATCH}")
    _range("retries", spec.retries, spec.retries >= 1, ">= 1")
    _range("timeout", spec.timeout, spec.timeout > 0 and math.isfinite(spec.timeout), "> 0")
    _range("max_failure_rate", spec.max_failure_rate, 0 < spec.max_failure_rate <= 1,
           "> 0 and <= 1")
    _range("failure_sample", spec.failure_sample, spec.failure_sample >= 1, ">= 1")
    _range("xlsx_max_rows", spec.xlsx_max_rows, 0 <= spec.xlsx_max_rows <= XLSX_ROW_LIMIT,
           f"0..{XLSX_ROW_LIMIT}")
    if isinstance(spec.sheet, int) and spec.sheet < 0:
        raise UsageError(f"sheet must be a name or a number >= 0, got {spec.sheet}")


def _check_choices(spec: JobSpec) -> None:
    """Choices and combinations that cannot work together; raises UsageError."""
    if spec.target not in (None, "id", "name", "set"):
        raise UsageError(f'target must be "id", "name" or "set", got {show(spec.target)}')
    if spec.backend not in ("groups", "tags"):
        raise UsageError(f'backend must be "groups" or "tags", got {show(spec.backend)}')
    if spec.backend == "groups" and (spec.untag or spec.target == "set"):
        raise UsageError('untag and target = "set" need backend = "tags"')
    if spec.snapshot_source not in SNAPSHOT_SOURCES:
        raise UsageError('snapshot_source must be "auto", "batchget" or "members", '
                         f"got {show(spec.snapshot_source)}")
    if spec.backend == "groups" and spec.snapshot_source == "members":
        raise UsageError('snapshot_source = "members" needs backend = "tags"')
    if spec.backend == "tags" and not spec.snapshot and (spec.untag == "others"
                                                         or spec.target == "set"):
        raise UsageError('untag = "others" and tag sets need the snapshot (snapshot = true)')
    if spec.api_base != SANDBOX and not spec.api_base.startswith(("https://", "http://")):
        raise UsageError(f'api_base must be "sandbox" or an http(s):// URL, '
                         f"got {show(spec.api_base)}")
    if not spec.name.strip() or spec.name in (".", "..") or any(c in spec.name for c in "/\\"):
        raise UsageError(f"name must be usable as a directory name, got {show(spec.name)}")
    _check_accounts(spec)
    if spec.credentials.token_kind not in ("stable", "classic"):
        raise UsageError(f'token_kind must be "stable" or "classic", '
                         f"got {show(spec.credentials.token_kind)}")


APPID = re.compile(r"wx[0-9A-Za-z]{6,30}")


def _check_accounts(spec: JobSpec) -> None:
    if (spec.accounts or spec.account) and not spec.credentials.component:
        raise UsageError("accounts and --account name accounts of a third-party platform: "
                         "they need [credentials] component = true")
    named = () if spec.accounts == "all" else spec.accounts
    for appid in (*named, *([spec.account] if spec.account else [])):
        if not isinstance(appid, str) or not APPID.fullmatch(appid):
            raise UsageError(f"{show(appid)} is not an appid (wx followed by letters and "
                             "digits)")


def _range(key: str, value: float, ok: bool, wanted: str) -> None:
    if not ok:
        raise UsageError(f"{key} must be {wanted}, got {value:g}")


def show(value: Any) -> str:
    """A value as it looked in TOML (strings in double quotes), cut short, for messages."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


class InputRow(NamedTuple):
    """One data row of the input, validated. `row` is the spreadsheet's own row number."""

    row: int
    openid: str
    target: str  # canonical group id digits, or the group name as typed (trimmed)
    status: str  # a RowStatus value (plain str): PENDING when valid; INVALID or DUPLICATE
    reason: str  # why the row is invalid/duplicate; "" when valid
    extra: tuple[str, ...] | None  # the other columns' cells, in header order


@dataclass(frozen=True, slots=True)
class Target:
    """A group (the legacy groups API) or a tag (the tags API): what a row moves users to."""

    id: int
    name: str
    count: int = 0


class RowFailure(NamedTuple):
    """A row's final refusal: the errcode (None when WeChat never answered) and why."""

    row: int
    errcode: int | None
    errmsg: str
    attempts: int


class Move(NamedTuple):
    row: int
    openid: str


Op = Literal["move", "tag", "untag", "read"]  # read: user/info/batchget (snapshot)


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to 50 users and one call: moved to a group, or tagged/untagged with one tag.

    `rows` and `openids` run in parallel: a million users cost two tuples per batch, not an
    object per user (planning 1M rows took 2.7 s with a `Move` each).
    """

    target_id: int  # the group's id, or the tag's
    rows: tuple[int, ...]
    openids: tuple[str, ...]
    op: Op = "move"

    @classmethod
    def of(cls, target_id: int, moves: Iterable[Move], op: Op = "move") -> Batch:
        pairs = tuple(moves)
        return cls(target_id, tuple(m.row for m in pairs), tuple(m.openid for m in pairs), op)

    @property
    def moves(self) -> tuple[Move, ...]:
        return tuple(map(Move._make, zip(self.rows, self.openids, strict=True)))

    def __len__(self) -> int:
        return len(self.rows)
