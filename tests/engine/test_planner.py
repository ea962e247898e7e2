"""The pure planner: batches, bisection halves, call counts, quota fit and warnings."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchmove.engine.planner import (
    Batcher,
    MoveCount,
    chunked,
    move_calls,
    move_endpoint,
    plan_batches,
    snapshot_calls,
    split,
    stream_batches,
    summarize_plan,
)
from batchmove.models import MAX_BATCH, Batch, JobSpec, Move

group_ids = st.integers(min_value=0, max_value=12)
batch_sizes = st.integers(min_value=1, max_value=MAX_BATCH)


def as_pending(targets: list[int]) -> list[tuple[int, int, str]]:
    """One (group_id, row, openid) per target; rows are unique and increasing like the
    ledger's."""
    return [(gid, row, f"o{row}") for row, gid in enumerate(targets, start=2)]


# --- plan_batches ------------------------------------------------------------------------------
@given(st.lists(group_ids, max_size=400), batch_sizes)
def test_plan_batches_covers_every_move_once_within_size(targets: list[int], size: int) -> None:
    pending = as_pending(targets)
    batches = plan_batches(pending, size)

    sent = [(b.target_id, *m) for b in batches for m in b.moves]
    assert Counter(sent) == Counter(pending)  # every move once, with its own group
    assert all(1 <= len(b) == len(b.moves) <= size for b in batches)
    assert len(batches) == move_calls(Counter(targets), size)
    # a group's moves keep their input order; groups come in order of first appearance
    for gid in set(targets):
        assert [m for m in sent if m[0] == gid] == [m for m in pending if m[0] == gid]
    assert list(dict.fromkeys(b.target_id for b in batches)) == list(dict.fromkeys(targets))
    # only a group's last batch may be short
    for i, b in enumerate(batches[:-1]):
        if batches[i + 1].target_id == b.target_id:
            assert len(b) == size


def test_plan_batches_example() -> None:
    pending = as_pending([101, 102, 101, 101, 102])
    assert plan_batches(pending, 2) == [  # the groups take turns
        Batch.of(101, (Move(2, "o2"), Move(4, "o4"))),
        Batch(102, (3, 6), ("o3", "o6")),
        Batch.of(101, (Move(5, "o5"),)),
    ]
    assert plan_batches([], 50) == []


@given(st.lists(group_ids, max_size=400), batch_sizes)
def test_stream_batches_are_plan_batches_in_fill_order(targets: list[int], size: int) -> None:
    pending = as_pending(targets)
    streamed = list(stream_batches(iter(pending), size))
    assert sorted(streamed, key=lambda b: b.rows) == sorted(plan_batches(pending, size),
                                                             key=lambda b: b.rows)
    full = [b for b in streamed if len(b) == size]
    assert streamed[:len(full)] == full  # each batch as soon as it fills, partial ones last
    assert [b.rows[-1] for b in full] == sorted(b.rows[-1] for b in full)


def test_batcher_holds_less_than_a_batch_per_group() -> None:
    batcher = Batcher(2)
    assert batcher.add(101, 2, "o2") is None
    assert batcher.add(102, 3, "o3") is None
    assert batcher.add(101, 4, "o4") == Batch(101, (2, 4), ("o2", "o4"))
    assert batcher.rest() == [Batch(102, (3,), ("o3",))]
    assert batcher.rest() == []


@given(st.lists(group_ids, max_size=400), batch_sizes, st.integers(min_value=1, max_value=120))
def test_batcher_extend_is_add_user_by_user(targets: list[int], size: int, step: int) -> None:
    pending = as_pending(targets)
    one_by_one, at_once = Batcher(size), Batcher(size)
    added = [b for g, r, o in pending if (b := one_by_one.add(g, r, o)) is not None]
    extended: list[Batch] = []
    for start in range(0, len(pending), step):  # the users of a commit, grouped by target
        by_group: dict[int, tuple[list[int], list[str]]] = {}
        for g, r, o in pending[start:start + step]:
            by_group.setdefault(g, ([], []))[0].append(r)
            by_group[g][1].append(o)
        for g, (rows, openids) in by_group.items():
            extended += at_once.extend(g, rows, openids)
    def per_group(batches: list[Batch]) -> dict[int, list[Batch]]:
        return {g: [b for b in batches if b.target_id == g] for g in set(targets)}
    assert per_group(extended) == per_group(added)
    assert sorted(at_once.rest(), key=lambda b: b.target_id) == sorted(
        one_by_one.rest(), key=lambda b: b.target_id)


@pytest.mark.parametrize("size", [0, -1, MAX_BATCH + 1, 100])
def test_plan_batches_refuses_sizes_outside_1_to_50(size: int) -> None:
    with pytest.raises(ValueError, match=r"batch size must be 1\.\.50"):
        plan_batches(as_pending([101]), size)


@given(st.lists(st.integers(), max_size=120), st.integers(min_value=1, max_value=60))
def test_chunked_concatenates_to_the_input(items: list[int], size: int) -> None:
    parts = list(chunked(items, size))
    assert [x for p in parts for x in p] == items
    assert len(parts) == math.ceil(len(items) / size)
    assert all(1 <= len(p) <= size for p in parts)


def test_chunked_refuses_size_zero() -> None:
    with pytest.raises(ValueError, match="size must be at least 1"):
        list(chunked([1, 2], 0))


# --- split -------------------------------------------------------------------------------------
@given(st.integers(min_value=2, max_value=MAX_BATCH), group_ids)
def test_split_halves_concatenate_to_the_batch(n: int, gid: int) -> None:
    batch = Batch.of(gid, (Move(r, f"o{r}") for r in range(n)))
    left, right = split(batch)
    assert left.moves + right.moves == batch.moves
    assert left.target_id == right.target_id == gid
    assert (len(left.moves), len(right.moves)) == (n // 2, n - n // 2)


def test_split_refuses_a_batch_of_one() -> None:
    with pytest.raises(ValueError, match="a batch of one cannot be split"):
        split(Batch.of(101, [Move(2, "o2")]))


# --- call counts -------------------------------------------------------------------------------
@pytest.mark.parametrize(("users", "size", "calls"), [
    ({"a": 0}, 50, 0),
    ({"a": 1}, 50, 1),
    ({"a": 50}, 50, 1),
    ({"a": 51}, 50, 2),
    ({"a": 51, "b": 49, "c": 0}, 50, 3),
    ({"a": 7, "b": 3}, 1, 10),
    ({"a": 7, "b": 3}, 3, 4),
])
def test_move_calls(users: dict[str, int], size: int, calls: int) -> None:
    assert move_calls(users, size) == calls


@pytest.mark.parametrize(("users", "calls"), [(0, 0), (1, 1), (100, 1), (101, 2), (250, 3)])
def test_snapshot_calls(users: int, calls: int) -> None:
    assert snapshot_calls(users) == calls


@pytest.mark.parametrize(("size", "endpoint"), [
    (1, "groups/members/update"), (2, "groups/members/batchupdate"),
    (50, "groups/members/batchupdate")])
def test_move_endpoint(size: int, endpoint: str) -> None:
    assert move_endpoint(size) == endpoint


# --- summarize_plan ----------------------------------------------------------------------------
def spec(**changes: Any) -> JobSpec:
    return JobSpec(input=Path("in.csv"), **changes)


def groups_of(per_group: dict[str, tuple[int, int]], create: dict[str, int] | None = None,
              unresolved: dict[str, int] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "users_per_group": {t: {"group_id": gid, "users": n} for t, (gid, n) in per_group.items()},
        "create": [{"name": name, "users": n} for name, n in (create or {}).items()],
        "unresolved": [{"target": t, "users": n, "reason": "nope"}
                       for t, n in (unresolved or {}).items()],
        **extra,
    }


JOB = groups_of({"101": (101, 120), "102": (102, 1)}, create={"新组": 60})


@pytest.mark.parametrize(("changes", "calls"), [
    ({}, {"groups/get": 1, "groups/create": 1, "user/info/batchget": 2,
          "groups/members/batchupdate": 3 + 1 + 2, "total": 10}),
    ({"snapshot": False}, {"groups/get": 1, "groups/create": 1,
                           "groups/members/batchupdate": 6, "total": 8}),
    ({"batch_size": 1, "snapshot": False}, {"groups/get": 1, "groups/create": 1,
                                            "groups/members/update": 181, "total": 183}),
    ({"batch_size": 1}, {"groups/get": 1, "groups/create": 1, "user/info/batchget": 2,
                         "groups/members/update": 181, "total": 185}),
    ({"batch_size": 20}, {"groups/get": 1, "groups/create": 1, "user/info/batchget": 2,
                          "groups/members/batchupdate": 6 + 1 + 3, "total": 14}),
])
def test_summarize_plan_calls_per_endpoint(changes: dict[str, Any],
                                           calls: dict[str, int]) -> None:
    plan = summarize_plan({"pending": 181, "invalid": 3}, JOB, spec(**changes))
    assert plan.calls == calls
    assert plan.users_to_move == 181
    assert plan.rows == {"pending": 181, "invalid": 3}
    assert plan.estimated_duration_s == round(calls["total"] / 20.0, 1)
    assert plan.warnings == []
    assert plan.quota == {}


def test_summarize_plan_with_nothing_to_move_only_reads_groups() -> None:
    plan = summarize_plan({}, groups_of({"101": (101, 0)}, unresolved={"999": 4}), spec())
    assert plan.calls == {"groups/get": 1, "total": 1}
    assert plan.users_to_move == 0
    assert plan.warnings == ["4 rows have a target group that cannot be used"]


@pytest.mark.parametrize(("groups", "changes", "exact"), [
    (JOB, {}, False),  # the snapshot may find users already in 101 or 102: "up to"
    (JOB, {"snapshot": False}, True),  # without it, every user is sent
    (groups_of({}, create={"新组": 60}), {}, True),  # nobody is in a group not created yet
])
def test_summarize_plan_says_when_its_moves_are_an_upper_bound(
        groups: dict[str, Any], changes: dict[str, Any], exact: bool) -> None:
    assert summarize_plan({}, groups, spec(**changes)).moves_exact is exact


def test_summarize_plan_counts_the_moves_it_knows() -> None:
    count = MoveCount("input", 150, Counter({"101": 20, "新组": 60}))
    plan = summarize_plan({"pending": 181}, JOB, spec(), count=count)
    assert (plan.users_to_move, plan.already, plan.already_source) == (80, 150, "input")
    assert plan.moves_exact
    assert plan.calls["groups/members/batchupdate"] == 1 + 2  # 20 to 101, 60 to 新组
    assert plan.calls["user/info/batchget"] == 2  # the snapshot still reads all 181


def test_summarize_plan_without_rate_has_no_duration() -> None:
    assert summarize_plan({}, JOB, spec(rate=0)).estimated_duration_s is None


# an existing target named "new:<x>" once collided with a created "<x>" (regression test below)
@given(st.dictionaries(st.text(max_size=8).filter(lambda t: not t.startswith("new:")),
                       st.integers(0, 500), max_size=6),
       st.dictionaries(st.text(max_size=8), st.integers(0, 500), max_size=6))
def test_summarize_plan_counts_every_user_once(existing: dict[str, int],
                                               create: dict[str, int]) -> None:
    groups = groups_of({t: (100 + i, n) for i, (t, n) in enumerate(existing.items())},
                       create=create)
    plan = summarize_plan({}, groups, spec(snapshot=False, batch_size=1))
    users = sum(existing.values()) + sum(create.values())
    assert plan.users_to_move == users
    assert plan.calls.get("groups/members/update", 0) == users


def test_summarize_plan_existing_name_that_looks_like_a_new_key() -> None:
    groups = groups_of({"new:VIP": (105, 30)}, create={"VIP": 20})
    plan = summarize_plan({}, groups, spec(snapshot=False, batch_size=1))
    assert plan.users_to_move == 50
    assert plan.calls["groups/members/update"] == 50


# --- quota fit ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("needed", "remain", "limit", "fits", "days"), [
    (10, 10, 100, True, 1),
    (10, 1000, 1000, True, 1),
    (11, 10, 100, False, 2),
    (110, 10, 100, False, 2),
    (111, 10, 100, False, 3),
    (250, 50, 100, False, 3),
    (251, 50, 100, False, 4),
    (5, 0, 0, False, 0),  # no quota at all: never fits
])
def test_quota_fit_days(needed: int, remain: int, limit: int, fits: bool, days: int) -> None:
    quotas = {"groups/members/update": {"daily_limit": limit, "used": limit - remain,
                                        "remain": remain}}
    plan = summarize_plan({}, groups_of({"101": (101, needed)}),
                          spec(snapshot=False, batch_size=1), quotas)
    assert plan.quota == {"groups/members/update": {
        "needed": needed, "remain": remain, "others": 0, "daily_limit": limit,
        "fits_today": fits, "days": days}}


@pytest.mark.parametrize(("needed", "remain", "others", "fits", "days"), [
    (10, 100, 90, True, 1),  # what the other runs leave is just enough
    (11, 100, 90, False, 2),
    (10, 100, 500, False, 2),  # they take more than today's remain: nothing left today
])
def test_quota_fit_counts_what_other_runs_will_spend_first(
        needed: int, remain: int, others: int, fits: bool, days: int) -> None:
    quotas = {"groups/members/update": {"daily_limit": 100, "remain": remain,
                                        "others": others}}
    plan = summarize_plan({}, groups_of({"101": (101, needed)}),
                          spec(snapshot=False, batch_size=1), quotas)
    assert plan.quota["groups/members/update"] == {
        "needed": needed, "remain": remain, "others": others, "daily_limit": 100,
        "fits_today": fits, "days": days}


@given(st.integers(1, 5000), st.integers(0, 2000), st.integers(1, 1000))
def test_quota_days_is_the_fewest_days_that_cover_the_calls(needed: int, remain: int,
                                                            limit: int) -> None:
    quotas = {"groups/members/update": {"daily_limit": limit, "remain": remain}}
    plan = summarize_plan({}, groups_of({"101": (101, needed)}),
                          spec(snapshot=False, batch_size=1), quotas)
    days = plan.quota["groups/members/update"]["days"]
    if needed <= remain:
        assert days == 1
    else:
        assert days == 1 + math.ceil((needed - remain) / limit)
        assert remain + (days - 1) * limit >= needed > remain + (days - 2) * limit


def test_quota_fit_only_for_endpoints_whose_quota_was_asked() -> None:
    quotas = {"groups/get": {"daily_limit": 1000, "used": 0, "remain": 1000},
              "tags/get": {"daily_limit": 1000, "used": 0, "remain": 1000}}
    plan = summarize_plan({}, JOB, spec(), quotas)
    assert plan.quota == {"groups/get": {"needed": 1, "remain": 1000, "others": 0,
                                         "daily_limit": 1000, "fits_today": True, "days": 1}}


# --- warnings ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("groups", "warnings"), [
    (groups_of({"1": (1, 5)}), ["some rows target group 1 (黑名单, the blacklist)"]),
    (groups_of({"黑名单": (1, 5), "101": (101, 2)}),
     ["some rows target group 1 (黑名单, the blacklist)"]),
    (groups_of({}, create={f"g{i}": 1 for i in range(9)}), []),
    (groups_of({}, create={f"g{i}": 1 for i in range(10)}), ["10 new groups would be created"]),
    (groups_of({"101": (101, 1)}, unresolved={"999": 3, "x": 4}),
     ["7 rows have a target group that cannot be used"]),
    (groups_of({}, create={"a": 1}, existing_groups=449), []),
    (groups_of({}, create={"a": 1}, existing_groups=450),
     ["the account would have 451 groups, close to the limit"]),
    (groups_of({}, create={"a": 1}, existing_groups=89, max_groups=100), []),
    (groups_of({}, create={"a": 1}, existing_groups=90, max_groups=100),
     ["the account would have 91 groups, close to the limit"]),
    (groups_of({"1": (1, 5)}, create={f"g{i}": 1 for i in range(12)}, unresolved={"x": 1}),
     ["some rows target group 1 (黑名单, the blacklist)", "12 new groups would be created",
      "1 rows have a target group that cannot be used"]),
])
def test_warnings(groups: dict[str, Any], warnings: list[str]) -> None:
    assert summarize_plan({}, groups, spec()).warnings == warnings
