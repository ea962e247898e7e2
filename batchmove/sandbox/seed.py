"""What a sandbox account starts with: generated followers all in group 0, or exactly the
followers, groups, tags and memberships of a `batchmove export` file (`--from`, `[sandbox] from`).

The file is read as `batchmove export` writes it (`batchmove/output/exportfile.py`), CSV or XLSX:

    groups:  openid, current_groupid, current_group_name, to_group_name
    tags:    openid, current_tag_names, tagid_list     (names and ids joined with ";")

Ids are kept (a job written against the real account by id or by name means the same here);
the order of the rows is the order `user/get` pages them. Anything the export could not have
written is refused with one line naming the file and the row (`SandboxConfigError`): a missing
column, an openid twice, a group or tag id with two names, a reserved id renamed, names and ids
that do not pair up. Streamed: one dict (openid -> position), one array of group ids, tag
members as arrays, one frozenset per distinct set of tags; 10M rows: 17 s and 1.5 GB (groups),
27 s and 1.8 GB (tags) (bench/sandbox_from.py, docs/sandbox.md). The sandbox sits
below the intake, so it reads the file itself: the csv module, and calamine for XLSX.
"""

from __future__ import annotations

import csv
import json
import math
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchmove.sandbox.config import ENDPOINTS, SandboxConfig, SandboxConfigError
from batchmove.sandbox.members import RESERVED_GROUPS
from batchmove.sandbox.tags import MAX_TAGS_PER_USER, RESERVED_TAGS, tag_name_errcode

GROUP_HEADER = ("openid", "current_groupid", "current_group_name", "to_group_name")
TAG_HEADER = ("openid", "current_tag_names", "tagid_list")
_TRIGGERS = frozenset("=+-@\t\r")  # what the export's writer neutralises with a leading '
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
_ID = re.compile(r"\d{1,9}")


@dataclass(slots=True)
class Seed:
    """The account's followers (in `user/get` order), each one's group by position, the groups
    and tags the file names (id -> name), each tag's members (ascending positions) and each
    tagged follower's tags."""

    positions: dict[str, int]
    group_of: array[int]
    groups: dict[int, str] = field(default_factory=dict)
    tags: dict[int, str] = field(default_factory=dict)
    members: dict[int, array[int]] = field(default_factory=dict)
    user_tags: dict[str, frozenset[int]] = field(default_factory=dict)  # one set per distinct


def seed_of(config: SandboxConfig) -> Seed:
    """The followers of `config`: its export file, else its openids, file or generated ones."""
    if config.from_file is not None:
        seed = read_export(Path(config.from_file))
        _check_fits(seed, config)
        return seed
    positions = config.follower_positions()
    return Seed(positions, array("i", bytes(4 * len(positions))))


def _check_fits(seed: Seed, config: SandboxConfig) -> None:
    """The file's groups and tags, and those the settings add, within the account's limits."""
    groups = len(RESERVED_GROUPS.keys() | seed.groups.keys()) + len(config.groups)
    if groups > config.max_groups:
        raise SandboxConfigError(f"{config.from_file}: {groups} groups do not fit in "
                                 f"max_groups {config.max_groups}")
    tags = len(seed.tags.keys() - RESERVED_TAGS.keys()) + len(config.tags)
    if tags > config.max_tags:
        raise SandboxConfigError(f"{config.from_file}: {tags} created tags do not fit in "
                                 f"max_tags {config.max_tags}")
    taken = set(seed.tags.values()) & set(config.tags)
    if taken:
        raise SandboxConfigError(f"tag name {sorted(taken)[0]!r} is in {config.from_file} "
                                 "already")


def read_export(path: Path) -> Seed:
    """The account an export file describes; SandboxConfigError (one line) when it is not one."""
    try:
        if path.suffix.lower() == ".xlsx":
            return _Reader(path).read(_xlsx_rows(path))
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return _Reader(path).read(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SandboxConfigError(f"cannot read the export file {path}: {exc}") from None
    except ValueError as exc:  # calamine's errors, a damaged zip
        if isinstance(exc, SandboxConfigError):
            raise
        raise SandboxConfigError(f"cannot read the export file {path}: {exc}") from None


def _xlsx_rows(path: Path) -> Iterator[list[str]]:
    import python_calamine

    try:
        sheet = python_calamine.CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0)
        for row in sheet.iter_rows():
            yield [_text(cell) for cell in row]
    except python_calamine.CalamineError as exc:
        raise ValueError(str(exc)) from None


def _text(cell: Any) -> str:
    """A cell as the CSV would hold it (the export writes group ids as numbers)."""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return "" if cell is None else str(cell)


def plain(cell: str) -> str:
    """A cell without the leading `'` the export put before text Excel would run."""
    if cell[:1] == "'" and cell[1:2] in _TRIGGERS and not _PLAIN_NUMBER.fullmatch(cell[1:]):
        return cell[1:]
    return cell


class _Reader:
    """One pass over the rows, every check made as the row goes by."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seed = Seed({}, array("i"))
        self.first_named: dict[int, int] = {}  # group or tag id -> the row that named it

    def fail(self, row: int, message: str) -> SandboxConfigError:
        return SandboxConfigError(f"{self.path} row {row}: {message}")

    def read(self, rows: Iterator[list[str]]) -> Seed:
        header = tuple(cell.strip() for cell in next(rows, []))
        if header == GROUP_HEADER:
            self._groups(rows)
        elif header == TAG_HEADER:
            self._tags(rows)
        else:
            expected = GROUP_HEADER if "current_groupid" in header else TAG_HEADER
            missing = [c for c in expected if c not in header]
            what = f"missing column {missing[0]!r}" if missing else "columns out of order"
            raise SandboxConfigError(
                f"{self.path}: not a batchmove export ({what}); the header must be "
                f"{','.join(GROUP_HEADER)} or {','.join(TAG_HEADER)}")
        return self.seed

    def _follower(self, row: int, openid: str) -> str:
        """The row's openid, given the next position (the key the state keeps: one str)."""
        openid = plain(openid.strip())
        if not openid:
            raise self.fail(row, "the openid is empty")
        positions = self.seed.positions
        count = len(positions)
        position = positions.setdefault(openid, count)
        if position != count:
            raise self.fail(row, f"openid {openid} is listed twice (first on row "
                                 f"{position + 2})")
        return openid

    def _groups(self, rows: Iterator[list[str]]) -> None:
        names, group_of = self.seed.groups, self.seed.group_of
        known: dict[tuple[str, str], int] = {}  # (id cell, name cell) -> id: checked once
        for row, cells in enumerate(rows, start=2):
            if len(cells) != 4:
                if not any(cells):
                    continue
                raise self.fail(row, f"expected 4 cells, found {len(cells)}")
            self._follower(row, cells[0])
            gid = known.get((cells[1], cells[2]))
            if gid is None:
                gid = known[cells[1], cells[2]] = self._group(row, cells[1], cells[2], names)
            group_of.append(gid)

    def _group(self, row: int, id_cell: str, name_cell: str, names: dict[int, str]) -> int:
        text = id_cell.strip()
        if not _ID.fullmatch(text):
            raise self.fail(row, f"current_groupid {id_cell!r} is not a group id")
        gid, name = int(text), plain(name_cell)
        return self._named(row, "group", gid, name, names, RESERVED_GROUPS)

    def _named(self, row: int, what: str, ident: int, name: str, names: dict[int, str],
               reserved: dict[int, str]) -> int:
        """`ident` named `name`, as every other row names it and as a reserved id must be."""
        if ident in reserved and name != reserved[ident]:
            raise self.fail(row, f"{what} {ident} is reserved as {reserved[ident]!r}; the file "
                                 f"names it {name!r}")
        seen = names.setdefault(ident, name)
        if seen != name:
            raise self.fail(row, f"{what} {ident} is named {name!r} here but {seen!r} on row "
                                 f"{self.first_named[ident]}")
        self.first_named.setdefault(ident, row)
        if not name.strip():
            raise self.fail(row, f"{what} {ident} has no name")
        return ident

    def _tags(self, rows: Iterator[list[str]]) -> None:
        seed = self.seed
        known: dict[tuple[str, str], frozenset[int]] = {}  # cells -> tag ids, checked once
        by_name: dict[str, int] = {}
        for row, cells in enumerate(rows, start=2):
            if len(cells) != 3:
                if not any(cells):
                    continue
                raise self.fail(row, f"expected 3 cells, found {len(cells)}")
            openid = self._follower(row, cells[0])
            position = len(seed.positions) - 1
            seed.group_of.append(0)
            tagids = known.get((cells[1], cells[2]))
            if tagids is None:
                tagids = known[cells[1], cells[2]] = self._tag_set(row, cells[1], cells[2],
                                                                   by_name)
            if tagids:
                seed.user_tags[openid] = tagids  # one frozenset per distinct set of tags
            for tid in tagids:
                seed.members.setdefault(tid, array("i")).append(position)

    def _tag_set(self, row: int, names_cell: str, ids_cell: str,
                 by_name: dict[str, int]) -> frozenset[int]:
        ids = [t.strip() for t in ids_cell.split(";") if t.strip()]
        names = [n for n in plain(names_cell).split(";") if n] if ids else []
        if any(not _ID.fullmatch(t) for t in ids):
            raise self.fail(row, f"tagid_list {ids_cell!r} is not a list of tag ids")
        if len(names) != len(ids):
            raise self.fail(row, f"current_tag_names {names_cell!r} and tagid_list "
                                 f"{ids_cell!r} do not pair up (a tag name with ';' in it?)")
        if len(set(ids)) != len(ids) or len(ids) > MAX_TAGS_PER_USER:
            raise self.fail(row, f"tagid_list {ids_cell!r}: a user carries at most "
                                 f"{MAX_TAGS_PER_USER} distinct tags")
        for tid, name in zip(map(int, ids), names, strict=True):
            if tid == 0 or tag_name_errcode(name):
                raise self.fail(row, f"tag {tid} {name!r} cannot be carried by a user" if tid
                                == 0 else f"tag name {name!r} is not 1 to 30 bytes of UTF-8")
            self._named(row, "tag", tid, name, self.seed.tags, RESERVED_TAGS)
            if by_name.setdefault(name, tid) != tid:
                raise self.fail(row, f"tag name {name!r} is held by tags {by_name[name]} and "
                                     f"{tid}; tag names are unique")
        return frozenset(map(int, ids))


@dataclass(frozen=True)
class PlanFacts:
    """What a plan.json of the real account says: the daily quotas that leave a sandbox what
    the account has left today, and the calls/s per endpoint its ETA assumed (`rates`: under
    rate = "auto"; {} for a fixed rate, or a plan written before plans recorded them)."""

    path: Path
    quotas: dict[str, int]
    rates: dict[str, float]


def read_plan(path: Path) -> PlanFacts:
    """The plan.json at `path`, every value checked: anything else is a SandboxConfigError
    naming the file and the value, never a quota or rate quietly dropped."""
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SandboxConfigError(f"cannot read the plan {path}: {exc}") from None
    quota = plan.get("quota") if isinstance(plan, dict) else None
    if not isinstance(quota, dict):
        raise SandboxConfigError(f"{path}: not a plan.json (no \"quota\" object); write one "
                                 "with `batchmove plan JOB` against the real account")
    quotas: dict[str, int] = {}
    for endpoint, fit in quota.items():
        remain = fit.get("remain") if isinstance(fit, dict) else None
        others = fit.get("others", 0) if isinstance(fit, dict) else None
        if endpoint not in ENDPOINTS or not isinstance(remain, int) or not _count(remain) \
                or not isinstance(others, int) or not _count(others):
            raise SandboxConfigError(f"{path}: quota of {endpoint!r} is not an endpoint with "
                                     "integer \"remain\" and \"others\"")
        quotas[endpoint] = max(0, remain - others)
    rates = plan.get("rates", {})
    if not isinstance(rates, dict):
        raise SandboxConfigError(f"{path}: \"rates\" is not an object of calls/s by endpoint")
    for endpoint, rate in rates.items():
        if not (isinstance(rate, int | float) and not isinstance(rate, bool)
                and 0 < rate < math.inf):
            raise SandboxConfigError(f"{path}: the rate of {endpoint!r} is {rate!r}, not a "
                                     "positive number of calls a second")
    return PlanFacts(path, quotas, {endpoint: float(rate) for endpoint, rate in rates.items()})


def quota_from_plan(path: Path) -> dict[str, int]:
    """Daily quotas that leave the sandbox exactly what a plan says the real account has left
    today: each endpoint's `remain` less what other runs will still take (`others`)."""
    return read_plan(path).quotas


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
