"""The audit log: who did what, append-only, in `<workspace>/audit.jsonl`.

One JSON object a line: `at` (UTC), `who`, `role`, `action`, `run`, `digest`, `counts`,
`client` (the address the request came from), `detail`, and `prev`, the sha256 of the line
before it (a chain: a line changed or removed on disk breaks it at that place, and
`verify_chain` says where). Lines are appended under an exclusive `flock` (two consoles on one
workspace never interleave), with `O_APPEND`, mode 600. The console offers no way to change
or delete a line: the API can only add one by acting, and read or download the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.jsonl"
ACTIONS = ("login", "login_failed", "logout", "upload", "plan", "export", "approve",
           "approve_refused", "stop", "resume", "verify", "rollback", "discard", "download",
           "end_sessions")
_GENESIS = "0" * 64
_TAIL = 1 << 16


@dataclass
class AuditLog:
    path: Path

    def add(self, action: str, *, who: str, role: str, client: str | None,
            run: str | None = None, digest: str | None = None,
            counts: dict[str, int] | None = None, detail: str | None = None,
            at: str = "") -> dict[str, Any]:
        """Append one entry (the chain's next link) and return it."""
        entry: dict[str, Any] = {"at": at, "who": who, "role": role, "action": action,
                                 "run": run, "digest": digest, "counts": counts,
                                 "client": client, "detail": detail}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entry["prev"] = _hash(self._last_line())
            os.write(fd, (json.dumps(entry, ensure_ascii=False) + "\n").encode())
        finally:
            os.close(fd)  # drops the lock
        return entry

    def _last_line(self) -> bytes:
        """The last line written (b"" for an empty log): its hash is the next one's `prev`."""
        with self.path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL))
            tail = f.read()
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        return lines[-1] if size else b""

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every entry, oldest first (a line that is not JSON is skipped)."""
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict):
                        yield data

    def search(self, *, run: str | None = None, who: str | None = None,
               action: str | None = None, offset: int = 0,
               limit: int = 100) -> tuple[int, list[dict[str, Any]]]:
        """Matching entries, newest first: (how many match, one page of them)."""
        found = [e for e in self.entries()
                 if (run is None or e.get("run") == run) and (who is None or e.get("who") == who)
                 and (action is None or e.get("action") == action)]
        found.reverse()
        return len(found), found[max(0, offset):max(0, offset) + max(1, min(limit, 500))]

    def verify_chain(self) -> int | None:
        """The number (from 1) of the first line whose `prev` does not match the line before
        it, or None when the chain is whole."""
        previous = b""
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            for number, line in enumerate(f, 1):
                body = line.rstrip(b"\n")
                try:
                    prev = json.loads(body).get("prev")
                except (ValueError, AttributeError):
                    return number
                if prev != _hash(previous):
                    return number
                previous = body
        return None


def _hash(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest() if line else _GENESIS
