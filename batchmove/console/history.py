"""The home page's history: runs filtered by state, person and date, a page at a time."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from typing import Any

PAGE_SIZE = 25


def read_filters(query: Mapping[str, str]) -> dict[str, str]:
    """The filters a query names (unknown or malformed values are dropped, not errors)."""
    found = {k: query.get(k, "").strip()[:40] for k in ("state", "who", "since", "until")}
    for key in ("since", "until"):
        try:
            date.fromisoformat(found[key])
        except ValueError:
            found[key] = ""
    return {k: v for k, v in found.items() if v}


def matches(run: dict[str, Any], filters: Mapping[str, str]) -> bool:
    day = str(run.get("created_at") or run.get("started_at") or "")[:10]
    people = {run.get("submitted_by"), run.get("approved_by")}
    return ((not filters.get("state") or run.get("state") == filters["state"])
            and (not filters.get("who") or filters["who"] in people)
            and (not filters.get("since") or day >= filters["since"])
            and (not filters.get("until") or (bool(day) and day <= filters["until"])))


def page_of(runs: list[dict[str, Any]], filters: Mapping[str, str],
            page: str) -> tuple[list[dict[str, Any]], int, int]:
    """(the runs of one page, its number from 1, how many pages)."""
    chosen = [r for r in runs if matches(r, filters)]
    pages = max(1, math.ceil(len(chosen) / PAGE_SIZE))
    try:
        number = min(max(1, int(page)), pages)
    except ValueError:
        number = 1
    start = (number - 1) * PAGE_SIZE
    return chosen[start:start + PAGE_SIZE], number, pages


def people_of(runs: list[dict[str, Any]]) -> list[str]:
    """Everyone who submitted or approved a run here (the filter's choices)."""
    return sorted({str(p) for r in runs for p in (r.get("submitted_by"), r.get("approved_by"))
                   if p})
