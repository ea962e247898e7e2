"""User tags, what replaced groups on WeChat in 2016: the sandbox's tag state and its rules.

Choices where WeChat's documentation is silent (kept here so tests and README agree):

- Reserved tags 0 未分组, 1 黑名单 and 2 星标组 always exist and are listed by `tags/get`. None of
  them can be renamed or deleted (45058). Tags 0 and 1 cannot be given or taken away either
  (45058): "untagged" is not a tag, and the blacklist has its own API on WeChat, which the sandbox
  does not imitate; so their counts stay 0. Tag 2 (starred) is an ordinary tag for members.
- `max_tags` (default 100) counts the tags an account creates; the reserved ones are not counted.
  Created ids start at 100 and only increase, in an id space apart from the groups'.
- Names: 1 to 30 bytes of UTF-8 (45158 beyond), not blank and not the name of another tag,
  reserved ones included (45157). Renaming a tag to its own name is allowed.
- A user carries at most 20 tags, tag 2 included. Tags and groups are independent.
- Batch (un)tagging is all or nothing: 40032 (not 1..50 openids), 45159 (unknown tag), 40003 (an
  unknown openid), 45059 (one user already has 20 other tags) fail the whole call, nothing changes.
  A repeated openid in one call counts once; tagging a tagged user and untagging an untagged one
  succeed and change nothing.
- `user/tag/get` pages a tag's members in follower order (the order of `user/get`), so a cursor
  stays valid while members come and go; it ends like `user/get`.
- `tags/getidlist` and `user/info/batchget` list a user's tag ids sorted ascending.

Calls cost O(batch) or O(page), never O(followers): each tag keeps its count and its members'
follower positions in a `SortedPositions` (4 bytes a member), and each user's tags are kept
only while the user has any, as a frozenset shared by every user with the same tags (10M
tagged users: a dict entry each, not a set each). Deleting a tag costs O(its members), as
deleting a group does.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from batchmove.sandbox.wire import OK, ApiFault, Json, id_field, list_field, object_field

RESERVED_TAGS = {0: "未分组", 1: "黑名单", 2: "星标组"}
UNTAGGABLE = frozenset({0, 1})  # listed, never on a user
FIRST_TAG_ID = 100
MAX_TAG_NAME_BYTES = 30
MAX_TAGS_PER_USER = 20
MAX_TAG_BATCH = 50

TOO_MANY_TAGS = 45056
TOO_MANY_FANS_TO_DELETE = 45057
SYSTEM_TAG = 45058
USER_HAS_TOO_MANY_TAGS = 45059
INVALID_TAG_NAME = 45157
TAG_NAME_TOO_LONG = 45158
INVALID_TAG_ID = 45159

TagAction = Literal["tag", "untag"]


class Seeded(Protocol):
    """What an export file gave (seed.py): tag names, members' positions, each user's tags."""

    tags: dict[int, str]
    members: dict[int, array[int]]
    user_tags: dict[str, frozenset[int]]

_NO_TAGS: frozenset[int] = frozenset()


def tag_name_errcode(name: Any) -> int:
    """0 for a usable tag name, else 45157 (missing, not text, blank) or 45158 (over 30 bytes).
    Uniqueness is the tag book's business."""
    if not isinstance(name, str) or not name.strip():
        return INVALID_TAG_NAME
    if len(name.encode("utf-8")) > MAX_TAG_NAME_BYTES:
        return TAG_NAME_TOO_LONG
    return 0


class SortedPositions:
    """Distinct ints in ascending order, kept in buckets of at most 2 * `load` (the idea of
    sortedcontainers' SortedList): an insert or removal moves at most that many items plus one
    entry per bucket, however many members a tag has."""

    def __init__(self, load: int = 1000) -> None:
        self._load = load
        self._buckets: list[array[int]] = []  # 4 bytes a member, not a list's 8 + an int's 28
        self._maxes: list[int] = []

    def __iter__(self) -> Iterator[int]:
        for bucket in self._buckets:
            yield from bucket

    def add(self, value: int) -> None:
        if not self._buckets:
            self._buckets.append(array("i", [value]))
            self._maxes.append(value)
            return
        i = min(bisect_left(self._maxes, value), len(self._maxes) - 1)
        bucket = self._buckets[i]
        insort(bucket, value)
        self._maxes[i] = bucket[-1]
        if len(bucket) > 2 * self._load:
            self._buckets[i:i + 1] = [bucket[:self._load], bucket[self._load:]]
            self._maxes[i:i + 1] = [bucket[self._load - 1], bucket[-1]]

    def remove(self, value: int) -> None:
        """`value` must be present."""
        i = bisect_left(self._maxes, value)
        bucket = self._buckets[i]
        del bucket[bisect_left(bucket, value)]
        if bucket:
            self._maxes[i] = bucket[-1]
        else:
            del self._buckets[i]
            del self._maxes[i]

    def load(self, values: Sequence[int]) -> None:
        """Start from `values` (ascending, distinct): whole buckets at once."""
        for start in range(0, len(values), self._load):
            bucket = array("i", values[start:start + self._load])
            self._buckets.append(bucket)
            self._maxes.append(bucket[-1])

    def after(self, value: int, limit: int) -> list[int]:
        """Up to `limit` values greater than `value`, ascending."""
        i = bisect_right(self._maxes, value)
        if i == len(self._buckets):
            return []
        bucket = self._buckets[i]
        result = bucket[bisect_right(bucket, value):][:limit].tolist()
        for bucket in self._buckets[i + 1:]:
            if len(result) >= limit:
                break
            result.extend(bucket[:limit - len(result)])
        return result


@dataclass(slots=True)
class SandboxTag:
    """A tag, how many carry it, and their follower positions (sorted, for paging); who
    carries which tags is the book's `user_tags`."""

    id: int
    name: str
    count: int = 0
    positions: SortedPositions = field(default_factory=SortedPositions)


class TagBook:
    """The account's tags and who carries them; answers the tag endpoints' bodies."""

    def __init__(self, followers: Sequence[str], position: Mapping[str, int],
                 names: Sequence[str] = (), *, max_tags: int = 100,
                 delete_limit: int = 100_000, page_size: int = 10_000,
                 seeded: Seeded | None = None) -> None:
        self._followers = followers
        self._position = position
        self.max_tags = max_tags
        self.delete_limit = delete_limit
        self.page_size = page_size
        self.tags: dict[int, SandboxTag] = {
            tid: SandboxTag(tid, name) for tid, name in RESERVED_TAGS.items()}
        self._ids_by_name = {name: tid for tid, name in RESERVED_TAGS.items()}
        self._next_id = FIRST_TAG_ID
        #: openid -> its tag ids; only users that carry at least one tag. The sets are
        #: shared (one per distinct set of tags, `_sets`): 10M tagged users cost a dict entry
        #: each, not a set each (~200 bytes).
        self.user_tags: dict[str, frozenset[int]] = {}
        self._sets: dict[frozenset[int], frozenset[int]] = {}
        #: every (action, openid, tagid) a (un)tagging call applied, in order
        self.tag_log: list[tuple[str, str, int]] = []
        if seeded is not None:
            self._seed(seeded)
        for name in names:
            self._add(self._unique_name(name))

    def _seed(self, seeded: Seeded) -> None:
        """The tags and members of an export file (seed.py checked them), ids kept."""
        for tid, name in sorted(seeded.tags.items()):
            if tid not in self.tags:
                self.tags[tid] = SandboxTag(tid, name)
                self._ids_by_name[name] = tid
        self._next_id = max([FIRST_TAG_ID - 1, *self.tags]) + 1
        for tid, positions in seeded.members.items():
            self.tags[tid].positions.load(positions)
            self.tags[tid].count = len(positions)
        self.user_tags = seeded.user_tags
        self._sets = {tids: tids for tids in self.user_tags.values()}

    # --- read ------------------------------------------------------------------------------

    def listing(self) -> list[Json]:
        return [{"id": t.id, "name": t.name, "count": t.count} for t in self.tags.values()]

    def tag_ids_of(self, openid: str) -> list[int]:
        return sorted(self.user_tags.get(openid, ()))

    def user_tags_snapshot(self) -> dict[str, list[int]]:
        return {openid: sorted(tids) for openid, tids in self.user_tags.items()}

    # --- endpoints -------------------------------------------------------------------------

    def create(self, body: Json) -> Json:
        name = self._unique_name(object_field(body, "tag").get("name"))
        if len(self.tags) - len(RESERVED_TAGS) >= self.max_tags:
            raise ApiFault(TOO_MANY_TAGS)
        tag = self._add(name)
        return {"tag": {"id": tag.id, "name": tag.name}}

    def get(self, _: Any) -> Json:
        return {"tags": self.listing()}

    def update(self, body: Json) -> Json:
        fields = object_field(body, "tag")
        tag = self.tags[self._tag_id(fields.get("id"), modifiable=True)]
        name = fields.get("name")
        if name != tag.name:
            name = self._unique_name(name)
            del self._ids_by_name[tag.name]
            self._ids_by_name[name] = tag.id
            tag.name = name
        return dict(OK)

    def delete(self, body: Json) -> Json:
        """Refused (45057) for a tag with more than `delete_limit` members; else every member
        loses the tag."""
        tid = self._tag_id(object_field(body, "tag").get("id"), modifiable=True)
        tag = self.tags[tid]
        if tag.count > self.delete_limit:
            raise ApiFault(TOO_MANY_FANS_TO_DELETE)
        for position in tag.positions:
            self._drop_user_tag(self._followers[position], tid)
        del self.tags[tid]
        del self._ids_by_name[tag.name]
        return dict(OK)

    def batch_tag(self, body: Json) -> Json:
        return self._batch("tag", body)

    def batch_untag(self, body: Json) -> Json:
        return self._batch("untag", body)

    def id_list(self, body: Json) -> Json:
        return {"tagid_list": self.tag_ids_of(self._openid(body.get("openid")))}

    def followers(self, body: Json) -> Json:
        """A page of a tag's members. The last page's `next_openid` is its last openid; the page
        after it answers count 0, no `data`, `next_openid` "" (as `user/get` does)."""
        tag = self.tags[self._tag_id(body.get("tagid"))]
        cursor = body.get("next_openid") or ""
        if not isinstance(cursor, str):
            raise ApiFault(47001)
        after = self._position[self._openid(cursor)] if cursor else -1
        page = [self._followers[p] for p in tag.positions.after(after, self.page_size)]
        if not page:
            return {"count": 0, "next_openid": ""}
        return {"count": len(page), "data": {"openid": page}, "next_openid": page[-1]}

    def apply_directly(self, openid: str, tagid: int, untag: bool) -> None:
        """(Un)tag one user with no token, quota or log entry: "someone else changed it"."""
        self._apply("untag" if untag else "tag", [self._openid(openid)], self._usable(tagid))

    # --- rules -----------------------------------------------------------------------------

    def _batch(self, action: TagAction, body: Json) -> Json:
        openids = list_field(body, "openid_list", MAX_TAG_BATCH)
        tid = self._usable(body.get("tagid"))
        checked = [self._openid(openid) for openid in openids]
        self._apply(action, checked, tid)
        self.tag_log.extend((action, openid, tid) for openid in checked)
        return dict(OK)

    def _apply(self, action: TagAction, openids: list[str], tid: int) -> None:
        """All or nothing: every check runs before the first change."""
        tag = self.tags[tid]
        if action == "tag":
            for openid in openids:
                current = self.user_tags.get(openid, _NO_TAGS)
                if tid not in current and len(current) >= MAX_TAGS_PER_USER:
                    raise ApiFault(USER_HAS_TOO_MANY_TAGS)
            for openid in dict.fromkeys(openids):
                current = self.user_tags.get(openid, _NO_TAGS)
                if tid not in current:
                    self.user_tags[openid] = self._shared(current | {tid})
                    tag.positions.add(self._position[openid])
                    tag.count += 1
        else:
            for openid in dict.fromkeys(openids):
                if tid in self.user_tags.get(openid, _NO_TAGS):
                    self._drop_user_tag(openid, tid)
                    tag.positions.remove(self._position[openid])
                    tag.count -= 1

    def _shared(self, tids: frozenset[int]) -> frozenset[int]:
        return self._sets.setdefault(tids, tids)

    def _drop_user_tag(self, openid: str, tid: int) -> None:
        remaining = self.user_tags[openid] - {tid}
        if remaining:
            self.user_tags[openid] = self._shared(remaining)
        else:
            del self.user_tags[openid]

    def _add(self, name: str) -> SandboxTag:
        tag = SandboxTag(self._next_id, name)
        self.tags[tag.id] = tag
        self._ids_by_name[name] = tag.id
        self._next_id += 1
        return tag

    def _unique_name(self, name: Any) -> str:
        code = tag_name_errcode(name)
        if code:
            raise ApiFault(code)
        if name in self._ids_by_name:
            raise ApiFault(INVALID_TAG_NAME)
        return str(name)

    def _tag_id(self, value: Any, modifiable: bool = False) -> int:
        tid = id_field(value, INVALID_TAG_ID)
        if modifiable and tid in RESERVED_TAGS:
            raise ApiFault(SYSTEM_TAG)
        if tid not in self.tags:
            raise ApiFault(INVALID_TAG_ID)
        return tid

    def _usable(self, value: Any) -> int:
        """A tag that can be given to users (not 0 or 1)."""
        tid = self._tag_id(value)
        if tid in UNTAGGABLE:
            raise ApiFault(SYSTEM_TAG)
        return tid

    def _openid(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self._position:
            raise ApiFault(40003)
        return value
