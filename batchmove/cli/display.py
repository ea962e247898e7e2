"""What a person sees: the plan before saying yes, and progress (a live bar on a terminal, a
log line every 10 s otherwise)."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import click

from batchmove.errors import ConfirmationRequired
from batchmove.models import MAX_USER_INFO_BATCH, RowStatus
from batchmove.results import Events, Plan, Progress


class Terminal(Events):
    """Progress and questions for a person (live bar on a TTY) or a log (a line every 10 s)."""

    LOG_EVERY_S = 10.0

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self._last_log = 0.0
        self._bar: Any = None
        self._task: Any = None

    def info(self, message: str) -> None:
        if not self.quiet:
            self._stop_bar()
            click.echo(message, err=True)

    def confirm(self, plan: Plan) -> bool:
        """Show the plan and ask; without a terminal nobody can answer: refuse (exit 2)."""
        if not sys.stdin.isatty():
            raise ConfirmationRequired(
                "this run needs confirmation but there is no terminal to ask; pass --yes (or "
                "set confirm = false in the job file) to run unattended")
        self._stop_bar()
        click.echo(format_plan(plan), err=True)
        return click.confirm("Send these calls?", default=False, err=True)

    def progress(self, progress: Progress) -> None:
        if self.quiet:
            return
        if self.tty:
            self._show_bar(progress)
            return
        now = time.monotonic()
        if (now - self._last_log >= self.LOG_EVERY_S
                or progress.moved + progress.failed >= progress.total):
            self._last_log = now
            eta = f"{progress.eta_s:.0f} s" if progress.eta_s is not None else "unknown"
            done = "listed" if progress.phase == "listing" else "moved"
            click.echo(f"{progress.phase}: {progress.moved} {done}, {progress.failed} failed of "
                       f"{progress.total} ({progress.users_per_s:.0f} users/s, ETA {eta})",
                       err=True)

    def _show_bar(self, progress: Progress) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        if self._bar is None:
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[failed]} failed"),
                                 TextColumn("{task.fields[rate]} users/s"),
                                 TimeRemainingColumn(), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(progress.phase, total=progress.total, failed=0,
                                            rate=0)
        self._bar.update(self._task, completed=progress.moved + progress.failed,
                         total=progress.total, failed=progress.failed,
                         rate=int(progress.users_per_s), description=progress.phase)

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def close(self) -> None:
        self._stop_bar()


def format_plan(plan: Plan) -> str:
    """The plan as a person reads it before saying yes."""
    rows = dict(plan.rows)
    valid = rows.pop(RowStatus.PENDING, 0)
    tally = ", ".join([f"{valid} valid", *(f"{n} {status}" for status, n in sorted(rows.items()))])
    lines = ["Plan:", f"  rows: {tally}"]
    lines += [f"    invalid: {n} x {reason}"
              for reason, n in sorted(plan.invalid_by_reason.items())]
    if plan.selection is not None:
        listed = ", ".join(f"{n} {ep}" for ep, n in plan.selection["calls"].items())
        how = "frozen in input.csv" if plan.selection["frozen"] else f"listed with {listed}"
        lines.append(f"  selection: {plan.selection['select']}: "
                     f"{plan.selection['followers']} followers ({how})")
    lines.append(f"  users to move: {_users_line(plan)}")
    for target, g in plan.groups.get("users_per_group", {}).items():
        lines.append(f"    -> {target} (group {g['group_id']}): {g['users']} users")
    for new in plan.groups.get("create", []):
        lines.append(f"    -> {new['name']} (NEW group, will be created): {new['users']} users")
    for u in plan.groups.get("unresolved", []):
        lines.append(f"    !! {u['target']}: {u['users']} rows will fail: {u['reason']}")
    calls = ", ".join(f"{n} {ep}" for ep, n in plan.calls.items() if ep != "total")
    up_to = "" if plan.moves_exact else "up to "
    lines.append(f"  API calls: {up_to}{plan.calls['total']} ({calls})")
    lines += _snapshot_line(plan)
    if plan.estimated_duration_s is not None:
        lines.append(f"  estimated duration: {plan.estimated_duration_s} s")
    for endpoint, fit in plan.quota.items():
        verdict = "fits today" if fit["fits_today"] else f"needs {fit['days']} days"
        others = f" ({fit['others']} of them planned by other runs)" if fit["others"] else ""
        lines.append(f"  quota {endpoint}: needs {fit['needed']}, {fit['remain']} left "
                     f"today{others}: {verdict}")
    lines += [f"  warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _users_line(plan: Plan) -> str:
    """How many users will move, and how the plan knows (or that it cannot know)."""
    if plan.already_source == "input":
        return (f"{plan.users_to_move} ({plan.already} already in their target, by the "
                "input's current group or tags, as exported)")
    if plan.already_source == "count":
        read = ", ".join(f"{n} {ep}" for ep, n in plan.count_calls.items())
        return f"{plan.users_to_move} ({plan.already} already in their target: read now, {read})"
    if plan.moves_exact:
        return str(plan.users_to_move)
    reads = math.ceil(plan.users_to_move / MAX_USER_INFO_BATCH)
    return (f"up to {plan.users_to_move} (the snapshot skips users already in their target; "
            f"`plan --count-moves` counts them now with {reads} user/info/batchget calls)")


def _snapshot_line(plan: Plan) -> list[str]:
    """The tags backend's snapshot source, and what the source not chosen would cost."""
    source, other = plan.snapshot_source, plan.snapshot_alternative
    if source is None or not other:
        return []
    (other_source, other_calls), = other.items()
    how = "tag member lists" if source == "user/tag/get" else "user info in bulk"
    return [f"  snapshot from {how}: {plan.calls.get(source, 0):,} {source} calls instead of "
            f"{other_calls:,} {other_source}"]

