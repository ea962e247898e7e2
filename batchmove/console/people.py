"""Who may use the console, and what each may do: named people with roles (`--users FILE`).

    four_eyes = true                 # optional: a plan is approved by someone else than its
                                     # submitter
    [people.alice]
    role = "submitter"               # submitter | approver | admin
    secret = "scrypt$16384$8$1$<salt>$<hash>"

- `submitter` uploads, plans, exports, watches and downloads (and discards a plan of its own);
  `approver` also approves, stops, resumes, verifies, rolls back and discards any plan;
  `admin` also sees the settings page and ends people's sessions.
- Secrets are stored as scrypt hashes (`hashlib.scrypt`, OpenSSL's; n=2^14, r=8, p=1: ~50 ms
  and 16 MB a try, in a thread), never as text; `batchmove serve adduser` writes the file
  (mode 600) and prints a new random secret once. A file others can read is refused.
- Without `--users`, one person, `admin`, holds the console's key (the mode of old).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchmove.console.runfiles import write_private
from batchmove.errors import UsageError

ROLES = ("submitter", "approver", "admin")
#: the least role each action needs (everyone signed in may watch and download)
NEEDS = {"watch": "submitter", "download": "submitter", "upload": "submitter",
         "plan": "submitter", "export": "submitter", "discard": "submitter",
         "approve": "approver", "stop": "approver", "resume": "approver",
         "verify": "approver", "rollback": "approver", "discard_any": "approver",
         "settings": "admin"}
KEY_HOLDER = "admin"
_NAME = re.compile(r"[\w.-]{1,40}")
_N, _R, _P = 1 << 14, 8, 1
_MAXMEM = 64 << 20


@dataclass(frozen=True)
class Person:
    name: str
    role: str

    def may(self, action: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(NEEDS[action])


@dataclass(frozen=True)
class People:
    """The people of a users file (or the key holder alone), and the four-eyes rule."""

    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (role, hash)
    four_eyes: bool = False

    def check(self, name: str, secret: str) -> Person | None:
        """The person whose name and secret these are, or None (same cost either way)."""
        role, stored = self.secrets.get(name, ("", _DUMMY))
        if not check_secret(secret, stored) or not role:
            return None
        return Person(name, role)

    def roles(self) -> dict[str, str]:
        return {name: role for name, (role, _) in sorted(self.secrets.items())}


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM)
    return "$".join(("scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)))


def check_secret(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        found = hashlib.scrypt(secret.encode(), salt=_unb64(salt), n=int(n), r=int(r),
                               p=int(p), maxmem=_MAXMEM, dklen=len(_unb64(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, _unb64(digest))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_DUMMY = hash_secret("not a secret of anyone's", b"0123456789abcdef")


def read_people(path: Path) -> People:
    """The users file, every entry checked; a bad one is a UsageError naming the file."""
    try:
        mode = path.stat().st_mode
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the users file ({exc})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UsageError(f"{path}: others can read the users file: chmod 600 {path}")
    unknown = sorted(set(data) - {"people", "four_eyes"})
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r} (known: people, four_eyes)")
    four_eyes = data.get("four_eyes", False)
    if not isinstance(four_eyes, bool):
        raise UsageError(f"{path}: four_eyes must be true or false")
    found = {name: _entry(path, name, entry)
             for name, entry in _table(path, data.get("people", {})).items()}
    if not found:
        raise UsageError(f"{path}: no people: add one with `batchmove serve adduser`")
    return People(found, four_eyes)


def _table(path: Path, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{path}: people must be a table ([people.NAME])")
    return value


def _entry(path: Path, name: str, entry: Any) -> tuple[str, str]:
    if not _NAME.fullmatch(name):
        raise UsageError(f"{path}: {name[:40]!r} is not a name (letters, digits, . _ -)")
    if not isinstance(entry, dict) or set(entry) != {"role", "secret"}:
        raise UsageError(f"{path}: [people.{name}] needs exactly role and secret")
    role, stored = entry["role"], entry["secret"]
    if role not in ROLES:
        raise UsageError(f"{path}: [people.{name}] role must be one of {', '.join(ROLES)}")
    if not isinstance(stored, str) or not stored.startswith("scrypt$") or \
            stored.count("$") != 5:
        raise UsageError(f"{path}: [people.{name}] secret is not a scrypt hash "
                         "(write it with `batchmove serve adduser`)")
    return role, stored


def add_person(path: Path, name: str, role: str, secret: str | None = None,
               four_eyes: bool | None = None) -> str:
    """Add (or replace) a person in the users file, written mode 600; the secret, a new
    random one unless given."""
    if not _NAME.fullmatch(name):
        raise UsageError(f"{name[:40]!r} is not a name (letters, digits, . _ -; at most 40)")
    if role not in ROLES:
        raise UsageError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    if secret is not None and len(secret) < 12:
        raise UsageError("the secret must have at least 12 characters")
    data: dict[str, Any] = {}
    if path.exists():
        people = read_people(path)
        data = {"four_eyes": people.four_eyes,
                "people": {n: {"role": r, "secret": h} for n, (r, h) in people.secrets.items()}}
    secret = secret or secrets.token_urlsafe(18)
    data.setdefault("people", {})[name] = {"role": role, "secret": hash_secret(secret)}
    if four_eyes is not None:
        data["four_eyes"] = four_eyes
    data.setdefault("four_eyes", False)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, _users_toml(data).encode())
    return secret


def _users_toml(data: dict[str, Any]) -> str:
    lines = ["# people of `batchmove serve --users` (written by `batchmove serve adduser`)",
             f"four_eyes = {'true' if data['four_eyes'] else 'false'}"]
    for name, entry in sorted(data["people"].items()):
        lines += ["", f"[people.{json.dumps(name, ensure_ascii=False)}]",
                  f"role = {json.dumps(entry['role'])}", f"secret = {json.dumps(entry['secret'])}"]
    return "\n".join(lines) + "\n"
