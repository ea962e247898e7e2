"""A plan (as `batchmove plan` computes it) -> what the plan page draws: row tallies, one line
per target (new groups marked), the bar chart's geometry, calls, duration and quota fit.

Pure and free of HTML: the template escapes every name it prints.
"""

from __future__ import annotations

from typing import Any

from batchmove.models import RowStatus

CHART_BARS = 25  # the chart shows the biggest targets; the table lists them all
CHART_WIDTH = 640
BAR_HEIGHT = 22
LABEL_WIDTH = 200


def targets(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target with its users, biggest first: existing, new (to create), unusable."""
    groups = plan.get("groups", {})
    found = [{"target": str(t), "group_id": g.get("group_id"), "users": int(g["users"]),
              "new": False, "unresolved": ""}
             for t, g in groups.get("users_per_group", {}).items()]
    found += [{"target": str(g["name"]), "group_id": None, "users": int(g["users"]),
               "new": True, "unresolved": ""} for g in groups.get("create", [])]
    found += [{"target": str(u["target"]), "group_id": None, "users": int(u["users"]),
               "new": False, "unresolved": str(u.get("reason", ""))}
              for u in groups.get("unresolved", [])]
    return sorted(found, key=lambda t: (-t["users"], t["target"]))


def chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of an inline SVG: label, length and value of each of the biggest targets."""
    shown = rows[:CHART_BARS]
    most = max((r["users"] for r in shown), default=0) or 1
    span = CHART_WIDTH - LABEL_WIDTH - 70
    bars = [{"label": _short(r["target"]), "title": r["target"], "users": r["users"],
             "new": r["new"], "bad": bool(r["unresolved"]),
             "y": i * (BAR_HEIGHT + 6), "width": max(1, round(span * r["users"] / most))}
            for i, r in enumerate(shown)]
    return {"bars": bars, "width": CHART_WIDTH, "label_width": LABEL_WIDTH,
            "bar_height": BAR_HEIGHT, "height": max(1, len(bars)) * (BAR_HEIGHT + 6),
            "hidden": max(0, len(rows) - len(shown))}


def _short(name: str) -> str:
    return name if len(name) <= 24 else name[:23] + "…"


def tallies(plan: dict[str, Any]) -> dict[str, int]:
    rows = dict(plan.get("rows", {}))
    return {"valid": int(rows.get(RowStatus.PENDING, 0)),
            "invalid": int(rows.get(RowStatus.INVALID, 0)),
            "duplicate": int(rows.get(RowStatus.DUPLICATE, 0)),
            "total": sum(int(n) for n in rows.values())}


def view(plan: dict[str, Any]) -> dict[str, Any]:
    rows = targets(plan)
    calls = {k: v for k, v in plan.get("calls", {}).items() if k != "total"}
    return {
        "tallies": tallies(plan),
        "invalid_by_reason": sorted(plan.get("invalid_by_reason", {}).items(),
                                    key=lambda kv: -kv[1]),
        "targets": rows,
        "chart": chart(rows),
        "users_to_move": plan.get("users_to_move", 0),
        # as `plan` prints it: the users and the move calls are a bound until counted
        "up_to": plan.get("moves_exact") is False,
        "calls": calls,
        "calls_total": plan.get("calls", {}).get("total", 0),
        "snapshot": snapshot(plan),
        "eta_s": plan.get("estimated_duration_s"),
        "quota": plan.get("quota", {}),
        "warnings": plan.get("warnings", []),
        "blocked": plan.get("blocked", ""),
        "can_run": bool(plan.get("can_run")),
    }


def snapshot(plan: dict[str, Any]) -> dict[str, Any] | None:
    """The tags backend's snapshot source and what the other would cost; None when the plan
    had no choice to make (groups backend, no snapshot)."""
    source, other = plan.get("snapshot_source"), plan.get("snapshot_alternative") or {}
    if not source or not other:
        return None
    return {"key": "plan.snapshot_members" if source == "user/tag/get"
            else "plan.snapshot_batchget",
            "calls": f"{plan.get('calls', {}).get(source, 0):,}",
            "other": f"{next(iter(other.values())):,}"}


def duration(seconds: float | None) -> str:
    """3725 -> '1 h 2 min', 75 -> '1 min 15 s' (no language: units are international)."""
    if seconds is None:
        return "—"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


def when(stamp: str | None) -> str:
    """'2026-12-01T10:55:38+00:00' -> '2026-12-01 10:55:38 UTC'."""
    if not stamp:
        return ""
    return stamp.replace("T", " ").replace("+00:00", " UTC")
