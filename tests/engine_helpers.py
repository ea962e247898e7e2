"""Helpers shared by the engine tests: inputs, specs and checks against a real sandbox."""

from __future__ import annotations

import csv
import math
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from batchmove.models import JobSpec
from batchmove.pipeline import RunOptions, RunResult, run_job
from batchmove.sandbox import RunningSandbox, sandbox_openids


class QuietEvents:
    """Events that record what the pipeline said, and confirm nothing."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.progress_calls = 0

    def info(self, message: str) -> None:
        self.lines.append(message)

    def confirm(self, plan: dict[str, Any]) -> bool:
        raise AssertionError("tests pass yes=True; nobody should be asked")

    def progress(self, phase: str, done: int, failed: int, total: int) -> None:
        self.progress_calls += 1


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
    return await run_job(spec, RunOptions(yes=True, **options), QuietEvents())


def group_ids_by_name(sb: RunningSandbox) -> dict[str, list[int]]:
    names: dict[str, list[int]] = {}
    for group in sb.state.groups.values():
        names.setdefault(group.name, []).append(group.id)
    return names


def assert_state_matches(sb: RunningSandbox, rows: list[tuple[str, str]]) -> None:
    """Every listed user is in the group named for it, and each name is one group."""
    names = group_ids_by_name(sb)
    for name in {g for _, g in rows}:
        assert len(names.get(name, [])) == 1, f"group {name!r} exists {len(names.get(name, []))}x"
    wrong = [(o, g) for o, g in rows if sb.state.members[o] != names[g][0]]
    assert not wrong, f"{len(wrong)} users not in their target group, e.g. {wrong[:3]}"


def ledger_statuses(run_dir: Path) -> Counter[str]:
    with sqlite3.connect(run_dir / "ledger.sqlite") as conn:
        return Counter(dict(conn.execute("SELECT status, count(*) FROM rows GROUP BY status")))


def moved_in_ledger(run_dir: Path) -> set[str]:
    with sqlite3.connect(run_dir / "ledger.sqlite") as conn:
        return {o for (o,) in conn.execute("SELECT openid FROM rows WHERE status = 'moved'")}


def expected_move_calls(rows: list[tuple[str, str]], batch: int = 50) -> int:
    return sum(math.ceil(n / batch) for n in Counter(g for _, g in rows).values())


def report_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "report.csv").open(encoding="utf-8-sig", newline="") as f:
        return list(csv.DictReader(f))
