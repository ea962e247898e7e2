"""Which column holds the openid, and which the target group: by name, with the usual aliases.

Analysts' sheets say `OpenID`, `open_id`, `用户openid`, `分组名称`...: a header matches an alias
after case-folding and dropping spaces, `_` and `-`. The job file's `[columns]` names them
explicitly when the aliases are not enough.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from batchmove.errors import InputError
from batchmove.models import ColumnMap, TargetKind

_NOISE = re.compile(r"[\s_\-\u3000\xa0]+")


def normalize(header: str) -> str:
    """The form headers are compared in: `Open_ID ` and `openid` are the same column."""
    return _NOISE.sub("", header).casefold()


OPENID_ALIASES = (
    "openid", "open_id", "open id", "用户openid", "openid列表", "粉丝openid", "微信openid",
    "关注者openid",
)
GROUP_ID_ALIASES = (
    "to_groupid", "groupid", "group_id", "togroupid", "to_group_id", "分组id", "目标分组id",
    "新分组id",
    # the tags backend reads the same column as a tag
    "tagid", "tag_id", "to_tagid", "标签id", "目标标签id", "新标签id",
)
GROUP_NAME_ALIASES = (
    "group_name", "groupname", "group", "to_group_name", "to_group", "分组", "分组名", "分组名称",
    "目标分组", "目标分组名", "目标分组名称", "新分组", "新分组名称",
    "tag", "tag_name", "tagname", "to_tag", "标签", "标签名", "标签名称", "目标标签", "新标签",
)
#: a tag backend's whole set of tag ids per user ("101;102"), as `rollback.csv` writes it
TAG_SET_ALIASES = ("tagid_list", "to_tagid_list", "tag_ids", "tags_before", "标签id列表")
_KEYS = {
    "openid": frozenset(map(normalize, OPENID_ALIASES)),
    "group_id": frozenset(map(normalize, GROUP_ID_ALIASES)),
    "group_name": frozenset(map(normalize, GROUP_NAME_ALIASES)),
    "tag_set": frozenset(map(normalize, TAG_SET_ALIASES)),
}


@dataclass(frozen=True, slots=True)
class Columns:
    """Positions (0-based) of the columns the loader needs, and what the target column means."""

    openid: int
    target: int
    kind: TargetKind


def listing(headers: Sequence[str]) -> str:
    """Headers as a user would recognise them in an error message."""
    shown = ", ".join(repr(h[:40]) for h in headers[:30])
    more = f", ... ({len(headers)} in all)" if len(headers) > 30 else ""
    return f"[{shown}{more}]" if headers else "[] (no header row)"


def check_headers(path: Path, headers: Sequence[str], where: str = "") -> None:
    """Two columns with the same name make every later lookup ambiguous: refuse them."""
    seen: dict[str, int] = {}
    for index, header in enumerate(headers):
        if not header:
            continue
        if header in seen:
            raise InputError(f"{path}{where}: duplicate column name {header!r} "
                             f"(columns {seen[header] + 1} and {index + 1}); rename one")
        seen[header] = index


def find(headers: Sequence[str], field: str, explicit: str | None) -> int | None:
    """Index of the column for `field`: the explicit name if given, else the unique alias hit."""
    if explicit is not None:
        wanted = normalize(explicit)
        hits = [i for i, h in enumerate(headers) if normalize(h) == wanted]
    else:
        hits = [i for i, h in enumerate(headers) if normalize(h) in _KEYS[field]]
    if len(hits) > 1:
        names = " and ".join(repr(headers[i]) for i in hits)
        raise _Ambiguous(f"both {names} could be the {field} column; "
                         f"name one with `{field} = ...` under [columns] in the job file")
    return hits[0] if hits else None


class _Ambiguous(Exception):
    pass


def resolve(
    path: Path, headers: Sequence[str], columns: ColumnMap, target: TargetKind | None,
    where: str = "",
) -> Columns | None:
    """The columns to read, or None when this header row lacks them (the caller explains)."""
    try:
        openid = find(headers, "openid", columns.openid)
        group_id = find(headers, "group_id", columns.group_id)
        group_name = find(headers, "group_name", columns.group_name)
    except _Ambiguous as exc:
        raise InputError(f"{path}{where}: {exc}") from None
    if openid is None:
        return None
    if target in ("set", None):
        try:
            tag_set = find(headers, "tag_set", None)
        except _Ambiguous as exc:
            raise InputError(f"{path}{where}: {exc}") from None
        if tag_set is not None:
            return Columns(openid, tag_set, "set")
        if target == "set":
            return None
    if target == "id" or (target is None and group_id is not None):
        return Columns(openid, group_id, "id") if group_id is not None else None
    return Columns(openid, group_name, "name") if group_name is not None else None


def missing(path: Path, headers: Sequence[str], columns: ColumnMap,
            target: TargetKind | None, where: str = "") -> InputError:
    """The error for a header row without the needed columns, listing what it does have."""
    wanted = [f"openid ({columns.openid!r})" if columns.openid else "an openid column"]
    if target in (None, "id"):
        wanted.append(f"group id ({columns.group_id!r})" if columns.group_id
                      else "a group id column")
    if target in (None, "name"):
        wanted.append(f"group name ({columns.group_name!r})" if columns.group_name
                      else "a group name column")
    need = f"{wanted[0]} and {' or '.join(wanted[1:])}"
    return InputError(f"{path}{where}: no matching columns: need {need}; "
                      f"found {listing(headers)}; name them under [columns] in the job file")
