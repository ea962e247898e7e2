"""Row validation and the duplicate check, column by column over one chunk of text cells.

Works on plain lists of `str` (what the loader's pandas reader hands over) with C-level `map`s
and numpy masks: pandas' own `.str` methods on object columns cost 5-10x more per call, and a
million rows must load in well under 4 s. Only rows that fail a check, and openids seen twice,
get Python-level attention.
"""

from __future__ import annotations

import operator
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from typing import Any, cast

import numpy as np

from batchmove.intake.columns import Columns
from batchmove.models import BLACKLIST_GROUP_ID, MAX_GROUP_NAME_CHARS, InputRow, RowStatus

MAX_CELL_CHARS = 1_000
TRUNCATED = "…[truncated]"
OPENID_MIN, OPENID_MAX = 10, 64
MAX_GROUP_ID_DIGITS = 18
BLANK = " \t\r\n\f\v\u3000\xa0\ufeff"  # trimmed from every cell: incl. full-width space, NBSP

OPENID_MISSING = "missing openid"
OPENID_FORMULA = "openid looks like a formula"
OPENID_URL = "openid looks like a URL"
OPENID_LONG = f"openid is longer than {OPENID_MAX} characters"
OPENID_SHORT = f"openid is shorter than {OPENID_MIN} characters"
OPENID_CHARS = "openid may contain only letters, digits, '_' and '-'"
GROUP_ID_MISSING = "missing group id"
GROUP_ID_BAD = "group id must be a whole number >= 0"
GROUP_NAME_CONTROL = "group name contains control characters"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NEUTRALISED = frozenset("=+-@\t\r")  # what report.neutralize prefixes with `'`
TAG_SET_BAD = "tag ids must be whole numbers >= 0 separated by ';'"
GROUP_ID_LARGE = "group id is too large"
GROUP_NAME_MISSING = "missing group name"
GROUP_NAME_FORMULA = "group name looks like a formula"
GROUP_NAME_LONG = f"group name is longer than {MAX_GROUP_NAME_CHARS} characters"
CONFLICT = "conflict"

_OPENID = re.compile(rf"[A-Za-z0-9_-]{{{OPENID_MIN},{OPENID_MAX}}}")
_OPENID_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_GROUP_ID = re.compile(r"([0-9]+)(?:\.0+)?")
_new_row = cast(Any, tuple.__new__)  # InputRow from a ready tuple, without a Python-level call


@dataclass(slots=True)
class LoadStats:
    """Counts for the summary; final once `rows()` is exhausted (conflicts amend them)."""

    rows: int = 0  # data rows yielded (blank rows excluded)
    valid: int = 0  # PENDING
    invalid: int = 0
    duplicates: int = 0
    blank: int = 0  # fully blank rows skipped
    unreadable: int = 0  # rows with more cells than the header, or an unclosed quote
    unreadable_example: str = ""  # "N: why" of the first of them
    invalid_by_reason: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class Checked:
    """One chunk after the checks: parallel lists, blank rows removed, targets canonical."""

    rows: list[int]
    openids: list[str]
    targets: list[str]
    reasons: list[str]
    extras: Iterable[tuple[str, ...] | None]

    def blacklist_rows(self) -> list[int]:
        wanted = str(BLACKLIST_GROUP_ID)
        return [r for r, t, why in zip(self.rows, self.targets, self.reasons, strict=True)
                if t == wanted and not why]


def _lengths(cells: list[str]) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.fromiter(map(len, cells), dtype=np.int64, count=len(cells))


def _cap(cells: list[str], lengths: np.ndarray[Any, Any]) -> list[str]:
    """Keep a 5 MB cell out of the ledger and the report: cut it and say so."""
    if not (lengths > MAX_CELL_CHARS).any():
        return cells
    return [c if len(c) <= MAX_CELL_CHARS else c[:MAX_CELL_CHARS] + TRUNCATED for c in cells]


def check_chunk(columns: Sequence[list[str]], first: int, wanted: Columns,
                stats: LoadStats, problems: list[str] | None = None) -> Checked:
    """Trim every cell, drop fully blank rows, and give each row its first failure (or "").

    `problems`: per row, why its cells could not be read as the header says (the tolerant
    reader's verdict), which wins over every other reason."""
    cells = [_unneutralise(list(map(str.strip, column, repeat(BLANK)))) for column in columns]
    lengths = [_lengths(column) for column in cells]
    count = len(cells[0]) if cells else 0
    numbers = list(range(first, first + count))
    blank = np.ones(count, dtype=bool)
    for length in lengths:
        blank &= length == 0
    if problems is not None:
        blank &= np.fromiter(map(operator.not_, problems), dtype=bool, count=count)
    if blank.any():
        stats.blank += int(blank.sum())
        keep = (~blank).tolist()
        numbers = list(compress(numbers, keep))
        cells = [list(compress(column, keep)) for column in cells]
        lengths = [length[~blank] for length in lengths]
        problems = None if problems is None else list(compress(problems, keep))
    openids, targets = cells[wanted.openid], cells[wanted.target]
    reasons = [""] * len(numbers)
    _check_openids(openids, lengths[wanted.openid], reasons)
    if wanted.kind == "id":
        targets = _check_group_ids(targets, reasons)
        target_lengths = _lengths(targets)
    elif wanted.kind == "set":
        targets = _check_tag_sets(targets, reasons)
        target_lengths = _lengths(targets)
    else:
        _check_group_names(targets, lengths[wanted.target], reasons)
        target_lengths = lengths[wanted.target]
    if problems is not None and any(problems):
        _unreadable(problems, numbers, reasons, stats)
    extra = [_cap(c, n) for i, (c, n) in enumerate(zip(cells, lengths, strict=True))
             if i not in (wanted.openid, wanted.target)]
    return Checked(
        numbers, _cap(openids, lengths[wanted.openid]), _cap(targets, target_lengths), reasons,
        zip(*extra, strict=True) if extra else repeat(None),
    )


def _unreadable(problems: list[str], numbers: list[int], reasons: list[str],
                stats: LoadStats) -> None:
    for i, problem in enumerate(problems):
        if problem:
            reasons[i] = problem
            stats.unreadable += 1
            stats.unreadable_example = stats.unreadable_example or f"{numbers[i]}: {problem}"


def _check_openids(openids: list[str], lengths: np.ndarray[Any, Any], reasons: list[str]) -> None:
    if _all_plain_openids(openids, lengths):
        return
    ok = np.fromiter(map(bool, map(_OPENID.fullmatch, openids)), dtype=bool,
                     count=len(openids))
    for i in np.flatnonzero(~ok).tolist():
        reasons[i] = openid_reason(openids[i], int(lengths[i]))


def _all_plain_openids(openids: list[str], lengths: np.ndarray[Any, Any]) -> bool:
    """Whole-chunk shortcut: lengths in range and every character allowed, in a few C calls."""
    if not len(openids) or lengths.min() < OPENID_MIN or lengths.max() > OPENID_MAX:
        return False
    joined = "".join(openids)
    return joined.isascii() and not joined.encode("ascii").translate(None, _OPENID_BYTES)


def openid_reason(openid: str, length: int) -> str:
    """Why an openid that failed the pattern is wrong, most telling reason first."""
    if not length:
        return OPENID_MISSING
    if openid.startswith("="):
        return OPENID_FORMULA
    if "://" in openid or openid.lower().startswith("www."):
        return OPENID_URL
    if length > OPENID_MAX:
        return OPENID_LONG
    if length < OPENID_MIN:
        return OPENID_SHORT
    return OPENID_CHARS


def _check_group_names(names: list[str], lengths: np.ndarray[Any, Any],
                       reasons: list[str]) -> None:
    formula = np.fromiter(map(str.startswith, names, repeat("=")), dtype=bool, count=len(names))
    bad = (lengths == 0) | (lengths > MAX_GROUP_NAME_CHARS) | formula
    for i in np.flatnonzero(bad).tolist():
        if not reasons[i]:
            reasons[i] = (GROUP_NAME_MISSING if not lengths[i] else
                          GROUP_NAME_FORMULA if formula[i] else GROUP_NAME_LONG)
    if _CONTROL.search("".join(names)):  # rare: only then look row by row
        for i, name in enumerate(names):
            if not reasons[i] and _CONTROL.search(name):
                reasons[i] = GROUP_NAME_CONTROL


def _check_group_ids(raw: list[str], reasons: list[str]) -> list[str]:
    """Group ids as plain digits (`108.0`, an Excel number, and `0108` are both "108")."""
    matches = list(map(_GROUP_ID.fullmatch, raw))
    canonical = [m.group(1).lstrip("0") or "0" if m else r for m, r in zip(matches, raw,
                                                                           strict=True)]
    for i, match in enumerate(matches):
        if (match is None or len(canonical[i]) > MAX_GROUP_ID_DIGITS) and not reasons[i]:
            reasons[i] = (GROUP_ID_MISSING if not raw[i] else
                          GROUP_ID_BAD if match is None else GROUP_ID_LARGE)
    return canonical


def _unneutralise(cells: list[str]) -> list[str]:
    """Undo the `'` our reports put before a cell Excel would run (`'@市场部` -> `@市场部`), so
    failed.csv feeds straight back; a `'` before anything else is the user's and stays."""
    if "'" not in "".join(cells):  # the usual chunk: one fast scan
        return cells
    return [c[1:] if c[:1] == "'" and c[1:2] in _NEUTRALISED else c for c in cells]


def _check_tag_sets(raw: list[str], reasons: list[str]) -> list[str]:
    """A set of tag ids as canonical text: sorted, unique, joined by ";" ("" = no tags)."""
    canonical = []
    for i, cell in enumerate(raw):
        parts = [p for p in re.split(r"[;,\s]+", cell) if p]
        if all(p.isdigit() and len(p) <= MAX_GROUP_ID_DIGITS for p in parts):
            canonical.append(";".join(map(str, sorted({int(p) for p in parts}))))
        else:
            canonical.append(cell)
            reasons[i] = reasons[i] or TAG_SET_BAD
    return canonical


class Dedupe:
    """First occurrence wins; repeats and conflicts are marked, across chunks.

    A repeat of an openid with the same target is DUPLICATE (`duplicate of row N`, N the first
    occurrence). Once an openid appears with two different targets, EVERY row of it is INVALID:
    `conflict: row N asks for group X`, N the earliest row of that openid whose target differs
    from this row's. Rows yielded with an earlier chunk are corrected through `amendments`.
    `seen` packs (target code, row) into one int per openid to stay small for a million rows.
    """

    def __init__(self, amendments: list[tuple[int, RowStatus, str]], stats: LoadStats,
                 quote_targets: bool) -> None:
        self.seen: dict[str, int] = {}
        self.codes: dict[str, int] = {}
        self.names: list[str] = []
        self.repeats: dict[str, list[int]] = {}  # openid -> rows marked DUPLICATE of it
        self.conflicts: dict[str, dict[str, int]] = {}  # openid -> target -> earliest row
        self.amendments = amendments
        self.stats = stats
        self.quote = quote_targets
        self.here: dict[int, int] = {}  # row -> index in the chunk being built
        self.statuses: list[RowStatus] = []
        self.reasons: list[str] = []

    def rows(self, checked: Checked) -> list[InputRow]:
        """The chunk's InputRows; first occurrences are recorded in bulk, repeats one by one."""
        reasons, stats = checked.reasons, self.stats
        pending, invalid = RowStatus.PENDING, RowStatus.INVALID
        if any(reasons):
            stats.invalid_by_reason.update(filter(None, reasons))
            statuses = [invalid if r else pending for r in reasons]
            valid = [not r for r in reasons]
            rows = list(compress(checked.rows, valid))
            openids = list(compress(checked.openids, valid))
            targets = list(compress(checked.targets, valid))
        else:
            statuses = [pending] * len(reasons)
            rows, openids, targets = checked.rows, checked.openids, checked.targets
        fresh = dict(zip(openids, self._pack(targets, rows), strict=True))
        slow = fresh.keys() & self.seen.keys()
        if len(fresh) < len(openids):
            slow.update(o for o, n in Counter(openids).items() if n > 1)
        for openid in slow:
            del fresh[openid]
        self.seen.update(fresh)
        if slow:
            self.statuses, self.reasons, self.here = statuses, reasons, {}
            for i in [i for i, o in enumerate(checked.openids) if o in slow]:
                if statuses[i] is pending:
                    self._one(i, checked.rows[i], checked.openids[i], checked.targets[i])
            counts = Counter(statuses)
            stats.valid += counts[pending]
            stats.duplicates += counts[RowStatus.DUPLICATE]
            stats.invalid += counts[invalid]
        else:
            stats.valid += len(rows)
            stats.invalid += len(statuses) - len(rows)
        stats.rows += len(statuses)
        # statuses as exact str: SQLite binds those in C, an enum member through Python's
        # adaptation protocol (+0.35 s per 1M rows loaded)
        return list(map(_new_row, repeat(InputRow), zip(
            checked.rows, checked.openids, checked.targets, map(str.__str__, statuses), reasons,
            checked.extras,
            strict=False,  # extras may be an endless repeat(None)
        )))

    def _code(self, target: str) -> int:
        code = self.codes.get(target)
        if code is None:
            code = self.codes[target] = len(self.names)
            self.names.append(target)
        return code

    def _pack(self, targets: list[str], rows: list[int]) -> list[int]:
        """(target code << 32 | row) per row, computed with numpy rather than a Python loop."""
        for target in set(targets).difference(self.codes):
            self._code(target)
        codes = np.fromiter(map(self.codes.__getitem__, targets), dtype=np.int64,
                            count=len(targets))
        packed: list[int] = ((codes << 32) | np.asarray(rows, dtype=np.int64)).tolist()
        return packed

    def _group(self, target: str) -> str:
        return f'"{target}"' if self.quote else target

    def _one(self, index: int, row: int, openid: str, target: str) -> None:
        self.here[row] = index
        previous = self.seen.get(openid)
        if previous is None:
            self.seen[openid] = self._code(target) << 32 | row
            return
        first, first_target = previous & 0xFFFFFFFF, self.names[previous >> 32]
        known = self.conflicts.get(openid)
        if known is None:
            if target == first_target:
                self.repeats.setdefault(openid, []).append(row)
                self.statuses[index] = RowStatus.DUPLICATE
                self.reasons[index] = f"duplicate of row {first}"
                return
            known = self.conflicts[openid] = {first_target: first}
            why = f"conflict: row {row} asks for group {self._group(target)}"
            self._amend(first, why, RowStatus.PENDING)
            for earlier in self.repeats.pop(openid, []):
                self._amend(earlier, why, RowStatus.DUPLICATE)
        other_row, other_target = min((r, t) for t, r in known.items() if t != target)
        known.setdefault(target, row)
        self.stats.invalid_by_reason[CONFLICT] += 1
        self.statuses[index] = RowStatus.INVALID
        self.reasons[index] = (f"conflict: row {other_row} asks for group "
                               f"{self._group(other_target)}")

    def _amend(self, row: int, reason: str, was: RowStatus) -> None:
        """Turn an earlier valid row INVALID: in place if still in this chunk, else amend it."""
        self.stats.invalid_by_reason[CONFLICT] += 1
        index = self.here.get(row)
        if index is not None:
            self.statuses[index] = RowStatus.INVALID
            self.reasons[index] = reason
            return
        stats = self.stats  # yielded earlier: counted under its old status then
        stats.invalid += 1
        if was is RowStatus.DUPLICATE:
            stats.duplicates -= 1
        else:
            stats.valid -= 1
        self.amendments.append((row, RowStatus.INVALID, reason))
