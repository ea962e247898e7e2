"""Row validation and the duplicate check, column by column over one chunk of text cells.

Works on plain lists of `str` (what the loader's readers hand over) with C-level `map`s,
`compress` and whole-chunk checks (`min`/`max` of the lengths, one scan of the joined
column): pandas' own `.str` methods on object columns cost 5-10x more per call, and a million
rows must load in well under 4 s. Only rows that fail a check, and openids seen twice, get
Python-level attention. numpy is imported only to find repeats among more than
`NUMPY_REPEATS_AT` rows (where it keeps 12 bytes a row): a 100,000-row CSV loads without it,
which saves its ~0.08 s import before the first API call.
"""

from __future__ import annotations

import operator
import re
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress, repeat
from typing import Any, cast

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


def _lengths(cells: list[str]) -> list[int]:
    return list(map(len, cells))


def _cap(cells: list[str], lengths: list[int]) -> list[str]:
    """Keep a 5 MB cell out of the ledger and the report: cut it and say so."""
    if max(lengths, default=0) <= MAX_CELL_CHARS:
        return cells
    return [c if len(c) <= MAX_CELL_CHARS else c[:MAX_CELL_CHARS] + TRUNCATED for c in cells]


def check_chunk(columns: Sequence[list[str]], numbers: Sequence[int], wanted: Columns,
                stats: LoadStats, problems: list[str] | None = None) -> Checked:
    """Trim every cell, drop fully blank rows, and give each row its first failure (or "").

    `problems`: per row, why its cells could not be read as the header says (the tolerant
    reader's verdict), which wins over every other reason."""
    cells = [unneutralise(list(map(str.strip, column, repeat(BLANK)))) for column in columns]
    lengths = [_lengths(column) for column in cells]
    count = len(cells[0]) if cells else 0
    numbers = list(numbers)  # each row's number in the file
    keep = _not_blank(cells, problems)
    if keep is not None:
        stats.blank += count - sum(keep)
        numbers = list(compress(numbers, keep))
        cells = [list(compress(column, keep)) for column in cells]
        lengths = [list(compress(length, keep)) for length in lengths]
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


def _not_blank(cells: Sequence[list[str]], problems: list[str] | None) -> list[bool] | None:
    """Per row, whether it has a cell or a reading problem; None when no row is blank (a
    column without an empty cell says so in one C-level scan)."""
    if not cells or not all("" in column for column in cells):
        return None
    keep = list(map(any, zip(*cells, strict=True)))
    if problems is not None:
        keep = list(map(operator.or_, keep, map(bool, problems)))
    return None if all(keep) else keep


def _unreadable(problems: list[str], numbers: list[int], reasons: list[str],
                stats: LoadStats) -> None:
    for i, problem in enumerate(problems):
        if problem:
            reasons[i] = problem
            stats.unreadable += 1
            stats.unreadable_example = stats.unreadable_example or f"{numbers[i]}: {problem}"


def _check_openids(openids: list[str], lengths: list[int], reasons: list[str]) -> None:
    if _all_plain_openids(openids, lengths):
        return
    wrong = map(operator.not_, map(_OPENID.fullmatch, openids))
    for i in compress(range(len(openids)), wrong):
        reasons[i] = openid_reason(openids[i], lengths[i])


def _all_plain_openids(openids: list[str], lengths: list[int]) -> bool:
    """Whole-chunk shortcut: lengths in range and every character allowed, in a few C calls."""
    if not openids or min(lengths) < OPENID_MIN or max(lengths) > OPENID_MAX:
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


def _check_group_names(names: list[str], lengths: list[int], reasons: list[str]) -> None:
    joined = "".join(names)  # one scan finds the usual chunk clean
    formula = set(compress(range(len(names)), map(str.startswith, names, repeat("=")))) \
        if "=" in joined else set()
    bad = formula
    if names and (min(lengths) == 0 or max(lengths) > MAX_GROUP_NAME_CHARS):
        bad = formula | {i for i, n in enumerate(lengths) if not n or n > MAX_GROUP_NAME_CHARS}
    for i in sorted(bad):
        if not reasons[i]:
            reasons[i] = (GROUP_NAME_MISSING if not lengths[i] else
                          GROUP_NAME_FORMULA if i in formula else GROUP_NAME_LONG)
    if _CONTROL.search(joined):  # rare: only then look row by row
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


def unneutralise(cells: list[str]) -> list[str]:
    """Undo the `'` our reports put before a cell Excel would run (`'@市场部` -> `@市场部`), so
    failed.csv feeds straight back (its header included); a `'` before anything else is the
    user's and stays."""
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


def input_rows(checked: Checked, stats: LoadStats) -> list[InputRow]:
    """The chunk's InputRows, pending or invalid: duplicates are settled after the last chunk
    (`Dedupe`), so nothing here holds on to an openid."""
    reasons = checked.reasons
    if any(reasons):
        stats.invalid_by_reason.update(filter(None, reasons))
        statuses = [_INVALID if r else _PENDING for r in reasons]
        invalid = sum(map(bool, reasons))
    else:
        statuses, invalid = [_PENDING] * len(reasons), 0
    stats.valid += len(reasons) - invalid
    stats.invalid += invalid
    stats.rows += len(reasons)
    return list(map(_new_row, repeat(InputRow), zip(
        checked.rows, checked.openids, checked.targets, statuses, reasons, checked.extras,
        strict=False,  # extras may be an endless repeat(None)
    )))


# statuses as exact str: SQLite binds those in C, an enum member through Python's adaptation
# protocol (+0.35 s per 1M rows loaded)
_PENDING, _INVALID = str(RowStatus.PENDING.value), str(RowStatus.INVALID.value)


class Dedupe:
    """First occurrence wins; repeats and conflicts are marked, over the whole file.

    A repeat of an openid with the same target is DUPLICATE (`duplicate of row N`, N the first
    occurrence). Once an openid appears with two different targets, EVERY row of it is INVALID:
    `conflict: row N asks for group X`, N the earliest row of that openid whose target differs
    from this row's. It sees only the rows of openids that occur more than once (in row
    order), so the loader keeps a 64-bit hash per row instead of every openid: 10M rows hold
    80 MB instead of ~2 GB of dict.
    """

    def __init__(self, quote_targets: bool) -> None:
        self.quote = quote_targets
        self.first: dict[str, tuple[int, str]] = {}  # openid -> (row, target)
        self.repeats: dict[str, list[int]] = {}  # openid -> rows marked DUPLICATE of it
        self.conflicts: dict[str, dict[str, int]] = {}  # openid -> target -> earliest row
        self.verdicts: dict[int, tuple[RowStatus, str]] = {}

    def judge(self, rows: Iterable[tuple[int, str, str]],
              stats: LoadStats) -> list[tuple[int, RowStatus, str]]:
        """(row, status, reason) for every row that is not a first occurrence after all."""
        for row, openid, target in rows:
            self._one(row, openid, target)
        found = Counter(status for status, _ in self.verdicts.values())
        stats.valid -= len(self.verdicts)
        stats.duplicates += found[RowStatus.DUPLICATE]
        stats.invalid += found[RowStatus.INVALID]
        if found[RowStatus.INVALID]:
            stats.invalid_by_reason[CONFLICT] += found[RowStatus.INVALID]
        return [(row, status, why) for row, (status, why) in sorted(self.verdicts.items())]

    def _group(self, target: str) -> str:
        return f'"{target}"' if self.quote else target

    def _one(self, row: int, openid: str, target: str) -> None:
        previous = self.first.get(openid)
        if previous is None:
            self.first[openid] = (row, target)
            return
        first, first_target = previous
        known = self.conflicts.get(openid)
        if known is None:
            if target == first_target:
                self.repeats.setdefault(openid, []).append(row)
                self.verdicts[row] = (RowStatus.DUPLICATE, f"duplicate of row {first}")
                return
            known = self.conflicts[openid] = {first_target: first}
            why = f"conflict: row {row} asks for group {self._group(target)}"
            for earlier in [first, *self.repeats.pop(openid, [])]:
                self.verdicts[earlier] = (RowStatus.INVALID, why)
        other_row, other_target = min((r, t) for t, r in known.items() if t != target)
        known.setdefault(target, row)
        self.verdicts[row] = (RowStatus.INVALID, f"conflict: row {other_row} asks for group "
                                                 f"{self._group(other_target)}")


#: above this many valid rows, repeats are found with numpy (12 bytes a row, sorted in C)
#: rather than a Counter (~100 bytes a row), which spares small inputs numpy's import
NUMPY_REPEATS_AT = 500_000


class RepeatFinder:
    """Which rows share an openid with another row, from a 64-bit hash per valid row.

    Python's `hash()` of a str (SipHash, C) costs ~30 ns; the hashes and row numbers are 12
    bytes a row (arrays). Rows whose hash comes up twice are candidates; `Dedupe` then
    compares the openids themselves, so a hash collision (about 3e-6 for 10M rows) costs a
    lookup, never a wrong verdict.
    """

    def __init__(self) -> None:
        self._hashes: list[array[int]] = []
        self._rows: list[array[int]] = []

    def add(self, checked: Checked) -> None:
        openids, rows = checked.openids, checked.rows
        if any(checked.reasons):
            valid = list(map(operator.not_, checked.reasons))
            openids, rows = list(compress(openids, valid)), list(compress(rows, valid))
        self._hashes.append(array("q", map(hash, openids)))
        self._rows.append(array("I", rows))

    def candidates(self) -> list[int]:
        """Row numbers, ascending, of the rows whose hash is not unique."""
        total = sum(map(len, self._hashes))
        if total > NUMPY_REPEATS_AT:
            return self._sorted_candidates()
        if len(set(chain.from_iterable(self._hashes))) == total:  # the usual input
            return []
        counts = Counter(chain.from_iterable(self._hashes))
        repeated = {h for h, n in counts.items() if n > 1}
        del counts
        return list(compress(chain.from_iterable(self._rows),
                             map(repeated.__contains__, chain.from_iterable(self._hashes))))

    def _sorted_candidates(self) -> list[int]:
        """`candidates` in flat memory: the hashes sorted and compared by numpy."""
        import numpy as np  # ~0.08 s to import: only for inputs large enough to need it

        every = np.concatenate([np.frombuffer(h, dtype=np.int64) for h in self._hashes])
        every.sort()
        repeated = np.unique(every[1:][every[1:] == every[:-1]])
        del every
        if not len(repeated):
            return []
        found: list[int] = []
        for hash_array, row_array in zip(self._hashes, self._rows, strict=True):
            hashes = np.frombuffer(hash_array, dtype=np.int64)
            rows = np.frombuffer(row_array, dtype=np.uint32)
            at = np.minimum(np.searchsorted(repeated, hashes), len(repeated) - 1)
            found += rows[repeated[at] == hashes].tolist()
        return found
