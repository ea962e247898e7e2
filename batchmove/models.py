"""The values that flow through the pipeline: a job's settings, input rows, groups, batches.

Frozen and dependency-free: every stage imports these, none of them imports a stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple

TargetKind = Literal["id", "name", "set"]  # "set": a tag backend's exact set of tag ids
TokenKind = Literal["stable", "classic"]
Backend = Literal["groups", "tags"]

BLACKLIST_GROUP_ID = 1
MAX_BATCH = 50
MAX_USER_INFO_BATCH = 100
MAX_GROUP_NAME_CHARS = 30


class RowStatus(StrEnum):
    """A row's state in the ledger and its `status` in the report."""

    PENDING = "pending"  # valid, not yet moved
    MOVED = "moved"
    ALREADY = "already"  # the snapshot showed the user already in the target group
    FAILED = "failed"  # WeChat refused it, or its group could not be resolved
    INVALID = "invalid"  # rejected by validation; never sent
    DUPLICATE = "duplicate"  # same openid and target as an earlier row; moved with it


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


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything a run needs to know; built from a job file and CLI options (options win)."""

    input: Path
    job_path: Path | None = None
    name: str = ""
    sheet: str | int | None = None
    encoding: str | None = None
    columns: ColumnMap = field(default_factory=ColumnMap)
    target: TargetKind | None = None  # None: decided by which column the input has
    backend: Backend = "groups"  # "tags": the same moves on WeChat's user-tag API
    untag: tuple[str, ...] | Literal["others"] = ()  # tags backend: tags to remove on a move
    api_base: str = "https://api.weixin.qq.com"
    credentials: Credentials = field(default_factory=Credentials)
    rate: float = 20.0  # API calls per second, every attempt and token fetch included
    concurrency: int = 8
    batch_size: int = MAX_BATCH
    retries: int = 6  # attempts per call for transient failures
    timeout: float = 15.0  # seconds per HTTP request
    max_failure_rate: float = 0.5  # stop when more than this share of sent rows failed...
    failure_sample: int = 200  # ...once at least this many rows have had a final answer
    create_groups: bool = False
    allow_blacklist: bool = False
    out: Path | None = None  # None: runs/<name> under the current directory
    confirm: bool = True  # ask before sending (on a TTY); without a TTY refuse unless False
    snapshot: bool = True  # record every user's current group before moving
    verify: bool = False  # read every moved user's group back after the run
    xlsx_max_rows: int = 200_000  # report.xlsx is written only up to this many rows
    sandbox: dict[str, Any] = field(default_factory=dict)  # settings of the embedded sandbox
    select: Selection | None = None  # a segment job: `input` is then RUN_DIR/input.csv

    def with_overrides(self, **changes: Any) -> JobSpec:
        """A copy with the given fields replaced; None values leave the field as it is."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else Path("runs") / (self.name or "run")


class InputRow(NamedTuple):
    """One data row of the input, validated. `row` is the spreadsheet's own row number."""

    row: int
    openid: str
    target: str  # canonical group id digits, or the group name as typed (trimmed)
    status: str  # a RowStatus value (plain str): PENDING when valid; INVALID or DUPLICATE
    reason: str  # why the row is invalid/duplicate; "" when valid
    extra: tuple[str, ...] | None  # the other columns' cells, in header order


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    name: str
    count: int = 0


class Move(NamedTuple):
    row: int
    openid: str


Op = Literal["move", "tag", "untag"]


@dataclass(frozen=True, slots=True)
class Batch:
    """Up to 50 users and one call: moved to a group, or tagged/untagged with one tag.

    `rows` and `openids` run in parallel: a million users cost two tuples per batch, not an
    object per user (planning 1M rows took 2.7 s with a `Move` each).
    """

    group_id: int
    rows: tuple[int, ...]
    openids: tuple[str, ...]
    op: Op = "move"

    @classmethod
    def of(cls, group_id: int, moves: Iterable[Move], op: Op = "move") -> Batch:
        pairs = tuple(moves)
        return cls(group_id, tuple(m.row for m in pairs), tuple(m.openid for m in pairs), op)

    @property
    def moves(self) -> tuple[Move, ...]:
        return tuple(map(Move._make, zip(self.rows, self.openids, strict=True)))

    def __len__(self) -> int:
        return len(self.rows)
