"""SQLite state of one receiver/sender: replay store, roster state, outbound sequence numbers.

Owns: ``StateStore`` over one database file (``state.db`` in the state directory) and the
``SqliteReplayStore`` view of it that satisfies ``tfshare.replay.ReplayStore``. Every write is
one transaction; WAL mode and ``synchronous=FULL`` so what was acknowledged survives a crash.

Never: store plaintext. Only ids, hashes, times, sequence numbers and the roster state.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tfshare.encoding import encode
from tfshare.errors import InputError
from tfshare.replay import ReplayEntry
from tfshare.roster import RosterState, decode_state

SCHEMA_VERSION: Final = 1

_DDL: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS replay (
    sender_kid BLOB NOT NULL, msg_id BLOB NOT NULL, env_hash BLOB NOT NULL,
    ts_ms INTEGER NOT NULL, sender TEXT NOT NULL, channel TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (sender_kid, msg_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sender_seq (
    sender TEXT NOT NULL, channel TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (sender, channel)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbound_seq (
    channel TEXT PRIMARY KEY, seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS inbox (
    msg_id BLOB NOT NULL, sender_kid BLOB NOT NULL, env_hash BLOB NOT NULL,
    sender TEXT NOT NULL, channel TEXT NOT NULL, schema TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, envelope BLOB NOT NULL,
    PRIMARY KEY (sender_kid, msg_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    env_hash BLOB PRIMARY KEY, code TEXT NOT NULL, reason TEXT NOT NULL, sender TEXT,
    msg_id BLOB, subject TEXT, received_ms INTEGER NOT NULL, envelope BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    msg_id BLOB PRIMARY KEY, subject TEXT NOT NULL, envelope BLOB NOT NULL,
    created_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, refused TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roster_state (
    taskforce TEXT PRIMARY KEY, seq INTEGER NOT NULL, state BLOB NOT NULL
) WITHOUT ROWID;
"""


@contextlib.contextmanager
def _tx(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction: BEGIN IMMEDIATE ... COMMIT, or nothing if one is already open (so the
    agent can group a batch of outcomes into one commit, acknowledged after it)."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.rollback()
        raise
    db.commit()


class StateStore:
    """The state database of one agency's tools."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                # Created 0600 before SQLite opens it: ids and hashes are still case metadata.
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with _tx(self._db):
                self._db.executescript(_DDL)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise InputError(
                    f"state database {str(path)!r} has schema {row[0]}",
                    hint="it was written by another tfshare version; upgrade tfshare",
                )
        except sqlite3.DatabaseError as exc:
            raise InputError(
                f"state database {str(path)!r} cannot be used ({exc})",
                hint="restore the state directory from backup; without it replays go unnoticed",
            ) from None
        except OSError as exc:
            raise InputError(
                f"cannot create state directory {str(path.parent)!r}: {exc.strerror}",
                hint="check the path and its permissions, or pass --state",
            ) from None

    def close(self) -> None:
        self._db.close()

    # roster state -------------------------------------------------------------------------

    def roster_state(self, taskforce: str) -> RosterState | None:
        row = self._db.execute(
            "SELECT state FROM roster_state WHERE taskforce = ?", (taskforce,)
        ).fetchone()
        return decode_state(bytes(row[0])) if row else None

    def save_roster_state(self, taskforce: str, state: RosterState) -> None:
        """Persist the roster state; never moves the seq backwards (two processes may race)."""
        with _tx(self._db):
            self._db.execute(
                "INSERT INTO roster_state VALUES (?, ?, ?) "
                "ON CONFLICT(taskforce) DO UPDATE SET seq = excluded.seq, state = excluded.state "
                "WHERE excluded.seq >= roster_state.seq",
                (taskforce, state.seq, encode(state)),
            )

    # outbound sequence numbers ------------------------------------------------------------

    def next_seq(self, channel: str) -> int:
        """Reserve the next per-channel sequence number for a message we send."""
        with _tx(self._db):
            row = self._db.execute(
                "INSERT INTO outbound_seq VALUES (?, 1) "
                "ON CONFLICT(channel) DO UPDATE SET seq = seq + 1 RETURNING seq",
                (channel,),
            ).fetchone()
        return int(row[0])

    # replay -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes into one commit (one fsync)."""
        with _tx(self._db):
            yield

    def replay(
        self, *, keep_inbox: bool = False, clock: Callable[[], int] | None = None
    ) -> SqliteReplayStore:
        """The replay store; with ``keep_inbox`` every delivered envelope is also kept
        (encrypted, as received) in the inbox, in the same transaction."""
        return SqliteReplayStore(self._db, keep_inbox=keep_inbox, clock=clock)

    # quarantine, inbox and outbox (the agent) ----------------------------------------------

    def quarantine(self, item: Quarantined) -> None:
        """Keep a rejected envelope with its code (once per envelope hash)."""
        with _tx(self._db):
            self._db.execute(
                "INSERT OR IGNORE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.env_hash,
                    item.code,
                    item.reason,
                    item.sender,
                    item.msg_id,
                    item.subject,
                    item.received_ms,
                    item.envelope,
                ),
            )

    def quarantined(self, limit: int = 100) -> list[Quarantined]:
        rows = self._db.execute(
            "SELECT env_hash, code, reason, sender, msg_id, subject, received_ms, envelope "
            "FROM quarantine ORDER BY received_ms DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            Quarantined(
                bytes(r[0]),
                r[1],
                r[2],
                r[3],
                bytes(r[4]) if r[4] else None,
                r[5],
                r[6],
                bytes(r[7]),
            )
            for r in rows
        ]

    def inbox(self, limit: int = 100) -> list[InboxItem]:
        rows = self._db.execute(
            "SELECT msg_id, sender_kid, env_hash, sender, channel, schema, ts_ms, received_ms, "
            "envelope FROM inbox ORDER BY received_ms DESC, ts_ms DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            InboxItem(
                bytes(r[0]), bytes(r[1]), bytes(r[2]), r[3], r[4], r[5], r[6], r[7], bytes(r[8])
            )
            for r in rows
        ]

    def outbox_add(self, msg_id: bytes, subject: str, envelope: bytes, created_ms: int) -> None:
        with _tx(self._db):
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (msg_id, subject, envelope, created_ms) "
                "VALUES (?, ?, ?, ?)",
                (msg_id, subject, envelope, created_ms),
            )

    def outbox(self) -> list[tuple[bytes, str, bytes]]:
        rows = self._db.execute(
            "SELECT msg_id, subject, envelope FROM outbox WHERE refused IS NULL ORDER BY created_ms"
        ).fetchall()
        return [(bytes(r[0]), r[1], bytes(r[2])) for r in rows]

    def outbox_refused(self, msg_id: bytes, reason: str) -> None:
        """Set aside an envelope the broker refused: kept (for people to see), never retried,
        and no longer in the way of the messages queued after it."""
        with _tx(self._db):
            self._db.execute("UPDATE outbox SET refused = ? WHERE msg_id = ?", (reason, msg_id))

    def outbox_refusals(self) -> list[tuple[bytes, str, str]]:
        rows = self._db.execute(
            "SELECT msg_id, subject, refused FROM outbox WHERE refused IS NOT NULL"
        ).fetchall()
        return [(bytes(r[0]), r[1], r[2]) for r in rows]

    def outbox_done(self, *msg_ids: bytes) -> None:
        """Drop envelopes JetStream acknowledged (in one transaction)."""
        with _tx(self._db):
            self._db.executemany("DELETE FROM outbox WHERE msg_id = ?", [(m,) for m in msg_ids])


@dataclass(frozen=True)
class Quarantined:
    """A rejected envelope kept for the coordinators, with why."""

    env_hash: bytes
    code: str
    reason: str
    sender: str | None
    msg_id: bytes | None
    subject: str | None
    received_ms: int
    envelope: bytes


@dataclass(frozen=True)
class InboxItem:
    """A delivered message as stored: metadata in clear, the envelope still encrypted."""

    msg_id: bytes
    sender_kid: bytes
    env_hash: bytes
    sender: str
    channel: str
    schema: str
    ts_ms: int
    received_ms: int
    envelope: bytes


class SqliteReplayStore:
    """``ReplayStore`` on the state database."""

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        keep_inbox: bool = False,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self._db = db
        self._keep_inbox = keep_inbox
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)

    def lookup(self, sender_kid: bytes, msg_id: bytes) -> bytes | None:
        row = self._db.execute(
            "SELECT env_hash FROM replay WHERE sender_kid = ? AND msg_id = ?",
            (sender_kid, msg_id),
        ).fetchone()
        return bytes(row[0]) if row else None

    def last_seq(self, sender: str, channel: str) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM sender_seq WHERE sender = ? AND channel = ?", (sender, channel)
        ).fetchone()
        return int(row[0]) if row else None

    def record(self, entry: ReplayEntry) -> bytes | None:
        with _tx(self._db):
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO replay VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.sender_kid,
                    entry.msg_id,
                    entry.env_hash,
                    entry.ts_ms,
                    entry.sender,
                    entry.channel,
                    entry.seq,
                ),
            )
            if inserted.rowcount == 0:  # recorded before: report what is stored
                return self.lookup(entry.sender_kid, entry.msg_id)
            self._db.execute(
                "INSERT INTO sender_seq VALUES (?, ?, ?) ON CONFLICT(sender, channel) "
                "DO UPDATE SET seq = max(seq, excluded.seq)",
                (entry.sender, entry.channel, entry.seq),
            )
            if self._keep_inbox:
                self._db.execute(
                    "INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.msg_id,
                        entry.sender_kid,
                        entry.env_hash,
                        entry.sender,
                        entry.channel,
                        entry.schema,
                        entry.ts_ms,
                        self._clock(),
                        entry.envelope,
                    ),
                )
        return None
