"""The WeCom robot's markdown message for one run, cut to WeCom's 4,096 bytes of UTF-8.

The lines an on-call person needs come first (outcome, counts, where, how to resume) and the
failure reasons last, so a message that is too long loses reasons, never the resume command.
Only WeCom's markdown subset is used: headings, bold, quotes, inline code and
`<font color="info|comment|warning">`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchmove.errors import (
    EXIT_OK,
    EXIT_ROW_FAILURES,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STOPPED,
    EXIT_USAGE,
    redact,
)
from batchmove.models import STATUSES, NotifyOutcome

MAX_BYTES = 4096  # WeCom: markdown.content at most 4,096 bytes of UTF-8 (errcode 40058 beyond)
CUT_MARK = "\n…(cut)"
_COLORS = {"finish": "info", "stop": "comment", "failure": "warning"}
_LINE_MAX = 300


def outcome_of(exit_code: int, stop_reason: str | None) -> NotifyOutcome:
    """Which `[notify] on` entry a run's end belongs to (see `batchmove.output.notify`)."""
    if exit_code == EXIT_OK:
        return "finish"
    if exit_code in (EXIT_SIGINT, EXIT_SIGTERM):
        return "stop"
    if exit_code == EXIT_STOPPED and stop_reason not in ("fatal", "failure_threshold"):
        return "stop"
    return "failure"


def outcome_words(exit_code: int, stop_reason: str | None) -> str:
    if exit_code == EXIT_OK:
        return "done"
    if exit_code == EXIT_ROW_FAILURES:
        return "finished with row failures"
    if exit_code in (EXIT_SIGINT, EXIT_SIGTERM):
        return "interrupted, resumable"
    if exit_code == EXIT_STOPPED:
        return {"daily_quota": "stopped by the daily quota, resumable",
                "fatal": "stopped: fatal configuration error",
                "failure_threshold": "stopped: too many rows failed",
                }.get(stop_reason or "", "stopped early, resumable")
    return "refused: nothing was sent"


def format_message(summary: Mapping[str, Any], run_dir: Path, reasons: list[tuple[str, int]],
                   resume: str | None, limit: int = MAX_BYTES) -> str:
    """One markdown message; at most `limit` bytes of UTF-8."""
    code = int(summary.get("exit_code", EXIT_USAGE))
    stop = summary.get("stop_reason")
    color = _COLORS[outcome_of(code, stop)]
    counts = summary.get("counts") or {}
    lines = [
        f"## batchmove · {_short(str(summary.get('job', '')), 200)}: "
        f"<font color=\"{color}\">{outcome_words(code, stop)}</font>",
        f"> exit {code} · run {summary.get('run_id', '?')} · "
        f"{summary.get('started_at', '?')} → {summary.get('finished_at', '?')}",
    ]
    if code != EXIT_OK and summary.get("message"):
        lines.append(f"> {_short(redact(str(summary['message'])), _LINE_MAX)}")
    lines += [
        "**Counts:** " + " · ".join(f"{s} {int(counts.get(s, 0)):,}" for s in STATUSES),
        f"**Speed:** {float(summary.get('users_moved_per_s') or 0):,.1f} users/s · "
        f"**Duration:** {duration(float(summary.get('duration_s') or 0))}",
        f"**Run directory:** `{_short(str(run_dir.absolute()), _LINE_MAX)}`",
    ]
    if resume:  # row failures: the rows worth sending again; otherwise the resume
        label = "Retry" if code == EXIT_ROW_FAILURES else "Resume"
        lines.append(f"**{label}:** `{_short(resume, 1000)}`")
    if reasons:
        lines.append("**Top failure reasons:**")
    text = "\n".join(lines)
    for reason, n in reasons:
        more = f"\n> {n:,} × {_short(redact(reason), _LINE_MAX)}"
        if len((text + more).encode("utf-8")) > limit:
            break
        text += more
    return cut_utf8(text, limit)


def cut_utf8(text: str, limit: int = MAX_BYTES) -> str:
    """`text` in at most `limit` bytes of UTF-8, cut between characters, marked when cut."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    room = limit - len(CUT_MARK.encode("utf-8"))
    # a prefix of valid UTF-8 is valid except perhaps its last, truncated character: drop it
    return data[:max(room, 0)].decode("utf-8", "ignore") + CUT_MARK


def duration(seconds: float) -> str:
    """`2 h 5 min 3 s`, `4.2 s`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return " ".join(part for part in (f"{h} h" if h else "", f"{m} min" if m or h else "",
                                      f"{s} s") if part)


def _short(text: str, chars: int) -> str:
    text = " ".join(text.split())  # no newline may break the markdown's structure
    return text if len(text) <= chars else text[:chars - 1] + "…"
