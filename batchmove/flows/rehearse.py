"""`rehearse`: a job run from start to undo against a copy of the account. The story:

    export file -> a sandbox on 127.0.0.1 with exactly its followers, groups, tags (seed.py)
        -> plan -> run -> verify -> rollback --apply      (the job's settings, but the address
        -> what the real run would do and cost              and credentials: the sandbox's)
        -> the final state against the export (= the job's intent?), and after the rollback
           (= the export?)

Nothing leaves 127.0.0.1: the job's `api_base`, `[credentials]` (token command, component),
`[notify]` and platform accounts are replaced before anything runs, and the sandbox's appid
and secret reach the runs through variables of this process named after the sandbox's port
(`rehearsal_credentials`), set only for the rehearsal, so rehearsals running at once in one
process never set or clear each other's. Its run directory is the job's with `-rehearsal`
appended; its account in the machine's registry is the sandbox's address, forgotten at the
end.
"""

from __future__ import annotations

import os
import shutil
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from batchmove.engine.sharing import account_status
from batchmove.errors import EXIT_OK, EXIT_ROW_FAILURES, EXIT_STOPPED, EXIT_USAGE, UsageError
from batchmove.flows.plan import plan_job
from batchmove.flows.rollback import apply_rollback
from batchmove.flows.run import RunOptions, run_job
from batchmove.flows.verify import verify_run
from batchmove.ledger.reader import LedgerReader
from batchmove.ledger.store import Ledger
from batchmove.models import Credentials, JobSpec, Notify, RowStatus
from batchmove.registry import Registry, account_of
from batchmove.registry.aimd import SAFE_START
from batchmove.results import Counts, Events, Plan, RollbackFile, RunResult, VerifyResult
from batchmove.sandbox import SandboxConfig, SandboxConfigError, SandboxState, running_sandbox
from batchmove.sandbox.seed import PlanFacts, read_plan

SUFFIX = "-rehearsal"
MARKER = "REHEARSAL"  # a run directory holding it is a rehearsal's, replaced by the next one
#: how the names of the variables the rehearsal's runs take the sandbox's appid and secret
#: from begin (one set per sandbox: `rehearsal_credentials`; the token's is never set)
ENV_PREFIX = "BATCHMOVE_REHEARSAL_"
_SEEDED_KEYS = ("users", "users_file", "openids", "from_file")
_UNSENT = frozenset({RowStatus.INVALID.value, RowStatus.DUPLICATE.value})  # never sent


@dataclass(frozen=True)
class Change:
    """Users whose group (or tag set) went from `before` to `after`, as labels."""

    before: str
    after: str
    users: int


@dataclass(frozen=True)
class RehearsalResult:
    """What the rehearsal did and found. `exit_code`: the run's (0, 1, 2, 3, 130, 143), or 1
    when the final state is not the job's intent or the rollback did not restore the export."""

    exit_code: int
    message: str
    run_dir: Path
    plan: Plan
    run: RunResult | None = None
    verify: VerifyResult | None = None
    rollback: RollbackFile | None = None
    moved: dict[str, Counts] = field(default_factory=dict)  # target as typed -> rows
    calls: dict[str, dict[str, int]] = field(default_factory=dict)  # phase -> endpoint -> n
    expected_s: float | None = None  # the run's calls at the account's rate
    rate_basis: str = ""
    changes: list[Change] = field(default_factory=list)  # the final state against the export
    changed: int = 0  # users who changed
    intended: int = 0  # users the job means to change (rows sent whose target they lack)
    unintended: int = 0  # changed, but not as the job says (nobody else may change)
    unmoved: int = 0  # meant to change but not where the job says (failed or unsent rows)
    not_restored: int = 0  # users the rollback left different from the export


def rehearsal_dir(spec: JobSpec) -> Path:
    """The job's run directory with `-rehearsal` appended, never the real one."""
    usual = spec.out_dir.absolute()
    return usual.with_name(usual.name + SUFFIX)


def sandbox_config(spec: JobSpec, export: Path, plan: PlanFacts | None) -> SandboxConfig:
    """The job's `[sandbox]` settings (faults, pushback, quotas) with the export's followers,
    and the real account's quotas left from a plan when given."""
    settings = {k: v for k, v in spec.sandbox.items() if k not in _SEEDED_KEYS}
    quotas = plan.quotas if plan is not None else {}
    settings["daily_quota"] = {**quotas, **settings.get("daily_quota", {})}
    return SandboxConfig(**settings, from_file=str(export))


def rehearsal_credentials(base_url: str) -> Credentials:
    """Where a rehearsal's runs find its sandbox's appid and secret: variables named after
    the sandbox's port (two sandboxes listening at once never share one)."""
    port = urlsplit(base_url).port
    return Credentials(appid_env=f"{ENV_PREFIX}APPID_{port}",
                       secret_env=f"{ENV_PREFIX}SECRET_{port}",
                       token_env=f"{ENV_PREFIX}TOKEN_{port}")


def rehearsal_spec(spec: JobSpec, base_url: str) -> JobSpec:
    """The job against the sandbox: its address and credentials, no notification, no
    platform account, its own run directory; every other setting the job's."""
    return replace(spec, api_base=base_url, credentials=rehearsal_credentials(base_url),
                   notify=Notify(), accounts=(), account=None, sandbox={},
                   out=rehearsal_dir(spec), confirm=False)


@contextmanager
def _sandbox_credentials(state: SandboxState, where: Credentials) -> Iterator[None]:
    """The sandbox's appid and secret (not secrets) where the rehearsal's runs look."""
    names = (where.appid_env, where.secret_env, where.token_env)
    saved = {name: os.environ.get(name) for name in names}
    os.environ[names[0]], os.environ[names[1]] = state.appid, state.secret
    os.environ.pop(names[2], None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _fresh(run_dir: Path) -> None:
    """An earlier rehearsal's directory is replaced; anything else there is refused."""
    if run_dir.exists():
        if not (run_dir / MARKER).is_file() and any(run_dir.iterdir()):
            raise UsageError(f"{run_dir} exists and is not a rehearsal's run directory; move "
                             "it away or give the job another `out`")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / MARKER).write_text("a batchmove rehearsal: replaced by the next one\n",
                                  encoding="utf-8")


async def rehearse(spec: JobSpec, export: Path, events: Events, *,
                   plan_json: Path | None = None, handle_signals: bool = False,
                   rate: float | Literal["auto"] | None = None) -> RehearsalResult:
    """Start the sandbox from `export`, then plan, run, verify and roll back the job on it,
    at `rate` (default: the job's); the expected time is the job's rate's."""
    if not spec.snapshot:
        raise UsageError("a rehearsal ends with the run's rollback, which needs its snapshot: "
                         "the job says snapshot = false")
    try:  # the plan read once, every value checked, for both its quotas and its rates
        plan = read_plan(plan_json) if plan_json is not None else None
        config = sandbox_config(spec, export, plan)
        state = SandboxState(config)
    except (TypeError, SandboxConfigError) as exc:
        raise UsageError(str(exc)) from None
    real_rate, basis = expected_rate(spec, plan)
    events.info(f"rehearsal: {len(state.followers):,} followers from {export}, on a sandbox at "
                "127.0.0.1; the job's api_base, credentials and [notify] are not used")
    async with running_sandbox(config, host="127.0.0.1", port=0, state=state) as sandbox:
        rspec = rehearsal_spec(spec, sandbox.base_url)
        rspec = replace(rspec, rate=rate) if rate is not None else rspec
        _fresh(rspec.out_dir)
        with _sandbox_credentials(state, rspec.credentials):
            try:
                result = await _phases(rspec, state, events, handle_signals)
            finally:
                registry = Registry()
                registry.forget(account_of(rspec))
                registry.close()
    expected, left_out = _expected_seconds(result.calls.get("run", {}), real_rate)
    if left_out:
        basis += f"; {', '.join(left_out)} at the safe start, {SAFE_START:g} calls/s"
    return replace(result, expected_s=expected, rate_basis=basis)


async def _phases(spec: JobSpec, state: SandboxState, events: Events,
                  handle_signals: bool) -> RehearsalResult:
    before = _Memberships.of(state)
    calls = _CallLog(state)
    plan = await plan_job(spec, events)
    calls.phase("plan")
    if not plan.can_run:
        return RehearsalResult(EXIT_USAGE, f"the job cannot run: {plan.blocked}",
                               spec.out_dir, plan, calls=calls.phases)
    options = RunOptions(restart=True, handle_signals=handle_signals)
    run = await run_job(spec, options, events)
    calls.phase("run")
    done = RehearsalResult(run.exit_code, run.message, spec.out_dir, plan, run,
                           calls=calls.phases, moved=_moved(spec.out_dir))
    if run.exit_code not in (EXIT_OK, EXIT_ROW_FAILURES, EXIT_STOPPED):
        return done
    diff = _diff(spec, state, before, _intent(spec, state, before))
    state.quotas.clear()  # verify and undo on a day of their own, with WeChat's usual quotas:
    state.faults = replace(state.faults, daily_quota={})  # the run may have used one up
    verify = await verify_run(spec.out_dir, None, events, spec=spec)  # not the job file's
    calls.phase("verify")
    undo = await apply_rollback(spec.out_dir, None, options, events)
    calls.phase("rollback")
    left = len(before.differ(_Memberships.of(state), state.followers))
    done = replace(done, verify=verify, rollback=undo, calls=calls.phases,
                   changes=diff.changes, changed=diff.changed, intended=diff.intended,
                   unintended=diff.unintended, unmoved=diff.unmoved, not_restored=left)
    return replace(done, exit_code=_exit_code(done), message=_message(done))


class _CallLog:
    """The calls the sandbox received in each phase (what the real account would count)."""

    def __init__(self, state: SandboxState) -> None:
        self.state, self.seen = state, Counter(state.calls)
        self.phases: dict[str, dict[str, int]] = {}

    def phase(self, name: str) -> None:
        now = Counter(self.state.calls)
        self.phases[name] = dict(sorted((now - self.seen).items()))
        self.seen = now


def _moved(run_dir: Path) -> dict[str, Counts]:
    with LedgerReader(run_dir) as reader:
        return reader.targets()


# --- the state, the intent and the difference ----------------------------------------------

@dataclass(frozen=True)
class _Memberships:
    """Each follower's group (by position) and each tagged follower's tags, copied."""

    groups: array[int]
    tags: dict[str, frozenset[int]]

    @classmethod
    def of(cls, state: SandboxState) -> _Memberships:
        return cls(state.members.group_ids(), dict(state.tags.user_tags))  # shared, immutable

    def differ(self, other: _Memberships, followers: list[str]) -> dict[str, tuple[Any, Any]]:
        """openid -> (here, there) for every follower whose group or tags differ."""
        found: dict[str, tuple[Any, Any]] = {}
        if self.groups != other.groups:
            for position, (old, new) in enumerate(zip(self.groups, other.groups, strict=True)):
                if old != new:
                    found[followers[position]] = (old, new)
        empty: frozenset[int] = frozenset()
        for openid in self.tags.keys() | other.tags.keys():
            old_tags, new_tags = self.tags.get(openid, empty), other.tags.get(openid, empty)
            if old_tags != new_tags:
                found[openid] = (old_tags, new_tags)
        return found


@dataclass(frozen=True)
class _Diff:
    changes: list[Change]
    changed: int
    intended: int
    unintended: int
    unmoved: int


def _intent(spec: JobSpec, state: SandboxState, before: _Memberships) -> dict[str, Any]:
    """openid -> where the job puts the follower (a group id, or a tag set; None: a target
    that does not exist), for every row sent; tags: the export's tags changed as `untag`
    says."""
    names = {t["name"]: t["id"] for t in state.tags.listing()}
    removed = ({names[n] for n in spec.untag if n in names}
               if isinstance(spec.untag, tuple) else None)  # None: "others"
    intent: dict[str, Any] = {}
    with Ledger(spec.out_dir).open(lock=False) as ledger:
        for row in ledger.rows():
            if row.status in _UNSENT or row.openid not in state.members:
                continue
            if row.group_id is None:  # its target could not be resolved (nor created)
                intent[row.openid] = None
            elif spec.backend == "groups":
                intent[row.openid] = row.group_id
            elif row.group_id == 0 or ";" in row.target:  # a tag set: exactly these
                intent[row.openid] = frozenset(int(t) for t in row.target.split(";") if t)
            else:
                had = before.tags.get(row.openid, frozenset())
                kept = frozenset() if removed is None else had - removed
                intent[row.openid] = kept | {row.group_id}
    return intent


def _diff(spec: JobSpec, state: SandboxState, before: _Memberships,
          intent: dict[str, Any]) -> _Diff:
    """Who changed against the export, by (before, after), and who is not where the job
    says (changed otherwise, or not changed though the job moves them)."""
    tags = spec.backend == "tags"
    changed = before.differ(_Memberships.of(state), state.followers)
    empty: frozenset[int] = frozenset()

    def now(openid: str) -> Any:
        if openid in changed:
            return changed[openid][1]
        return before.tags.get(openid, empty) if tags else state.members[openid]

    def then(openid: str) -> Any:
        return changed[openid][0] if openid in changed else now(openid)

    intended = {o for o, target in intent.items() if then(o) != target}
    wrong = {o for o in changed if intent.get(o, then(o)) != now(o)}
    unmoved = {o for o in intended if o not in changed}
    label = _labeller(state, tags)
    pairs = Counter((label(old), label(new)) for old, new in changed.values())
    changes = [Change(b, a, n) for (b, a), n in sorted(pairs.items(), key=lambda p: -p[1])]
    return _Diff(changes, len(changed), len(intended), len(wrong), len(unmoved))


def _labeller(state: SandboxState, tags: bool) -> Callable[[Any], str]:
    group_names = {g.id: g.name for g in state.groups.values()}
    tag_names = {t["id"]: t["name"] for t in state.tags.listing()}
    if tags:
        return lambda tids: "; ".join(f"{tag_names.get(t, '?')} ({t})"
                                      for t in sorted(tids)) or "(no tags)"
    return lambda gid: f"{group_names.get(gid, '?')} ({gid})"


# --- the verdict and the cost ---------------------------------------------------------------

def _exit_code(result: RehearsalResult) -> int:
    if result.run is not None and result.run.exit_code != EXIT_OK:
        return result.run.exit_code
    undo = result.rollback.applied if result.rollback is not None else None
    if result.unintended or result.unmoved or result.not_restored \
            or (undo is not None and undo.exit_code) \
            or (result.verify is not None and result.verify.mismatches):
        return EXIT_ROW_FAILURES
    return EXIT_OK


def _message(result: RehearsalResult) -> str:
    intent = ("as the job intends" if not result.unintended else
              f"{result.unintended:,} users not as the job intends")
    if result.unmoved:
        intent += f" ({result.unmoved:,} the job moves are not moved)"
    restored = ("the rollback restored the export exactly" if not result.not_restored else
                f"the rollback left {result.not_restored:,} users unlike the export")
    run = result.run
    said = f"{run.message}; " if run is not None and run.exit_code != EXIT_OK else ""
    return f"rehearsal: {said}{result.changed:,} users changed, {intent}; {restored}"


def expected_rate(spec: JobSpec, plan: PlanFacts | None
                  ) -> tuple[float | dict[str, float] | None, str]:
    """The rate the real run would go at: the job's, or for `rate = "auto"` the one the real
    account's plan assumed, else the account's history on this machine; None: unknown."""
    if not spec.auto_rate:
        rate = float(spec.rate)
        return (rate, f"the job's rate, {rate:g} calls/s") if rate > 0 else (
            None, "rate = 0 (no limit): as fast as WeChat answers, unknown here")
    if plan is not None and plan.rates:
        return dict(plan.rates), f"rate = \"auto\": the rates {plan.path} assumed"
    history = account_status(spec).rates
    if history:
        return dict(history), "rate = \"auto\": the account's history on this machine"
    return {}, (f"rate = \"auto\", no history of the account here: the safe start, "
                f"{SAFE_START:g} calls/s an endpoint, a bound from above; --quota-from-plan "
                "PLAN.JSON gives the real account's rates")


def _expected_seconds(calls: dict[str, int], rate: float | dict[str, float] | None
                      ) -> tuple[float | None, list[str]]:
    """The run's calls (tokens left out) at `rate`: one figure, or per endpoint added up as
    `plan` does (a bound from above), an endpoint with no known rate at `rate = "auto"`'s safe
    start (and named)."""
    sent = {e: n for e, n in calls.items() if e not in ("token", "stable_token")}
    if rate is None:
        return None, []
    if isinstance(rate, float):
        return sum(sent.values()) / rate, []
    return (sum(n / rate.get(e, SAFE_START) for e, n in sent.items()),
            sorted(sent.keys() - rate.keys()) if rate else [])
