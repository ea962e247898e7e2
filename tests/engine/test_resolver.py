"""Group resolution: matching targets, refusing or creating missing names exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchmove.engine.resolver import Resolution, create_missing, match_groups, refuse_missing
from batchmove.errors import RowError, TransientError
from batchmove.ledger.creations import Creations
from batchmove.ledger.store import Ledger
from batchmove.models import Target

RESERVED = [Target(0, "未分组", 72596), Target(1, "黑名单", 3), Target(2, "星标组", 9)]


class FakeGroups:
    """A GroupsClient over an in-memory account. `create_faults` says, per create call, what
    goes wrong: "lost" (created, then the answer is lost), "refused" (transient, nothing
    created) or a RowError to raise; `get_faults` the same for groups/get."""

    def __init__(self, groups: list[Target] | None = None, create_faults: list[object] = (),
                 get_faults: list[object] = ()) -> None:
        self.groups = list(RESERVED if groups is None else groups)
        self.next_id = 100
        self.create_faults = list(create_faults)
        self.get_faults = list(get_faults)
        self.creates: list[str] = []
        self.gets = 0

    async def list_targets(self) -> list[Target]:
        self.gets += 1
        fault = self.get_faults.pop(0) if self.get_faults else None
        if fault == "refused":
            raise TransientError(-1, "system error", "groups/get")
        return list(self.groups)

    async def create_target(self, name: str) -> Target:
        self.creates.append(name)
        fault = self.create_faults.pop(0) if self.create_faults else None
        if isinstance(fault, RowError):
            raise fault
        if fault == "refused":
            raise TransientError(None, "the server closed the connection", "groups/create")
        self.next_id += 1
        group = Target(self.next_id, name)
        self.groups.append(group)
        if fault == "lost":
            raise TransientError(None, "no answer within 15s", "groups/create")
        return group

    def named(self, name: str) -> list[Target]:
        return [g for g in self.groups if g.name == name]


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Creations]:
    with Ledger(tmp_path / "run").open() as ledger:
        yield ledger.creations


GROUPS = [*RESERVED, Target(101, "VIP"), Target(102, "老客户"), Target(103, "重复"),
          Target(104, "重复"), Target(105, "vip ")]


# --- match_groups ------------------------------------------------------------------------------
def test_match_by_exact_name() -> None:
    out = match_groups(GROUPS, ["VIP", "老客户", "星标组", "vip", "新组"], "name")
    assert out.resolved == {"VIP": 101, "老客户": 102, "星标组": 2}
    assert out.missing == ["vip", "新组"]  # names match exactly: case and spaces count
    assert out.failed == {}


def test_ambiguous_name_fails_without_create() -> None:
    out = match_groups(GROUPS, ["重复", "VIP"], "name")
    assert out.failed == {"重复": (None, "ambiguous group name '重复': held by groups 103, 104")}
    assert out.resolved == {"VIP": 101}
    assert out.missing == []


def test_match_by_id() -> None:
    out = match_groups(GROUPS, ["101", "0", "1", "999"], "id")
    assert out.resolved == {"101": 101, "0": 0, "1": 1}
    assert out.failed == {"999": (40050, "group id 999 does not exist on this account")}
    assert out.missing == []  # an unknown id is never created


def test_refuse_missing_fails_every_missing_name() -> None:
    out = match_groups(GROUPS, ["VIP", "新组", "另一个"], "name")
    refuse_missing(out)
    assert out.missing == []
    assert out.resolved == {"VIP": 101}
    assert out.failed == {
        "新组": (None, "group '新组' does not exist; allow creating it with --create-groups"),
        "另一个": (None, "group '另一个' does not exist; allow creating it with --create-groups"),
    }


# --- create_missing ----------------------------------------------------------------------------
async def test_creates_each_missing_name_once(journal: Creations) -> None:
    server = FakeGroups()
    resolution = Resolution(resolved={"VIP": 101}, missing=["新组", "另一个"])
    created = await create_missing(server, resolution, journal, sleep=Sleeps())
    assert created == [Target(101, "新组"), Target(102, "另一个")]
    assert server.creates == ["新组", "另一个"]
    assert server.gets == 0  # nothing was in doubt: no lookup needed
    assert resolution.resolved == {"VIP": 101, "新组": 101, "另一个": 102}
    assert resolution.missing == []
    assert journal.get("新组") == ("created", 101)
    assert journal.created() == [{"name": "新组", "id": 101}, {"name": "另一个", "id": 102}]


async def test_lost_answer_on_create_adopts_the_group_the_server_made(journal: Creations) -> None:
    server = FakeGroups(create_faults=["lost"])
    sleeps = Sleeps()
    resolution = Resolution(missing=["新组"])
    created = await create_missing(server, resolution, journal, sleep=sleeps)
    assert len(server.named("新组")) == 1  # exactly one group exists
    assert server.creates == ["新组"]
    assert server.gets == 1
    assert created == server.named("新组")
    assert resolution.resolved == {"新组": 101}
    assert journal.get("新组") == ("created", 101)
    assert sleeps.delays == [0.5]


async def test_refused_create_is_looked_up_then_created_once(journal: Creations) -> None:
    server = FakeGroups(create_faults=["refused", "refused"])
    sleeps = Sleeps()
    resolution = Resolution(missing=["新组"])
    await create_missing(server, resolution, journal, sleep=sleeps)
    assert server.creates == ["新组"] * 3
    assert server.gets == 2
    assert server.named("新组") == [Target(101, "新组")]
    assert resolution.resolved == {"新组": 101}
    assert sleeps.delays == [0.5, 1.0]


async def test_transient_lookup_is_retried(journal: Creations) -> None:
    server = FakeGroups(create_faults=["lost"], get_faults=["refused"])
    resolution = Resolution(missing=["新组"])
    await create_missing(server, resolution, journal, sleep=Sleeps())
    assert server.creates == ["新组"]
    assert server.gets == 2
    assert len(server.named("新组")) == 1
    assert resolution.resolved == {"新组": 101}


async def test_crash_after_journal_with_group_created_is_adopted(journal: Creations) -> None:
    journal.started("新组")  # the previous process died after the create call
    server = FakeGroups([*RESERVED, Target(117, "新组")])
    resolution = Resolution(missing=["新组"])
    created = await create_missing(server, resolution, journal, sleep=Sleeps())
    assert server.creates == []
    assert created == [Target(117, "新组")]
    assert resolution.resolved == {"新组": 117}
    assert journal.get("新组") == ("created", 117)


async def test_crash_after_journal_with_group_absent_creates_once(journal: Creations) -> None:
    journal.started("新组")  # the previous process died before the create call
    server = FakeGroups()
    resolution = Resolution(missing=["新组"])
    await create_missing(server, resolution, journal, sleep=Sleeps())
    assert server.creates == ["新组"]
    assert server.gets == 1
    assert server.named("新组") == [Target(101, "新组")]
    assert journal.get("新组") == ("created", 101)


async def test_resumed_run_does_not_create_a_journaled_group_again(tmp_path: Path) -> None:
    server = FakeGroups()
    with Ledger(tmp_path / "run").open() as first:
        await create_missing(server, Resolution(missing=["新组"]), first.creations)
    with Ledger(tmp_path / "run").open() as second:  # a new process, same run directory
        resolution = Resolution(missing=["新组"])
        await create_missing(server, resolution, second.creations)
    assert server.creates == ["新组"]
    assert resolution.resolved == {"新组": 101}


async def test_duplicate_missing_name_is_created_once(journal: Creations) -> None:
    server = FakeGroups()
    resolution = Resolution(missing=["新组", "新组"])
    await create_missing(server, resolution, journal, sleep=Sleeps())
    assert server.creates == ["新组"]
    assert len(server.named("新组")) == 1


async def test_group_limit_fails_its_rows_and_goes_on(journal: Creations) -> None:
    limit = RowError(45018, "分组数量超过上限", "groups/create")
    server = FakeGroups(create_faults=[limit])
    resolution = Resolution(missing=["满", "下一个"])
    created = await create_missing(server, resolution, journal, sleep=Sleeps())
    assert resolution.failed == {"满": (45018, "cannot create group '满': 分组数量超过上限")}
    assert resolution.resolved == {"下一个": 101}
    assert resolution.missing == []
    assert created == [Target(101, "下一个")]
    assert journal.get("满") == ("failed", None)
    row = journal.ledger.conn.execute(
        "SELECT errcode, errmsg FROM created_groups WHERE name = '满'").fetchone()
    assert row == (45018, "分组数量超过上限")
    assert server.named("满") == []


async def test_persistent_transient_error_raises_and_keeps_the_doubt(journal: Creations) -> None:
    server = FakeGroups(create_faults=["refused"] * 3)
    sleeps = Sleeps()
    with pytest.raises(TransientError, match="the server closed the connection"):
        await create_missing(server, Resolution(missing=["新组"]), journal, attempts=3,
                             sleep=sleeps)
    assert server.creates == ["新组"] * 3
    assert sleeps.delays == [0.5, 1.0]
    assert journal.get("新组") == ("creating", None)  # the next run looks it up first
