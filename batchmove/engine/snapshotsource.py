"""Which endpoint the tags backend's snapshot reads users' tags from: the cheaper one.

- `user/info/batchget`: 100 pending users a call, ceil(users / 100) calls.
- `user/tag/get`: every member of every tag, 10,000 a page. A tag that `tags/get` counts `c`
  members takes ceil(c / 10,000) pages plus the empty page that ends its list (WeChat and the
  sandbox end a list with an empty page after the last full or partial one; the short page is
  not trusted to be the last), so one call for a tag counted 0. Every tag is listed, those
  counted 0 too: the counts price the choice, they never decide whose tags are recorded. Only
  tag 0 (未分组: "untagged" is no tag a user carries) is not listed.

Pure (no I/O): `plan` and `run` both choose from the counts of the `tags/get` the resolver
already makes, so they agree. 100,000 users spread over 8 tags: 26 `user/tag/get` calls (8
tags x 3, and 1 each for the reserved tags 1 and 2) instead of 1,000 `user/info/batchget`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from batchmove.models import MAX_USER_INFO_BATCH, Target

BATCHGET = "user/info/batchget"
MEMBERS = "user/tag/get"
#: openids in one page of `user/tag/get`
TAG_PAGE = 10_000
#: 未分组: listed by `tags/get`, carried by no user
UNTAGGED = 0
#: WeChat's daily quota of `user/tag/get` (like `user/get`'s); the automatic choice never
#: picks member lists that need more pages than one day gives, whatever they save
MEMBERS_DAILY_QUOTA = 500


@dataclass(frozen=True, slots=True)
class SnapshotChoice:
    """The source chosen, its calls, and what the other source would have cost."""

    source: str
    calls: int
    other: str
    other_calls: int

    def describe(self) -> str:
        """'snapshot from tag member lists: 26 user/tag/get calls instead of 1,000
        user/info/batchget'."""
        how = "tag member lists" if self.source == MEMBERS else "user info in bulk"
        return (f"snapshot from {how}: {self.calls:,} {self.source} calls instead of "
                f"{self.other_calls:,} {self.other}")


def listed_tags(tags: Iterable[Target]) -> list[Target]:
    """The tags a member-list snapshot pages through."""
    return [t for t in tags if t.id != UNTAGGED]


def member_pages(tags: Iterable[Target]) -> int:
    """`user/tag/get` calls to list every member of every listed tag."""
    return sum(math.ceil(t.count / TAG_PAGE) + 1 for t in listed_tags(tags))


def batchget_calls(users: int) -> int:
    return math.ceil(users / MAX_USER_INFO_BATCH)


def choose_source(users: int, tags: Iterable[Target] | None,
                  setting: str = "auto") -> SnapshotChoice:
    """The source for `users` pending users: the job's `snapshot_source` ("batchget",
    "members"), or with "auto" the cheaper in calls; a tie goes to `user/info/batchget`, whose
    daily quota is far larger (5,000,000 against 500 on the sandbox's table), and so do member
    lists longer than one day's `user/tag/get` quota. `tags` None (the groups backend):
    batchget, the only source."""
    per_user = batchget_calls(users)
    if tags is None:
        return SnapshotChoice(BATCHGET, per_user, MEMBERS, 0)
    pages = member_pages(tags)
    members = SnapshotChoice(MEMBERS, pages, BATCHGET, per_user)
    cheaper = pages < per_user and pages <= MEMBERS_DAILY_QUOTA
    if setting == "members" or (setting == "auto" and cheaper):
        return members
    return SnapshotChoice(BATCHGET, per_user, MEMBERS, pages)
