"""Job file (TOML) + overrides -> one validated `JobSpec`. Every bad key is one line naming it.

Two sources give job keys: the job file and the overrides (CLI options, or keyword arguments
of `batchmove.run`). Both go through the same type checks here, then the spec is built once,
and building it checks the ranges (`JobSpec.__post_init__`), so `--batch-size 40` can fix a job
file's `batch_size = 80`. Paths in a job file are relative to the job file; paths given as
overrides are relative to the current directory.
"""

from __future__ import annotations

import codecs
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from batchmove.errors import JobFileError, UsageError
from batchmove.intake.jobtables import TableReader
from batchmove.intake.jobvalues import (
    absolute,
    is_int,
    is_name_or_id,
    is_number,
    is_sheet,
    is_untag,
    suggest,
)
from batchmove.intake.placement import placed
from batchmove.models import (
    AUTO,
    SNAPSHOT_SOURCES,
    JobSpec,
    Selection,
    show,
)

JOB_SUFFIX = ".toml"
_INT = ("concurrency", "batch_size", "retries", "failure_sample", "xlsx_max_rows")
_FLOAT = ("max_rate", "timeout", "max_failure_rate")
_BOOL = ("create_groups", "allow_blacklist", "allow_overlap", "confirm", "snapshot", "verify")
_STR = ("name", "encoding", "api_base")
_PATHS = ("input", "out")
_TOP = (*_STR, *_PATHS, *_INT, *_FLOAT, *_BOOL, "rate", "sheet", "target", "backend", "untag",
        "snapshot_source", "accounts", "account")
_TABLES = ("columns", "credentials", "sandbox", "select", "notify")
_SELECT_KEYS = ("tag", "group", "all", "to", "to_id")
#: every key a job file (or an override) may set
JOB_KEYS = (*_TOP, *_TABLES)

def spec_for(job: Path, **overrides: Any) -> JobSpec:
    """The job's spec: a job file's keys, or a spreadsheet run with the defaults, with the
    overrides (job keys; None means "not given") applied on top."""
    return _spec(job, overrides, need_input=True)


def settings_for(job: Path, **overrides: Any) -> JobSpec:
    """`spec_for` of a job file's settings only: its input neither required nor checked (an
    agency lists its accounts before it writes their spreadsheet: `accounts list|sync`)."""
    return _spec(job, overrides, need_input=False)


def _spec(job: Path, overrides: Mapping[str, Any], *, need_input: bool) -> JobSpec:
    if not job.exists():
        raise UsageError(f"no such file: {job}")
    if not job.is_file():
        raise UsageError(f"not a file: {job}")
    if job.suffix.lower() == JOB_SUFFIX:
        values = load_job(job, need_input=need_input)
    else:
        values = {"input": absolute(job), "name": job.stem}
    spec = JobSpec(**(values | read_overrides(overrides)))
    return placed(spec)


def read_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Job keys given outside a job file, type-checked exactly as in one (None: not given)."""
    given = {k: _table_of(v) for k, v in overrides.items() if v is not None}
    if not given:
        return {}
    if "select" in given:
        raise UsageError("select is a job file table ([select]); it cannot be an override")
    reader = _Reader(Path("."), given, label="override")
    reader.check_keys()
    values = reader.values()
    if "input" in given:
        values["input"] = reader.input(given["input"])
    return values


def _table_of(value: Any) -> Any:
    """A `ColumnMap` or `Credentials` given as an override, as the table a job file holds."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: v for k, v in asdict(value).items() if v is not None}
    return value


def load_job(path: Path, *, need_input: bool = True) -> dict[str, Any]:
    """A job file -> `JobSpec` kwargs; `need_input=False`: its settings alone (export --job,
    accounts list|sync)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise JobFileError(f"{path}: job file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise JobFileError(f"{path}: the job file is not UTF-8 text") from exc
    except OSError as exc:
        raise JobFileError(f"{path}: cannot read the job file: {exc.strerror or exc}") from exc
    return {"job_path": path} | job_values(data, path, need_input=need_input)


def job_values(data: Mapping[str, Any], path: Path, *, need_input: bool = True) -> dict[str, Any]:
    """Job keys as a job file at `path` holds them (paths relative to it) -> `JobSpec` kwargs."""
    reader = _Reader(path, data)
    reader.check_keys()
    source = reader.source(need_input)  # before the other keys: the first thing to get right
    values: dict[str, Any] = {"name": path.stem}
    values |= reader.values()
    values["input"], values["select"] = source
    return values


class _Reader(TableReader):
    """One source's keys, checked one by one, its name (file or "option") in every message."""

    def __init__(self, path: Path, data: Mapping[str, Any], label: str = "") -> None:
        self.path = path
        self.label = label or str(path)
        self.overrides = bool(label)  # keys given as options: tables only when given
        self.base = absolute(path) if self.overrides else absolute(path).parent
        self.data = data

    def check_keys(self) -> None:
        for key, value in self.data.items():
            self._refuse_secret(key, "")
            if key not in _TOP and key not in _TABLES:
                raise self.fail(f"unknown key {key!r}{suggest(key, JOB_KEYS)}")
            if key in _TABLES and not isinstance(value, dict):
                raise self.fail(f"{key} must be a table ([{key}]), got {show(value)}")
            if key not in _TABLES and isinstance(value, dict):
                raise self.fail(f"[{key}] is not a table here: {key} is a plain key")

    def values(self) -> dict[str, Any]:
        """Every key but `input`, type-checked, as `JobSpec` keyword arguments."""
        data = self.data
        values: dict[str, Any] = {}
        for key in _STR:
            if key in data:
                values[key] = self._get(key, data[key], str, "a string")
        for key in _INT:
            if key in data:
                values[key] = self._get(key, data[key], is_int, "an integer")
        for key in _FLOAT:
            if key in data:
                values[key] = float(self._get(key, data[key], is_number, "a number"))
        for key in _BOOL:
            if key in data:
                values[key] = self._get(key, data[key], bool, "true or false")
        if "rate" in data:
            values["rate"] = _rate(self._get("rate", data["rate"], _is_rate,
                                             'a number or "auto"'))
        values |= self._choices()
        if "out" in data:
            values["out"] = self._path("out", data["out"])
        for table, read in (("columns", self._columns), ("credentials", self._credentials),
                            ("sandbox", self._sandbox), ("notify", self._notify)):
            if table in data or not self.overrides:
                values[table] = read(data.get(table, {}))
        self._check_strings(values)
        return values

    def _choices(self) -> dict[str, Any]:
        data, values = self.data, {}
        if "sheet" in data:
            sheet = data["sheet"]
            if isinstance(sheet, str) and sheet.isdigit() and self.overrides:
                sheet = int(sheet)  # `--sheet 2` is the third sheet
            values["sheet"] = self._get("sheet", sheet, is_sheet,
                                        "a sheet name or a number counted from 0")
        if "target" in data:
            values["target"] = self._get("target", data["target"],
                                         lambda v: v in ("id", "name", "set"),
                                         '"id", "name" or "set"')
        if "backend" in data:
            values["backend"] = self._get("backend", data["backend"],
                                          lambda v: v in ("groups", "tags"),
                                          '"groups" or "tags"')
        if "snapshot_source" in data:
            values["snapshot_source"] = self._get(
                "snapshot_source", data["snapshot_source"], lambda v: v in SNAPSHOT_SOURCES,
                '"auto", "batchget" or "members"')
        if "accounts" in data:
            accounts = self._get("accounts", data["accounts"], lambda v: v == "all" or (
                isinstance(v, list) and all(isinstance(a, str) for a in v)),
                '"all" or a list of appids')
            values["accounts"] = "all" if accounts == "all" else tuple(accounts)
        if "account" in data:
            values["account"] = self._get("account", data["account"], str, "an appid")
        if "untag" in data:
            untag = self._get("untag", data["untag"], is_untag,
                              '"others" or a list of tag names or ids')
            values["untag"] = "others" if untag == "others" else tuple(map(str, untag))
        return values

    def input(self, value: Any) -> Path:
        path = self._path("input", value)
        if not path.exists():
            raise self.fail(f"input file not found: {path}")
        if not path.is_file():
            raise self.fail(f"input is not a file: {path}")
        return path

    def source(self, need_input: bool) -> tuple[Path, Selection | None]:
        """`input` (a spreadsheet) or `[select]` (a segment of the account): exactly one."""
        data = self.data
        if not need_input:  # export --job: the job's connection settings and [select] only
            return Path(), self._select(data["select"]) if "select" in data else None
        if "input" in data and "select" in data:
            raise self.fail("give either input (a spreadsheet) or [select] (followers chosen "
                            "from the account), not both")
        if "select" in data:
            return Path(), self._select(data["select"])
        if "input" in data:
            return self.input(data["input"]), None
        raise self.fail("missing required key 'input' (the spreadsheet to load) "
                        "or a [select] table")

    def _select(self, value: dict[str, Any]) -> Selection:
        self._table("select", value, _SELECT_KEYS)
        chosen = [k for k in ("tag", "group", "all") if k in value]
        if len(chosen) != 1:
            raise self.fail('[select] needs exactly one of tag = "name", group = "name" (or '
                            "an id) or all = true")
        kind = chosen[0]
        picked = ""
        if kind == "all" and value["all"] is not True:
            raise self.fail(f"select.all must be true, got {show(value['all'])}")
        if kind != "all":
            picked = str(self._get(f"select.{kind}", value[kind], is_name_or_id,
                                   "a name or an id (a whole number >= 0)")).strip()
        if ("to" in value) == ("to_id" in value):
            raise self.fail('[select] needs a target: to = "name" or to_id = 120 (one of them)')
        if "to" in value:
            to = self._get("select.to", value["to"], lambda v: isinstance(v, str) and bool(
                v.strip()), "a group or tag name (a non-empty string)")
            return Selection(kind, picked, to=to.strip())
        to_id = self._get("select.to_id", value["to_id"], lambda v: is_int(v) and v >= 0,
                          "an id (a whole number >= 0)")
        return Selection(kind, picked, to_id=to_id)

    def _check_strings(self, values: Mapping[str, Any]) -> None:
        if "name" in self.data and not values["name"].strip():
            raise self.fail("name must not be empty")
        if "encoding" in values:
            try:
                codecs.lookup(values["encoding"])
            except LookupError:
                raise self.fail(f"encoding {values['encoding']!r} is not an encoding "
                                "Python knows (try \"gb18030\" or \"utf-8\")") from None


def _is_rate(value: Any) -> bool:
    return value == AUTO or is_number(value) or (
        isinstance(value, str) and _as_number(value) is not None)


def _rate(value: Any) -> float | str:
    """ "auto", or calls per second (`--rate 50` arrives as text from the command line)."""
    if value == AUTO:
        return AUTO
    number = _as_number(value) if isinstance(value, str) else float(value)
    assert number is not None
    return number


def _as_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
