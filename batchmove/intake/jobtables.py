"""The tables of a job file: `[columns]`, `[credentials]`, `[notify]` and `[sandbox]`.

Each key is checked where it is read, and an unknown one gets a "did you mean" (difflib), so a
typo stops the job with one line before anything is written to disk. `[sandbox]` is checked as
the embedded sandbox itself will check it (`SandboxConfig`), types first. Secrets and webhook
URLs are refused in every table: they belong in the environment. `TableReader` is the part of
the job file reader (`jobfile._Reader`) that knows them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from batchmove.errors import JobFileError
from batchmove.intake.jobvalues import is_int, is_number, is_outcomes, suggest
from batchmove.models import ColumnMap, Credentials, Notify, show

COLUMN_KEYS = tuple(f.name for f in fields(ColumnMap))
CREDENTIAL_KEYS = tuple(f.name for f in fields(Credentials))
_SECRETS = {"appsecret": "secret_env", "app_secret": "secret_env", "secret": "secret_env",
            "access_token": "token_env", "token": "token_env", "accesstoken": "token_env"}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOTIFY_KEYS = tuple(f.name for f in fields(Notify))
# [notify] keys that would hold a URL (a robot's URL carries its key): refused like secrets
_NOTIFY_URLS = {"wecom_webhook": "wecom_webhook_env", "wecom": "wecom_webhook_env",
                "robot": "wecom_webhook_env", "webhook": "webhook_env",
                "webhook_url": "webhook_env", "url": "webhook_env", "ping": "ping_env",
                "ping_url": "ping_env"}


class TableReader:
    """Checks the tables of one source (a job file, or the overrides): `label` names it in
    every message, `base` is what its relative paths are relative to."""

    label: str
    base: Path

    def fail(self, message: str) -> JobFileError:
        return JobFileError(f"{self.label}: {message}")

    def _get(self, key: str, value: Any, accept: Callable[[Any], bool] | type,
             what: str) -> Any:
        ok = isinstance(value, accept) if isinstance(accept, type) else accept(value)
        if not ok:
            raise self.fail(f"{key} must be {what}, got {show(value)}")
        return value

    def _path(self, key: str, value: Any) -> Path:
        if isinstance(value, Path):
            value = str(value)
        text = self._get(key, value, str, "a path (a string)")
        if not text.strip():
            raise self.fail(f"{key} must not be empty")
        path = Path(text).expanduser()
        return path if path.is_absolute() else Path(os.path.normpath(self.base / path))

    def _table(self, table: str, value: dict[str, Any], known: tuple[str, ...]) -> None:
        for key in value:
            self._refuse_secret(key, table)
            if key not in known:
                raise self.fail(f"[{table}] unknown key {key!r}{suggest(key, known)}")

    def _refuse_secret(self, key: str, table: str) -> None:
        use = _SECRETS.get(key.lower())
        if use is not None:
            where = f"[{table}] " if table else ""
            raise self.fail(f"{where}{key!r} would put a secret in the job file: keep it in an "
                            f"environment variable and name the variable with [credentials] "
                            f"{use} = \"...\"")

    def _columns(self, value: dict[str, Any]) -> ColumnMap:
        self._table("columns", value, COLUMN_KEYS)
        names: dict[str, str] = {}
        for key, name in value.items():
            text = self._get(f"columns.{key}", name, str, "a column header (a string)")
            if not text.strip():
                raise self.fail(f"columns.{key} must not be empty")
            names[key] = text
        return ColumnMap(**names)

    def _credentials(self, value: dict[str, Any]) -> Credentials:
        self._table("credentials", value, CREDENTIAL_KEYS)
        options: dict[str, Any] = {}
        for key, item in value.items():
            label = f"credentials.{key}"
            if key.endswith("_env"):
                options[key] = self._get(label, item, lambda v: isinstance(v, str) and bool(
                    _ENV_NAME.fullmatch(v)), "the NAME of an environment variable")
            elif key == "token_kind":
                options[key] = self._get(label, item, lambda v: v in ("stable", "classic"),
                                         '"stable" or "classic"')
            elif key == "component":
                options[key] = self._get(label, item, bool, "true or false")
            elif key == "ticket_file":
                options[key] = str(self._path(label, item))
            else:
                options[key] = self._get(label, item, lambda v: isinstance(v, str) and bool(
                    v.strip()), "a command line (a non-empty string)")
        return Credentials(**options)

    def _notify(self, value: dict[str, Any]) -> Notify:
        for key, item in value.items():
            use = _NOTIFY_URLS.get(key.lower())
            if use is None and not key.endswith("_env") and isinstance(item, str) \
                    and "://" in item:
                use = f"{key}_env"
            if use is not None:
                raise self.fail(f"[notify] {key!r} would put a URL in the job file; a webhook "
                                "URL is a secret (it carries the robot's key): keep it in an "
                                f"environment variable and name the variable with [notify] "
                                f"{use} = \"...\"")
        self._table("notify", value, _NOTIFY_KEYS)
        options: dict[str, Any] = {}
        for key, item in value.items():
            label = f"notify.{key}"
            if key == "on":
                options[key] = tuple(self._get(label, item, is_outcomes, "a list of "
                                               '"finish", "stop" and "failure"'))
            elif isinstance(item, str) and "://" in item:
                raise self.fail(f"{label} must be the NAME of an environment variable, not a "
                                "URL: a webhook URL is a secret; put it in the environment")
            elif item is not None:
                options[key] = self._get(label, item, lambda v: isinstance(v, str) and bool(
                    _ENV_NAME.fullmatch(v)), "the NAME of an environment variable")
        return Notify(**options)

    def _sandbox(self, value: dict[str, Any]) -> dict[str, Any]:
        """Checked as the sandbox checks them, before a ledger exists (`[sandbox] user = 1`)."""
        if not (settings := dict(value)):
            return settings
        from batchmove.sandbox.config import SandboxConfig  # imports aiohttp: only when used

        defaults = {f.name: f.default for f in fields(SandboxConfig)}
        defaults["from"] = None  # `from_file` in the job file's words (from_file: as recorded)
        for key, item in settings.items():  # appid and secret: the sandbox's own, not secrets
            if key not in defaults:
                raise self.fail(f"[sandbox] unknown key {key!r}{suggest(key, tuple(defaults))}")
            if key not in ("users_file", "from", "from_file"):
                self._get(f"sandbox.{key}", item, *_sandbox_type(key, defaults[key]))
        for key in ("users_file", "from_file", "from"):  # relative to the job file's folder
            if key in settings:
                path = self._path(f"sandbox.{key}", settings.pop(key))
                if not path.is_file():
                    raise self.fail(f"sandbox.{key}: no such file: {path}")
                settings["from_file" if key == "from" else key] = str(path)
        try:
            SandboxConfig(**settings)
        except (TypeError, ValueError) as exc:  # SandboxConfigError is a ValueError
            raise self.fail(f"[sandbox] {exc}") from None
        return settings


def _sandbox_type(key: str, default: Any) -> tuple[Callable[[Any], bool], str]:
    """What a `[sandbox]` value must be (the types the sandbox's own checks assume)."""
    if key in ("openids", "groups", "tags", "fault_endpoints"):
        return (lambda v: isinstance(v, list | tuple) and all(isinstance(x, str) for x in v),
                "a list of strings")
    if key == "daily_quota":
        return (lambda v: isinstance(v, dict)), "a table of endpoint = calls"
    if key == "minute_quota" or is_int(default):
        return is_int, "an integer"
    return (is_number, "a number") if isinstance(default, float) else (
        (lambda v: isinstance(v, str)), "a string")
