"""`export`: the account's followers (or a segment of them) to a spreadsheet that is itself an
input. The story, top to bottom:

    settings -> groups/get or tags/get (names, selection) -> checkpoint (resume?)
        -> first page -> estimate and quota -> pages + user/info/batchget -> checkpoint per page
        -> CSV/XLSX (temp name, rename, mode 600) -> checkpoint removed

The columns are chosen so the loader reads the file back as a no-op job: groups export
`openid, current_groupid, current_group_name, to_group_name` (only `to_group_name` is a target
alias: the `current_` columns are never read as targets), tags export `openid,
current_tag_names, tagid_list` (`tagid_list` is the tags backend's "exactly this set").
Measured: 1,000,000 followers on the sandbox at --rate 0 in docs/performance.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from batchmove.engine.backend import client_for
from batchmove.engine.listing import Lister, Streams
from batchmove.engine.moves import ProgressClock
from batchmove.engine.runner import RetryPolicy, with_retries
from batchmove.engine.signals import StopSignals, signal_stop
from batchmove.errors import (
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_STOPPED,
    ApiError,
    DailyQuotaError,
    FatalApiError,
    MinuteQuotaError,
    TokenError,
    TransientError,
    UsageError,
)
from batchmove.intake import jobfile
from batchmove.ledger.checkpoint import Cursor, ExportCheckpoint, Follower
from batchmove.models import Backend, JobSpec, Selection, Target
from batchmove.output.exportfile import (
    Columns,
    GroupColumns,
    TagColumns,
    TargetColumn,
    write_export,
)
from batchmove.results import Events, StopReason
from batchmove.wechat.client import FollowerPage, WeChatClient

SUFFIXES = (".csv", ".xlsx")
INFO_ENDPOINT = "user/info/batchget"
#: job keys that mean something to an export (the others are a run's)
EXPORT_KEYS = ("api_base", "credentials", "rate", "concurrency", "retries", "timeout",
               "sandbox", "name", "account")


@dataclass(frozen=True)
class ExportSpec:
    """What to export and where; `settings` carries the connection keys of a job."""

    out: Path
    backend: Backend = "groups"
    groups: tuple[str, ...] = ()  # names or ids (digits)
    tags: tuple[str, ...] = ()
    settings: JobSpec = field(default_factory=lambda: JobSpec(input=Path()))
    #: segment jobs: (column, value) written after each openid instead of the current state
    target: tuple[str, str] | None = None

    def fingerprint(self) -> str:
        """A checkpoint belongs to one export: the same file, selection, backend and account."""
        account = [self.settings.account] if self.settings.account else []  # a platform's
        blob = json.dumps([str(self.out.resolve()), self.backend, self.groups, self.tags,
                           self.settings.api_base, self.target, *account], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class ExportResult:
    """How an export ended. `path` is the file written (None when it stopped early)."""

    exit_code: int
    message: str
    path: Path | None
    rows: int
    calls: dict[str, int]
    stop_reason: str
    backend: str
    estimate: dict[str, Any] = field(default_factory=dict)


class _Listing:
    """Progress of the listing for whoever watches (`Events.progress`, phase "listing":
    `moved` counts the followers listed so far)."""

    def __init__(self, events: Events, listed: int) -> None:
        self.events, self.listed = events, listed
        self.clock: ProgressClock | None = None

    def start(self, total: int) -> None:
        self.clock = ProgressClock("listing", max(total, self.listed))
        self.events.progress(self.clock.report(self.listed, 0))

    def add(self, openids: int) -> None:
        self.listed += openids
        if self.clock is not None:
            self.clock.total = max(self.clock.total, self.listed)
            self.events.progress(self.clock.report(self.listed, 0))


def check_export(spec: ExportSpec) -> ExportSpec:
    """Refuse what cannot work before any call: one line each, exit 2."""
    out = spec.out
    if out.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--out must end in .csv or .xlsx, got {str(out)!r}")
    if not out.parent.is_dir():
        raise UsageError(f"the output directory {out.parent} does not exist")
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory; give a file name")
    if spec.backend not in ("groups", "tags"):
        raise UsageError(f'backend must be "groups" or "tags", got {spec.backend!r}')
    if spec.groups and spec.tags:
        raise UsageError("choose followers by --group or by --tag, not both")
    for value in (*spec.groups, *spec.tags):
        if not value.strip():
            raise UsageError("--group and --tag need a name or an id, got an empty value")
    return spec


# --- the story ---------------------------------------------------------------------------------
async def export_followers(spec: ExportSpec, events: Events | None = None, *,
                           handle_signals: bool = False) -> ExportResult:
    notify = events or Events()
    reason, error = StopReason.DONE, None
    estimate: dict[str, Any] = {}
    async with client_for(spec.settings) as client:
        try:  # names first: a bad --group/--tag leaves no checkpoint behind
            names, streams = await _select(client, spec)
        except (DailyQuotaError, FatalApiError, TokenError, TransientError,
                MinuteQuotaError) as exc:
            return _stopped(spec, _reason(exc), exc, 0, dict(client.calls), estimate)
        with ExportCheckpoint(spec.out).open() as checkpoint, \
                signal_stop(handle_signals) as stop:
            if checkpoint.start(spec.fingerprint()) and checkpoint.cursor() != Cursor():
                notify.info(f"resuming the export to {spec.out}: {checkpoint.count():,} "
                            "followers already listed")
            try:
                if not checkpoint.cursor().done:
                    reason, error = await _list(client, spec, streams, checkpoint, stop,
                                                notify, estimate)
            except (DailyQuotaError, FatalApiError, TokenError, TransientError,
                    MinuteQuotaError) as exc:
                reason, error = _reason(exc), exc
            rows, calls = checkpoint.count(), dict(client.calls)
            if reason is not StopReason.DONE or stop.reason is not None:
                return _stopped(spec, stop.reason or reason, error, rows, calls, estimate)
            rows = write_export(spec.out, checkpoint, _columns(spec, names))
    checkpoint.remove()
    return ExportResult(EXIT_OK, f"exported {rows:,} followers to {spec.out}", spec.out, rows,
                        calls, StopReason.DONE.value, spec.backend, estimate)


def _columns(spec: ExportSpec, names: dict[int, str]) -> Columns:
    """What follows the openid: a fixed target (segment jobs), or the current tags or group."""
    if spec.target is not None:
        return TargetColumn(*spec.target)
    return TagColumns(names) if spec.backend == "tags" else GroupColumns(names)


def _reason(exc: ApiError) -> StopReason:
    return StopReason.DAILY_QUOTA if isinstance(exc, DailyQuotaError) else StopReason.FATAL


async def _select(client: WeChatClient, spec: ExportSpec) -> tuple[dict[int, str], Streams]:
    """The names the file shows, and the streams the selection lists (names resolved)."""
    policy = RetryPolicy(attempts=spec.settings.retries)
    groups: list[Target] = []
    tags: list[Target] = []
    if spec.backend == "groups" or spec.groups:
        groups = await with_retries(client.get_groups, policy)
    if spec.backend == "tags" or spec.tags:
        tags = await with_retries(client.get_tags, policy)
    streams = Streams()
    if spec.groups:
        streams = Streams(keep_groups=frozenset(_resolve(groups, spec.groups, "group")))
    elif spec.tags:
        ids = tuple(dict.fromkeys(_resolve(tags, spec.tags, "tag")))
        streams = Streams(ids, sum(t.count for t in tags if t.id in ids))
    names = {g.id: g.name for g in (tags if spec.backend == "tags" else groups)}
    return names, streams


def _resolve(known: list[Target], wanted: Sequence[str], what: str) -> list[int]:
    """Each name or id to an id of the account; an unknown or ambiguous one is a UsageError."""
    ids = []
    for value in wanted:
        text = value.strip()
        hits = [g.id for g in known if (str(g.id) == text if text.isdigit() else g.name == text)]
        if not hits:
            shown = ", ".join(f"{g.name} ({g.id})" for g in known[:20])
            raise UsageError(f"unknown {what} {text!r}; this account has: {shown or 'none'}")
        if len(hits) > 1:
            raise UsageError(f"{what} name {text!r} is held by {what}s "
                             f"{', '.join(map(str, hits))}; give the id instead")
        ids.append(hits[0])
    return ids


async def _list(client: WeChatClient, spec: ExportSpec, streams: Streams,
                checkpoint: ExportCheckpoint, stop: StopSignals, events: Events,
                estimate: dict[str, Any]) -> tuple[StopReason, ApiError | None]:
    """Every remaining page into the checkpoint; the estimate (filled in) is printed after
    the first page."""
    progress = _Listing(events, checkpoint.count())

    async def first_page(page: FollowerPage) -> None:
        estimate.update(await _estimate(client, spec, streams, page, checkpoint.count()))
        events.info(describe_estimate(estimate))
        progress.start(estimate["followers"])

    def on_page(followers: list[Follower], cursor: Cursor, openids: int) -> None:
        checkpoint.record_page(followers, cursor)
        progress.add(openids)

    settings = spec.settings
    lister = Lister(client, streams, on_page, stop, concurrency=settings.workers,
                    retries=settings.retries, on_first_page=first_page)
    outcome = await lister.run(checkpoint.cursor())
    return outcome.reason, outcome.error


async def _estimate(client: WeChatClient, spec: ExportSpec, streams: Streams,
                    page: FollowerPage, done: int) -> dict[str, Any]:
    """Followers to list, the calls it costs and today's quota of each endpoint."""
    listing = streams.endpoint()
    followers = streams.tag_members if streams.tag_ids else page.total
    left = max(followers - done, len(page.openids))
    per_page = max(len(page.openids), 1)
    calls = {listing: math.ceil(left / per_page) + streams.count, INFO_ENDPOINT:
             math.ceil(left / 100)}
    quota = {}
    for endpoint in calls:
        try:
            found = await with_retries(partial(client.get_quota, endpoint),
                                       RetryPolicy(attempts=spec.settings.retries))
            quota[endpoint] = found.remain
        except (ApiError, ValueError):  # not every account may read its quotas
            continue
    days = max([math.ceil(calls[e] / quota[e]) if quota[e] else math.inf for e in quota] or [1])
    return {"followers": followers, "left": left, "page_size": per_page, "calls": calls,
            "quota_remain": quota, "days": days}


def describe_estimate(estimate: dict[str, Any]) -> str:
    """The plan-style line printed before the listing starts."""
    calls = " + ".join(f"{n:,} {e}" for e, n in estimate["calls"].items())
    quota = ", ".join(f"{e} {n:,}" for e, n in estimate["quota_remain"].items()) or "unknown"
    days = estimate["days"]
    fit = ("fits in today's quota" if days <= 1 else
           "the quota is used up: it stops with exit 3; run the same command again after "
           "it resets" if days == math.inf else
           f"needs about {days} days of quota: it stops with exit 3 each day; run the same "
           "command again the next day to resume")
    return (f"export: about {estimate['followers']:,} followers ({estimate['left']:,} left to "
            f"list, {estimate['page_size']:,} a page): about {calls} calls; quota left today: "
            f"{quota}; {fit}")


def _stopped(spec: ExportSpec, reason: StopReason, error: ApiError | None, rows: int,
             calls: dict[str, int], estimate: dict[str, Any]) -> ExportResult:
    where = f"{rows:,} followers listed so far; run the same command again to resume"
    if reason is StopReason.DAILY_QUOTA:
        endpoint = f" of {error.endpoint}" if error is not None and error.endpoint else ""
        code, message = EXIT_STOPPED, f"the daily API quota{endpoint} is used up (45009); {where}"
    elif reason in (StopReason.SIGINT, StopReason.SIGTERM):
        code = EXIT_SIGINT if reason is StopReason.SIGINT else EXIT_SIGTERM
        message = f"interrupted; {where}"
    else:
        what = error.message if error is not None else "stopped"
        code, message = EXIT_STOPPED, f"stopped: {what} ({where})"
    return ExportResult(code, message, None, rows, calls, reason.value, spec.backend, estimate)


def export_spec(out: str | os.PathLike[str], *, backend: Backend | str | None = None,
                groups: Sequence[str | int] = (), tags: Sequence[str | int] = (),
                job: str | os.PathLike[str] | None = None, **overrides: Any) -> ExportSpec:
    """The spec from the library's or the CLI's arguments, validated (UsageError, exit 2).
    `job` lends its connection keys (and its `[select]` when no group or tag is given)."""
    unknown = sorted(set(overrides) - set(EXPORT_KEYS))
    if unknown:
        raise UsageError(f"unknown export setting {unknown[0]!r} "
                         f"(known: {', '.join(EXPORT_KEYS)})")
    values: dict[str, Any] = (jobfile.load_job(Path(job), need_input=False) if job is not None
                              else {"input": Path(), "name": "export"})
    chosen: Selection | None = values.pop("select", None)
    settings = JobSpec(**(values | jobfile.read_overrides(overrides)))
    if chosen is not None and not groups and not tags:
        groups = (chosen.value,) if chosen.kind == "group" else ()
        tags = (chosen.value,) if chosen.kind == "tag" else ()
    spec = ExportSpec(Path(out).expanduser(), settings.backend, tuple(map(str, groups)),
                      tuple(map(str, tags)), settings)
    return check_export(replace(spec, backend=backend) if backend else spec)  # type: ignore[arg-type]
