"""The export's checkpoint: one small SQLite file that makes a long listing resumable.

An export of millions of followers takes hundreds of `user/get` pages and may be stopped by the
daily quota (500 pages a day), a signal or `kill -9`. Each page's followers are committed
together with the cursor of the next page, in one transaction, so a resume starts exactly at the
first page not yet recorded.

A page is stored as one text value (a line `openid TAB groupid TAB tagids` per follower), not
as a row per follower: 1,000,000 followers with a unique index on openid took 13-25 s to insert
on the 2-core VM, as page values about 0.3 s. Duplicates (a follower carrying two of the asked
tags, or listed twice while the account changes) are dropped when the file is written
(`followers()`), which keeps each openid once, at its first place.

It lives in a hidden directory beside the output (`.<file name>.export/`, mode 700, the file
mode 600, both hold follower ids) and is deleted once the output file is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from batchmove.errors import RunStateError
from batchmove.ledger.lock import DirectoryLock
from batchmove.ledger.storage import atomic, storage_error

CHECKPOINT_NAME = "checkpoint.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pages (
    seq       INTEGER PRIMARY KEY,   -- listing order: the output keeps it
    followers TEXT NOT NULL          -- "openid\tgroupid\ttagids" lines; tagids "101;107"
);
"""


class Cursor(NamedTuple):
    """Where the listing goes on: the index of the stream (`user/get`, or one tag's
    `user/tag/get`) and that stream's `next_openid`; `done` once every stream is read."""

    stream: int = 0
    next_openid: str = ""
    done: bool = False


#: (openid, groupid, tagids "101;107" in the order WeChat gave): a plain tuple, because a
#: NamedTuple's Python-level __new__ cost ~1 s per 1M followers
Follower = tuple[str, int, str]


def checkpoint_dir(out: Path) -> Path:
    """The checkpoint's directory for an output file: hidden, beside it."""
    return out.parent / f".{out.name}.export"


class ExportCheckpoint:
    """The checkpoint of one output file. Holds an exclusive lock while open (a second export
    to the same file refuses, exit 2)."""

    def __init__(self, out: Path) -> None:
        self.dir = checkpoint_dir(out)
        self.path = self.dir / CHECKPOINT_NAME
        self._lock = DirectoryLock(self.dir, f"another batchmove export is writing this file "
                                             f"(checkpoint {self.dir}); wait for it or stop it")
        self._db: sqlite3.Connection | None = None

    def open(self) -> ExportCheckpoint:
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
            os.chmod(self.dir, 0o700)
            self._lock.acquire()
            old_umask = os.umask(0o077)
            try:
                self._db = sqlite3.connect(self.path, isolation_level=None)
            finally:
                os.umask(old_umask)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-65536")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise RunStateError(f"{self.path} is not an export checkpoint ({exc}); delete "
                                f"{self.dir} to start the export again") from exc
        except OSError as exc:
            self.close()
            raise RunStateError(f"cannot use {self.dir}: {exc.strerror or exc}") from exc
        return self

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._lock.release()

    def remove(self) -> None:
        """The output is in place: the checkpoint (and its follower ids) go."""
        self.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ExportCheckpoint:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        """Closes; an SQLite error of the checkpoint's (a full disk...) leaves as one line
        naming it (exit 3: the export resumes from its last page)."""
        self.close()
        if isinstance(exc, sqlite3.Error):
            raise storage_error(exc, self.path) from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RunStateError("the export checkpoint is closed")
        return self._db

    # --- state ------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def start(self, fingerprint: str) -> bool:
        """Resume when the checkpoint is for the same export; else empty it. True: resumed."""
        if self.meta().get("fingerprint") == fingerprint:
            return True
        with atomic(self.db) as db:
            db.execute("DELETE FROM pages")
            db.execute("DELETE FROM meta")
            self._set(fingerprint=fingerprint, cursor=list(Cursor()), listed=0)
        return False

    def cursor(self) -> Cursor:
        stream, next_openid, done = self.meta().get("cursor", list(Cursor()))
        return Cursor(int(stream), str(next_openid), bool(done))

    def record_page(self, followers: Sequence[Follower], cursor: Cursor) -> None:
        """One page's followers and the cursor after it, in one transaction."""
        db = self.db
        listed = self.count() + len(followers)
        with atomic(db):
            if followers:
                db.execute("INSERT INTO pages (followers) VALUES (?)", (
                    "\n".join([f"{o}\t{g}\t{t}" for o, g, t in followers]),))
            self._set(cursor=list(cursor), listed=listed)

    def count(self) -> int:
        """Followers recorded (a duplicate counts twice until the file is written)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'listed'").fetchone()
        return int(json.loads(row[0])) if row else 0

    def followers(self) -> Iterator[list[str]]:
        """Every follower recorded as `[openid, groupid, tagids]` text, in listing order, each
        openid once (at its first place)."""
        seen: set[str] = set()
        add = seen.add
        for (page,) in self.db.execute("SELECT followers FROM pages ORDER BY seq"):
            for line in page.split("\n"):
                row = line.split("\t")
                if row[0] not in seen:
                    add(row[0])
                    yield row

    def _set(self, **values: Any) -> None:
        self.db.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, json.dumps(v, ensure_ascii=False)) for k, v in values.items()])
