"""Helpers shared by the engine tests: inputs, specs and checks against a real sandbox."""

from __future__ import annotations

import csv
import math
import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchmove.flows.run import RunOptions, run_job
from batchmove.models import JobSpec
from batchmove.results import Events, Progress, RunResult
from batchmove.sandbox import RunningSandbox, SandboxConfig, sandbox_openids


class QuietEvents(Events):
    """Events that record what the pipeline said."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.progress_calls = 0
        self.last: Progress | None = None

    def info(self, message: str) -> None:
        self.lines.append(message)

    def progress(self, progress: Progress) -> None:
        self.progress_calls += 1
        self.last = progress


def write_moves(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = (
        "openid", "group_name")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def spread(n: int, groups: list[str], seed: int = 0) -> list[tuple[str, str]]:
    """n sandbox followers spread round-robin over `groups`."""
    return [(openid, groups[i % len(groups)]) for i, openid in enumerate(sandbox_openids(n, seed))]


def spec_for(sb: RunningSandbox, input_path: Path, out: Path, **changes: Any) -> JobSpec:
    settings: dict[str, Any] = {"rate": 0.0, "concurrency": 8, "timeout": 5.0,
                                "create_groups": True, "snapshot": False}
    settings.update(changes)
    return JobSpec(input=input_path, name="t", api_base=sb.base_url, out=out, **settings)


async def run(spec: JobSpec, **options: bool) -> RunResult:
    return await run_job(spec, RunOptions(**options), QuietEvents())


BACKENDS = ("groups", "tags")


def account(groups: Sequence[str] = (), **settings: Any) -> SandboxConfig:
    """A sandbox account that has the named groups, and tags of the same names."""
    return SandboxConfig(groups=list(groups), tags=list(groups), **settings)


def group_ids_by_name(sb: RunningSandbox, backend: str = "groups") -> dict[str, list[int]]:
    names: dict[str, list[int]] = {}
    found = (sb.state.tags.listing() if backend == "tags" else
             [{"id": g.id, "name": g.name} for g in sb.state.groups.values()])
    for target in found:
        names.setdefault(target["name"], []).append(target["id"])
    return names


def user_state(sb: RunningSandbox, backend: str = "groups") -> dict[str, Any]:
    """Every user's group, or every tagged user's tag ids."""
    return (sb.state.tags.user_tags_snapshot() if backend == "tags"
            else dict(sb.state.members))


def assert_state_matches(sb: RunningSandbox, rows: list[tuple[str, str]],
                         backend: str = "groups") -> None:
    """Every listed user is in the group (or carries the tag) named for it, and each name is
    exactly one group (tag): nothing was created twice."""
    names = group_ids_by_name(sb, backend)
    for name in {g for _, g in rows}:
        assert len(names.get(name, [])) == 1, f"{name!r} exists {len(names.get(name, []))}x"
    if backend == "tags":
        wrong = [(o, g) for o, g in rows if names[g][0] not in sb.state.tags.tag_ids_of(o)]
    else:
        wrong = [(o, g) for o, g in rows if sb.state.members[o] != names[g][0]]
    assert not wrong, f"{len(wrong)} users not moved to their target, e.g. {wrong[:3]}"


def moves_applied(sb: RunningSandbox, backend: str = "groups") -> list[str]:
    """Openids in the order move (or tag) calls applied them."""
    if backend == "tags":
        return [openid for action, openid, _ in sb.state.tag_log if action == "tag"]
    return sb.state.move_log


def ledger_statuses(run_dir: Path) -> Counter[str]:
    with sqlite3.connect(run_dir / "ledger.sqlite") as conn:
        return Counter(dict(conn.execute("SELECT status, count(*) FROM rows GROUP BY status")))


def moved_in_ledger(run_dir: Path) -> set[str]:
    """Openids the ledger records as moved (none if a kill came before its tables existed)."""
    if not (run_dir / "ledger.sqlite").exists():
        return set()
    with sqlite3.connect(run_dir / "ledger.sqlite") as conn:
        tables = {t for (t,) in conn.execute("SELECT name FROM sqlite_master")}
        if "rows" not in tables:
            return set()
        return {o for (o,) in conn.execute("SELECT openid FROM rows WHERE status = 'moved'")}


def expected_move_calls(rows: list[tuple[str, str]], batch: int = 50) -> int:
    return sum(math.ceil(n / batch) for n in Counter(g for _, g in rows).values())


def report_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "report.csv").open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))
