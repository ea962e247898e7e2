"""TOML job file -> frozen `JobSpec`. Every bad key is one line naming the key and the file.

Types are checked here (a job file is parsed once); ranges are checked by `check_spec`, after
the CLI's options are applied, so `--batch-size 40` can fix a job file's `batch_size = 80`.
Paths in a job file are relative to the job file, not to wherever the command runs.
"""

from __future__ import annotations

import codecs
import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from batchmove.errors import JobFileError, UsageError
from batchmove.models import MAX_BATCH, ColumnMap, Credentials, JobSpec, Selection

JOB_SUFFIX = ".toml"
SANDBOX = "sandbox"
XLSX_ROW_LIMIT = 1_048_575  # Excel's rows, less the header

_INT = ("concurrency", "batch_size", "retries", "failure_sample", "xlsx_max_rows")
_FLOAT = ("rate", "timeout", "max_failure_rate")
_BOOL = ("create_groups", "allow_blacklist", "confirm", "snapshot", "verify")
_STR = ("name", "encoding", "api_base")
_PATHS = ("input", "out")
_TOP = (*_STR, *_PATHS, *_INT, *_FLOAT, *_BOOL, "sheet", "target", "backend", "untag")
_TABLES = ("columns", "credentials", "sandbox", "select")
_SELECT_KEYS = ("tag", "group", "all", "to", "to_id")
_COLUMN_KEYS = tuple(f.name for f in fields(ColumnMap))
_CREDENTIAL_KEYS = tuple(f.name for f in fields(Credentials))
_SECRETS = {"appsecret": "secret_env", "app_secret": "secret_env", "secret": "secret_env",
            "access_token": "token_env", "token": "token_env", "accesstoken": "token_env"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def spec_for(path: Path) -> JobSpec:
    """A job file gives its spec; any other file is an input to run with the defaults."""
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if not path.is_file():
        raise UsageError(f"not a file: {path}")
    if path.suffix.lower() == JOB_SUFFIX:
        return load_job(path)
    return JobSpec(input=_absolute(path), name=path.stem)


def load_job(path: Path, *, need_input: bool = True) -> JobSpec:
    """Parse and type-check a job file; ranges are left to `check_spec`. `need_input=False`
    (export --job) reads its settings only: neither `input` nor `[select]` is required."""
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
    return _Reader(path, data, need_input).spec()


class _Reader:
    """One job file's keys, checked one by one with the file's name in every message."""

    def __init__(self, path: Path, data: dict[str, Any], need_input: bool = True) -> None:
        self.path = path
        self.need_input = need_input
        self.base = _absolute(path).parent
        self.data = data

    def fail(self, message: str) -> JobFileError:
        return JobFileError(f"{self.path}: {message}")

    def spec(self) -> JobSpec:
        data = self.data
        for key, value in data.items():
            self._refuse_secret(key, "")
            if key not in _TOP and key not in _TABLES:
                raise self.fail(f"unknown key {key!r}{_suggest(key, (*_TOP, *_TABLES))}")
            if key in _TABLES and not isinstance(value, dict):
                raise self.fail(f"{key} must be a table ([{key}]), got {_show(value)}")
            if key not in _TABLES and isinstance(value, dict):
                raise self.fail(f"[{key}] is not a table here: {key} is a plain key")
        values: dict[str, Any] = {"job_path": self.path, "name": self.path.stem}
        values["input"], values["select"] = self._source(data)
        for key in _STR:
            if key in data:
                values[key] = self._get(key, data[key], str, "a string")
        for key in _INT:
            if key in data:
                values[key] = self._get(key, data[key], _is_int, "an integer")
        for key in _FLOAT:
            if key in data:
                values[key] = float(self._get(key, data[key], _is_number, "a number"))
        for key in _BOOL:
            if key in data:
                values[key] = self._get(key, data[key], bool, "true or false")
        if "sheet" in data:
            values["sheet"] = self._get("sheet", data["sheet"], _is_sheet,
                                        "a sheet name or a number counted from 0")
        if "target" in data:
            values["target"] = self._get("target", data["target"],
                                         lambda v: v in ("id", "name", "set"),
                                         '"id", "name" or "set"')
        if "backend" in data:
            values["backend"] = self._get("backend", data["backend"],
                                          lambda v: v in ("groups", "tags"),
                                          '"groups" or "tags"')
        if "untag" in data:
            untag = self._get("untag", data["untag"], _is_untag,
                              '"others" or a list of tag names or ids')
            values["untag"] = "others" if untag == "others" else tuple(map(str, untag))
        if "out" in data:
            values["out"] = self._path("out", data["out"])
        values["columns"] = self._columns(data.get("columns", {}))
        values["credentials"] = self._credentials(data.get("credentials", {}))
        values["sandbox"] = self._sandbox(data.get("sandbox", {}))
        self._check_strings(values)
        return JobSpec(**values)

    def _get(self, key: str, value: Any, accept: Callable[[Any], bool] | type,
             what: str) -> Any:
        ok = isinstance(value, accept) if isinstance(accept, type) else accept(value)
        if not ok:
            raise self.fail(f"{key} must be {what}, got {_show(value)}")
        return value

    def _path(self, key: str, value: Any) -> Path:
        text = self._get(key, value, str, "a path (a string)")
        if not text.strip():
            raise self.fail(f"{key} must not be empty")
        path = Path(text).expanduser()
        return path if path.is_absolute() else Path(os.path.normpath(self.base / path))

    def _input(self, value: Any) -> Path:
        path = self._path("input", value)
        if not path.exists():
            raise self.fail(f"input file not found: {path}")
        if not path.is_file():
            raise self.fail(f"input is not a file: {path}")
        return path

    def _source(self, data: dict[str, Any]) -> tuple[Path, Selection | None]:
        """`input` (a spreadsheet) or `[select]` (a segment of the account), exactly one."""
        if "input" in data and "select" in data:
            raise self.fail("give either input (a spreadsheet) or [select] (followers chosen "
                            "from the account), not both")
        if "select" in data:
            return Path(), self._select(data["select"])
        if "input" in data:
            return self._input(data["input"]), None
        if self.need_input:
            raise self.fail("missing required key 'input' (the spreadsheet to load) "
                            "or a [select] table")
        return Path(), None

    def _select(self, value: dict[str, Any]) -> Selection:
        self._table("select", value, _SELECT_KEYS)
        chosen = [k for k in ("tag", "group", "all") if k in value]
        if len(chosen) != 1:
            raise self.fail('[select] needs exactly one of tag = "name", group = "name" (or '
                            "an id) or all = true")
        kind = chosen[0]
        if kind == "all":
            if value["all"] is not True:
                raise self.fail(f"select.all must be true, got {_show(value['all'])}")
            picked = ""
        else:
            item = self._get(f"select.{kind}", value[kind], _is_name_or_id,
                             "a name or an id (a whole number >= 0)")
            picked = str(item).strip()
        if ("to" in value) == ("to_id" in value):
            raise self.fail('[select] needs a target: to = "name" or to_id = 120 (one of them)')
        if "to" in value:
            to = self._get("select.to", value["to"], lambda v: isinstance(v, str) and bool(
                v.strip()), "a group or tag name (a non-empty string)")
            return Selection(kind, picked, to=to.strip())
        to_id = self._get("select.to_id", value["to_id"], lambda v: _is_int(v) and v >= 0,
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

    def _table(self, table: str, value: dict[str, Any], known: tuple[str, ...]) -> None:
        for key in value:
            self._refuse_secret(key, table)
            if key not in known:
                raise self.fail(f"[{table}] unknown key {key!r}{_suggest(key, known)}")

    def _refuse_secret(self, key: str, table: str) -> None:
        use = _SECRETS.get(key.lower())
        if use is not None:
            where = f"[{table}] " if table else ""
            raise self.fail(f"{where}{key!r} would put a secret in the job file: keep it in an "
                            f"environment variable and name the variable with [credentials] "
                            f"{use} = \"...\"")

    def _columns(self, value: dict[str, Any]) -> ColumnMap:
        self._table("columns", value, _COLUMN_KEYS)
        names: dict[str, str] = {}
        for key, name in value.items():
            text = self._get(f"columns.{key}", name, str, "a column header (a string)")
            if not text.strip():
                raise self.fail(f"columns.{key} must not be empty")
            names[key] = text
        return ColumnMap(**names)

    def _credentials(self, value: dict[str, Any]) -> Credentials:
        self._table("credentials", value, _CREDENTIAL_KEYS)
        options: dict[str, Any] = {}
        for key, item in value.items():
            label = f"credentials.{key}"
            if key.endswith("_env"):
                options[key] = self._get(label, item, lambda v: isinstance(v, str) and bool(
                    _ENV_NAME.fullmatch(v)), "the NAME of an environment variable")
            elif key == "token_kind":
                options[key] = self._get(label, item, lambda v: v in ("stable", "classic"),
                                         '"stable" or "classic"')
            else:
                options[key] = self._get(label, item, lambda v: isinstance(v, str) and bool(
                    v.strip()), "a command line (a non-empty string)")
        return Credentials(**options)

    def _sandbox(self, value: dict[str, Any]) -> dict[str, Any]:
        settings = dict(value)
        if "users_file" in settings:
            settings["users_file"] = str(self._path("sandbox.users_file",
                                                    settings["users_file"]))
        return settings


def check_spec(spec: JobSpec) -> JobSpec:
    """Ranges, checked after CLI overrides; raises UsageError naming the key (and option)."""
    _range("rate", spec.rate, spec.rate >= 0 and math.isfinite(spec.rate),
           ">= 0 (0 = no limit)")
    _range("concurrency", spec.concurrency, spec.concurrency >= 1, ">= 1")
    _range("batch_size", spec.batch_size, 1 <= spec.batch_size <= MAX_BATCH, f"1..{MAX_BATCH}")
    _range("retries", spec.retries, spec.retries >= 1, ">= 1")
    _range("timeout", spec.timeout, spec.timeout > 0 and math.isfinite(spec.timeout), "> 0")
    _range("max_failure_rate", spec.max_failure_rate, 0 < spec.max_failure_rate <= 1,
           "> 0 and <= 1")
    _range("failure_sample", spec.failure_sample, spec.failure_sample >= 1, ">= 1")
    _range("xlsx_max_rows", spec.xlsx_max_rows, 0 <= spec.xlsx_max_rows <= XLSX_ROW_LIMIT,
           f"0..{XLSX_ROW_LIMIT}")
    if spec.target not in (None, "id", "name", "set"):
        raise UsageError(f'target must be "id", "name" or "set", got {_show(spec.target)}')
    if spec.backend not in ("groups", "tags"):
        raise UsageError(f'backend must be "groups" or "tags", got {_show(spec.backend)}')
    if spec.backend == "groups" and (spec.untag or spec.target == "set"):
        raise UsageError('untag and target = "set" need backend = "tags"')
    if spec.backend == "tags" and not spec.snapshot and (spec.untag == "others"
                                                         or spec.target == "set"):
        raise UsageError('untag = "others" and tag sets need the snapshot (snapshot = true)')
    if isinstance(spec.sheet, int) and spec.sheet < 0:
        raise UsageError(f"sheet must be a name or a number >= 0, got {spec.sheet}")
    if spec.api_base != SANDBOX and not spec.api_base.startswith(("https://", "http://")):
        raise UsageError(f'api_base must be "sandbox" or an http(s):// URL, '
                         f"got {_show(spec.api_base)}")
    if not spec.name.strip() or spec.name in (".", "..") or any(c in spec.name for c in "/\\"):
        raise UsageError(f"name must be usable as a directory name, got {_show(spec.name)}")
    if spec.credentials.token_kind not in ("stable", "classic"):
        raise UsageError(f'token_kind must be "stable" or "classic", '
                         f"got {_show(spec.credentials.token_kind)}")
    return spec


def _range(key: str, value: float, ok: bool, wanted: str) -> None:
    if not ok:
        raise UsageError(f"{key} must be {wanted}, got {value:g}")


def _is_untag(value: Any) -> bool:
    return value == "others" or (isinstance(value, list) and all(
        isinstance(v, str) or _is_int(v) for v in value))


def _is_name_or_id(value: Any) -> bool:
    return (isinstance(value, str) and bool(value.strip())) or (_is_int(value) and value >= 0)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_sheet(value: Any) -> bool:
    return (isinstance(value, str) and bool(value.strip())) or (_is_int(value) and value >= 0)


def _show(value: Any) -> str:
    """A value as it looked in TOML (strings in double quotes), cut short."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _suggest(key: str, known: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(path.expanduser().absolute()))
