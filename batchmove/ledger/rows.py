"""What the ledger's queries return: named tuples, so callers read `r.openid`, not `r[1]`."""

from __future__ import annotations

from typing import NamedTuple


class LedgerRow(NamedTuple):
    row: int
    openid: str
    target: str
    status: str
    reason: str
    group_id: int | None
    prev_group: int | None
    errcode: int | None
    errmsg: str | None
    attempts: int
    extra: str | None
    verified: str | None  # `verify`'s verdict: "ok", or what is wrong now


class MovedRow(NamedTuple):
    """A row the run moved: its user and where they went."""

    row: int
    openid: str
    group_id: int | None  # the group or tag id (0 for a tag-set target)
    target: str  # as typed: group id digits, a name, or a tag set "101;102"


class TagRow(NamedTuple):
    """A pending row of the tags backend with the user's tags before the run."""

    row: int
    openid: str
    tag_id: int | None
    target: str
    prev_tags: list[int] | None  # None: the snapshot has not seen this user


class RollbackRow(NamedTuple):
    """A user the run may have moved, and where they were before."""

    row: int
    openid: str
    previous: int | str  # the group id, or (tags) the tag set as "101;102"
    status: str


class Creation(NamedTuple):
    """The creation journal's entry for one group (or tag) name."""

    state: str  # "creating", "created" or "failed"
    group_id: int | None
