"""The plan page's figures: targets biggest first, new groups marked, the chart's geometry."""

from __future__ import annotations

from typing import Any

from batchmove.console.i18n import translator
from batchmove.console.planview import CHART_BARS, duration, view, when

PLAN: dict[str, Any] = {
    "rows": {"pending": 90, "invalid": 7, "duplicate": 3},
    "users_to_move": 90,
    "groups": {"users_per_group": {"100": {"group_id": 100, "users": 50}},
               "create": [{"name": "新组", "users": 30}],
               "unresolved": [{"target": "999", "users": 10, "reason": "no such group"}]},
    "calls": {"groups/get": 1, "groups/create": 1, "total": 2},
    "estimated_duration_s": 75.0,
    "invalid_by_reason": {"missing openid": 2, "bad openid": 5},
    "warnings": ["10 rows have a target group that cannot be used"],
    "can_run": True,
}


def test_view_of_a_plan() -> None:
    v = view(PLAN)
    assert v["tallies"] == {"valid": 90, "invalid": 7, "duplicate": 3, "total": 100}
    assert [(t["target"], t["new"], bool(t["unresolved"])) for t in v["targets"]] == [
        ("100", False, False), ("新组", True, False), ("999", False, True)]
    assert v["invalid_by_reason"][0] == ("bad openid", 5)
    assert v["calls"] == {"groups/get": 1, "groups/create": 1}
    bars = v["chart"]["bars"]
    assert bars[0]["width"] > bars[1]["width"] > bars[2]["width"] > 0
    assert [b["y"] for b in bars] == sorted(b["y"] for b in bars)


def test_the_figures_say_up_to_where_plan_does() -> None:
    """`plan` prints "up to N" users and calls unless it counted them; so does the page."""
    assert view({**PLAN, "moves_exact": False})["up_to"] is True
    assert view({**PLAN, "moves_exact": True})["up_to"] is False
    assert view(PLAN)["up_to"] is False  # a plan.json of 0.2.0 says nothing: no bound shown


def test_the_chart_shows_the_biggest_targets_only() -> None:
    many = {str(i): {"group_id": i, "users": i} for i in range(1, 41)}
    v = view({**PLAN, "groups": {"users_per_group": many}})
    assert len(v["chart"]["bars"]) == CHART_BARS
    assert v["chart"]["hidden"] == 40 - CHART_BARS
    assert v["chart"]["bars"][0]["title"] == "40"
    assert len(v["targets"]) == 40


def test_long_names_are_cut_in_the_chart_only() -> None:
    name = "很长的分组名称" * 6
    v = view({**PLAN, "groups": {"create": [{"name": name, "users": 1}]}})
    assert v["chart"]["bars"][0]["label"].endswith("…")
    assert v["chart"]["bars"][0]["title"] == name
    assert v["targets"][0]["target"] == name


def test_durations_and_times() -> None:
    assert [duration(s) for s in (None, 0, 59.6, 75, 3725)] == [
        "—", "0 s", "1 min 0 s", "1 min 15 s", "1 h 2 min"]
    assert when("2026-12-01T10:55:38+00:00") == "2026-12-01 10:55:38 UTC"
    assert when(None) == ""


def test_the_snapshot_source_and_what_the_other_would_cost() -> None:
    assert view(PLAN)["snapshot"] is None  # the groups backend: no choice to show
    tags = {**PLAN, "calls": {"tags/get": 1, "user/tag/get": 24, "total": 25},
            "snapshot_source": "user/tag/get",
            "snapshot_alternative": {"user/info/batchget": 1000}}
    shown = view(tags)["snapshot"]
    assert shown == {"key": "plan.snapshot_members", "calls": "24", "other": "1,000"}
    assert translator("en")(shown["key"], calls=shown["calls"], other=shown["other"]) == (
        "Snapshot from tag member lists: 24 user/tag/get calls instead of 1,000 "
        "user/info/batchget")
    batchget = {**tags, "calls": {"user/info/batchget": 3}, "snapshot_source":
                "user/info/batchget", "snapshot_alternative": {"user/tag/get": 8}}
    assert view(batchget)["snapshot"] == {"key": "plan.snapshot_batchget", "calls": "3",
                                          "other": "8"}
