"""Groups or tags: what "move a user to T" means on each of WeChat's two APIs.

- groups (the legacy API): a user is in exactly one group; a move is one `batchupdate`.
- tags (what replaced groups in 2016): a user carries up to 20 tags. "Move to T" tags the user
  with T; the job decides what happens to the user's other tags: keep them (default), remove a
  listed set (`untag = ["旧标签", ...]`), or remove every other tag the snapshot saw
  (`untag = "others"`). A "set" target (`tagid_list` column, what `rollback` writes) makes the
  user's tags exactly that set. Each row thus becomes a few (op, tag, user) operations; the row
  is moved once all of them succeeded. Every operation is idempotent, so resending is safe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from dataclasses import dataclass

from batchmove.ledger.rows import TagRow
from batchmove.models import Batch, Move, Target
from batchmove.wechat.answers import Follower, UserInfo
from batchmove.wechat.client import WeChatClient


@dataclass(frozen=True)
class TargetApi:
    """The account's targets (its groups, or its tags) and the calls that move users to them."""

    client: WeChatClient
    backend: str = "groups"

    @property
    def tags(self) -> bool:
        return self.backend == "tags"

    async def list_targets(self) -> list[Target]:
        return await (self.client.get_tags() if self.tags else self.client.get_groups())

    async def create_target(self, name: str) -> Target:
        return await (self.client.create_tag(name) if self.tags
                      else self.client.create_group(name))

    def send(self, batch: Batch, batch_size: int) -> Awaitable[None]:
        """The one call a batch stands for."""
        openids = batch.openids
        if batch.op == "tag":
            return self.client.tag_users(openids, batch.target_id)
        if batch.op == "untag":
            return self.client.untag_users(openids, batch.target_id)
        if batch_size == 1 and len(openids) == 1:
            return self.client.move_user(openids[0], batch.target_id)
        return self.client.move_users(openids, batch.target_id)


#: tag 0 (未分组) is WeChat's "no tag" and cannot be given (45058): a row asking for it adds
#: nothing, so a groups export run on the tags backend leaves 未分组's followers untagged
NO_TAG = 0


def tag_changes(target: int | frozenset[int], current: Iterable[int] | None,
                untag: frozenset[int] | None) -> tuple[set[int], set[int]]:
    """(tags to add, tags to remove) for one user.

    `target` is one tag id, or a whole set (rollback). `current` is the user's tags from the
    snapshot (None: unknown, then every listed untag is sent). `untag` is the tags to remove,
    or None for "every other tag the user has". Target tag 0 (NO_TAG) adds nothing.
    """
    have = set(current) if current is not None else None
    if isinstance(target, frozenset):
        have = have or set()
        return set(target) - have, have - set(target)
    add = {target} - (have or set()) - {NO_TAG}
    if untag is None:
        remove = (have or set()) - {target}
    else:
        remove = set(untag) - {target}
        if have is not None:
            remove &= have
    return add, remove


def parse_tag_set(text: str) -> frozenset[int]:
    return frozenset(int(p) for p in text.split(";") if p)


def tag_verdict(target: int | frozenset[int], info: UserInfo | None,
                untag: frozenset[int] | None) -> str:
    """`ok`, or what is wrong with a user's tags now."""
    if not isinstance(info, Follower):
        return "mismatch: no longer a follower"
    tags = info.tagid_list
    add, remove = tag_changes(target, tags, untag)
    if not add and not remove:
        return "ok"
    shown = ";".join(map(str, sorted(tags))) or "none"
    return f"mismatch: tags now {shown}"


def group_verdict(group_id: int, info: UserInfo | None) -> str:
    if not isinstance(info, Follower):
        return "mismatch: no longer a follower"
    now = info.groupid
    return "ok" if now == group_id else f"mismatch: now in group {now}"


class RowOps:
    """Tracks each row's outstanding operations: a row is moved when the last one succeeds,
    and failed (once) as soon as any of them fails."""

    def __init__(self) -> None:
        self.remaining: dict[int, int] = {}
        self.failed: set[int] = set()

    def expect(self, row: int, operations: int) -> None:
        self.remaining[row] = operations

    def complete(self, rows: Iterable[int]) -> list[int]:
        """Rows whose last operation this was (and that have not failed)."""
        done = []
        for row in rows:
            left = self.remaining.get(row, 1) - 1
            self.remaining[row] = left
            if left == 0 and row not in self.failed:
                done.append(row)
        return done

    def fail(self, rows: Iterable[int]) -> list[int]:
        """Rows failing for the first time."""
        new = [row for row in rows if row not in self.failed]
        self.failed.update(new)
        return new


def tag_operations(rows: Iterable[TagRow],
                   kind: str, untag: frozenset[int] | None
                   ) -> tuple[list[tuple[str, int, Move]], RowOps, list[int]]:
    """(op, tag id, move) for every pending row, the tracker, and rows with nothing to do."""
    operations: list[tuple[str, int, Move]] = []
    tracker = RowOps()
    already: list[int] = []
    for row, openid, tag_id, target, current in rows:
        wanted: int | frozenset[int] = (parse_tag_set(target) if kind == "set"
                                        else int(tag_id or 0))
        add, remove = tag_changes(wanted, current, untag)
        if not add and not remove:
            already.append(row)
            continue
        move = Move(row, openid)
        operations += [("untag", t, move) for t in sorted(remove)]
        operations += [("tag", t, move) for t in sorted(add)]
        tracker.expect(row, len(add) + len(remove))
    return operations, tracker, already
