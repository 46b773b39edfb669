"""SQLite state of one receiver/sender: replay store, roster state, outbound sequence numbers,
the epoch keys held.

Owns: ``StateStore`` over one database file (``state.db`` in the state directory) and the
``SqliteReplayStore`` view of it that satisfies ``tfshare.replay.ReplayStore``; the sealing of
each epoch key at rest under the agency's state key (``seal_epoch_key``). Every write is
one transaction; WAL mode and ``synchronous=FULL`` so what was acknowledged survives a crash.

The file, its pragmas, transactions, the wording of storage failures and the schema upgrades
are ``tfshare.sqlite_db``'s, shared with the audit log. Storage failures (a full disk, a
damaged file, a read-only or locked database) become a ``StoreError`` (exit 1) that names the
file and says what to do; a transaction that fails is rolled back whole, so nothing is ever
half-written. The schema is ``MIGRATIONS``: a database of an earlier tfshare is upgraded in
place when opened, keeping its data; one of a later tfshare is refused (``SchemaError``).

Never: store plaintext. Only ids, hashes, times, sequence numbers and the roster state; an
epoch key only sealed (XChaCha20-Poly1305 under ``Identity.state_key``), so the file alone,
without the unlocked key file, opens nothing. A key delivery (``tf.epoch-key/1``) is recorded
for replay but never kept in the inbox.
Never grow without bound from what others send: the quarantine keeps a capped prefix of
each rejected envelope and no content past a total cap (metadata rows only).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar

from nacl.exceptions import CryptoError

from tfshare import primitives, sqlite_db
from tfshare.encoding import encode, label, u32
from tfshare.epochs import EPOCH_KEY_SCHEMA, EpochKey
from tfshare.replay import ReplayEntry
from tfshare.roster import RosterState, decode_state
from tfshare.sqlite_db import DatabaseFile, Migration, StorageError

# Schema 1: the tables as tfshare first created them. Never edited: a change is a new step.
_SCHEMA_1: Final = """
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
CREATE TABLE IF NOT EXISTS sent (
    msg_id BLOB PRIMARY KEY, env_hash BLOB NOT NULL, channel TEXT NOT NULL,
    schema TEXT NOT NULL, ts_ms INTEGER NOT NULL, no_forward INTEGER NOT NULL,
    handling_code TEXT NOT NULL, envelope BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS roster_state (
    taskforce TEXT PRIMARY KEY, seq INTEGER NOT NULL, state BLOB NOT NULL
) WITHOUT ROWID;
"""


# What the quarantine keeps of rejected envelopes (defaults; the agent passes its own):
# the first 64 KiB of each, and no content at all beyond 64 MiB in total.
QUARANTINE_KEEP_BYTES: Final = 64 * 1024
QUARANTINE_TOTAL_BYTES: Final = 64 * 1024 * 1024


def _quarantine_sizes(db: sqlite3.Connection) -> None:
    """Schema 2: the quarantine keeps each envelope's full size (NULL in older rows: the size
    is that of the envelope kept, which was then the whole envelope) and ``meta`` the running
    total of envelope bytes it keeps (the cap is checked against it). A database of the
    versions that added both before this step existed already has them: nothing is doubled."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(quarantine)")}
    if "size" not in columns:
        db.execute("ALTER TABLE quarantine ADD COLUMN size INTEGER")
    db.execute(
        "INSERT OR IGNORE INTO meta (key, value) "
        "SELECT 'quarantine_bytes', coalesce(sum(length(envelope)), 0) FROM quarantine"
    )


# Schema 3: the epoch keys held (envelope mode 2), each sealed under the state key.
_SCHEMA_3: Final = """
CREATE TABLE IF NOT EXISTS epoch_keys (
    taskforce TEXT NOT NULL, channel TEXT NOT NULL, epoch INTEGER NOT NULL,
    starts_ms INTEGER NOT NULL, sealed BLOB NOT NULL, received_ms INTEGER NOT NULL,
    PRIMARY KEY (taskforce, channel, epoch)
) WITHOUT ROWID;
"""

# Schema 4: the inbox as a rowid table with a unique index on its key. As a WITHOUT ROWID
# table each row (about 2 KiB: the whole envelope) sat in its key's B-tree, so every delivery
# inserted a large row at a random place in it: about 40 us per message where appending to a
# rowid table and indexing the key takes 17, and more once the inbox outgrows SQLite's page
# cache (an agent catching up on a backlog). Rows are kept, in the order they arrived.
_SCHEMA_4: Final = """
CREATE TABLE inbox_rowid (
    msg_id BLOB NOT NULL, sender_kid BLOB NOT NULL, env_hash BLOB NOT NULL,
    sender TEXT NOT NULL, channel TEXT NOT NULL, schema TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL, envelope BLOB NOT NULL
);
INSERT INTO inbox_rowid SELECT msg_id, sender_kid, env_hash, sender, channel, schema, ts_ms,
    received_ms, envelope FROM inbox ORDER BY received_ms, ts_ms;
DROP TABLE inbox;
ALTER TABLE inbox_rowid RENAME TO inbox;
CREATE UNIQUE INDEX inbox_key ON inbox (sender_kid, msg_id);
"""

# Schema 5: each inbox message's payload key K, sealed under the state key
# (``seal_inbox_key``), so the message stays readable after the epoch key or the retired
# secret that gave K is deleted. A table beside the inbox rather than a column of it: the
# inbox's rows stay as they were. Rows stored before have none: they open as they always did.
_SCHEMA_5: Final = """
CREATE TABLE IF NOT EXISTS inbox_keys (
    sender_kid BLOB NOT NULL, msg_id BLOB NOT NULL, sealed BLOB NOT NULL,
    PRIMARY KEY (sender_kid, msg_id)
) WITHOUT ROWID;
"""

# The schema, step by step, oldest first; a database is brought from its version to the last.
MIGRATIONS: Final = (
    Migration(1, "the first tables", sqlite_db.statements(_SCHEMA_1)),
    Migration(2, "quarantine sizes and their total", _quarantine_sizes),
    Migration(3, "the epoch keys held, sealed", sqlite_db.statements(_SCHEMA_3)),
    Migration(4, "the inbox as a rowid table", sqlite_db.statements(_SCHEMA_4)),
    Migration(5, "the inbox keeps each message's key, sealed", sqlite_db.statements(_SCHEMA_5)),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version


class StoreError(StorageError):
    """The state database cannot be read or written: the disk is full, the file is damaged,
    read-only or locked. Whatever the failing transaction wrote was rolled back. ``failure``
    says which (``tfshare.sqlfail``), as for the audit log's ``AuditStoreUnavailable``."""


STATE_DATABASE: Final = DatabaseFile(
    name="the state database",
    location="where the state directory is (or move it elsewhere with --state)",
    files="the state directory and of state.db* in it",
    damaged_hint="restore the state directory from backup; without it replays go unnoticed",
)


def store_error(path: Path, exc: sqlite3.Error, action: str = "write") -> StoreError | None:
    """The ``StoreError`` for a storage failure on the state database, or None if ``exc`` is
    not one (a constraint or programming error is a bug, and stays what it is). SQLite reports
    ENOSPC from the file system as SQLITE_FULL, "database or disk is full"."""
    return sqlite_db.storage_error(STATE_DATABASE, action, path, exc, StoreError)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(action: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turn a storage failure inside a store method into a ``StoreError`` that says what
    the method was doing ("read", "write")."""

    def decorate(method: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(method)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return method(*args, **kwargs)
            except sqlite3.Error as exc:
                error = store_error(getattr(args[0], "path", Path("state.db")), exc, action)
                if error is None:
                    raise
                raise error from None

        return wrapper

    return decorate


@contextlib.contextmanager
def _tx(db: sqlite3.Connection, path: Path) -> Iterator[None]:
    """One transaction (``sqlite_db.transaction``), or nothing if one is already open (so the
    agent can group a batch of outcomes into one commit, acknowledged after it); rolled back
    whole on any failure, and a storage failure is a ``StoreError``."""
    try:
        with sqlite_db.transaction(db):
            yield
    except sqlite3.Error as exc:
        error = store_error(path, exc)
        if error is None:
            raise
        raise error from None


def _unusable(path: Path, exc: sqlite3.Error) -> StoreError:
    """What opening the database found: a storage failure, or a file SQLite can open but
    our statements cannot use."""
    return store_error(path, exc, "open") or StoreError(
        f"the state database {str(path)!r} cannot be used ({exc})",
        hint=STATE_DATABASE.damaged_hint,
    )


_UPSERT_SENDER_SEQ: Final = (
    "INSERT INTO sender_seq VALUES (?, ?, ?) ON CONFLICT(sender, channel) "
    "DO UPDATE SET seq = max(seq, excluded.seq)"
)


class _SeqBatch:
    """The (sender, channel, seq) of each replay record made in the open
    ``StateStore.transaction``, kept until its end and then written as one row per pair:
    an upsert per message cost about 3 us of a delivery's ~30 in SQLite. A savepoint that
    is undone drops what was recorded in it, so the table says what a row-by-row write
    would have said."""

    __slots__ = ("open", "recorded")

    def __init__(self) -> None:
        self.open = False
        self.recorded: list[tuple[str, str, int]] = []


class _Savepoint:
    """``sqlite_db.savepoint`` ("one_message"), its storage failures a ``StoreError``, as a
    class rather than two nested generator context managers: it is entered once per message
    received (a couple of microseconds less each). Undone, it also drops the sequence
    numbers recorded in it."""

    __slots__ = ("_db", "_mark", "_path", "_seqs")

    def __init__(self, db: sqlite3.Connection, path: Path, seqs: _SeqBatch) -> None:
        self._db, self._path, self._seqs = db, path, seqs
        self._mark = 0

    def __enter__(self) -> None:
        self._mark = len(self._seqs.recorded)
        try:
            self._db.execute("SAVEPOINT one_message")
        except sqlite3.Error as exc:
            raise store_error(self._path, exc) or exc from None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                self._db.execute("RELEASE one_message")
                return
            del self._seqs.recorded[self._mark :]
            if self._db.in_transaction:
                self._db.execute("ROLLBACK TO one_message")
                self._db.execute("RELEASE one_message")
        except sqlite3.Error as failure:
            raise store_error(self._path, failure) or failure from None
        if isinstance(exc, sqlite3.Error):
            raise store_error(self._path, exc) or exc from None


class StateStore:
    """The state database of one agency's tools."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the database and bring its schema to ``SCHEMA_VERSION``: one of
        an earlier tfshare is upgraded in place, its data kept; one of a later tfshare is
        refused (``SchemaError``) and left as it is."""
        self.path = path
        self._seqs = _SeqBatch()
        try:
            self._db = sqlite_db.open_database(path, STATE_DATABASE, kind=StoreError)
        except sqlite3.Error as exc:
            raise _unusable(path, exc) from None
        try:
            self.upgraded_from, _ = sqlite_db.migrate(self._db, STATE_DATABASE, path, MIGRATIONS)
        except sqlite3.Error as exc:
            self._db.close()
            raise _unusable(path, exc) from None
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    # roster state -------------------------------------------------------------------------

    @_guarded("read")
    def roster_state(self, taskforce: str) -> RosterState | None:
        row = self._db.execute(
            "SELECT state FROM roster_state WHERE taskforce = ?", (taskforce,)
        ).fetchone()
        return decode_state(bytes(row[0])) if row else None

    @_guarded("write")
    def save_roster_state(self, taskforce: str, state: RosterState) -> None:
        """Persist the roster state; never moves the seq backwards (two processes may race)."""
        with _tx(self._db, self.path):
            self._db.execute(
                "INSERT INTO roster_state VALUES (?, ?, ?) "
                "ON CONFLICT(taskforce) DO UPDATE SET seq = excluded.seq, state = excluded.state "
                "WHERE excluded.seq >= roster_state.seq",
                (taskforce, state.seq, encode(state)),
            )

    # outbound sequence numbers ------------------------------------------------------------

    @_guarded("write")
    def next_seq(self, channel: str) -> int:
        """Reserve the next per-channel sequence number for a message we send."""
        with _tx(self._db, self.path):
            row = self._db.execute(
                "INSERT INTO outbound_seq VALUES (?, 1) "
                "ON CONFLICT(channel) DO UPDATE SET seq = seq + 1 RETURNING seq",
                (channel,),
            ).fetchone()
        return int(row[0])

    # replay -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes into one commit (one fsync); all or nothing. The senders'
        latest sequence numbers its replay records bring are written once, at its end
        (``_SeqBatch``), rather than once per message."""
        if self._db.in_transaction:  # joined: whoever opened it writes them
            with _tx(self._db, self.path):
                yield
            return
        seqs = self._seqs
        try:
            with _tx(self._db, self.path):
                seqs.open = True
                yield
                self._write_seqs()
        finally:
            seqs.open = False
            seqs.recorded.clear()

    def _write_seqs(self) -> None:
        """The highest sequence number recorded in this batch per (sender, channel), written
        in the batch's transaction (never moving one back: another process may be ahead)."""
        latest: dict[tuple[str, str], int] = {}
        for sender, channel, seq in self._seqs.recorded:
            pair = (sender, channel)
            if seq > latest.get(pair, -1):
                latest[pair] = seq
        if latest:
            rows = [(sender, channel, seq) for (sender, channel), seq in latest.items()]
            self._db.executemany(_UPSERT_SENDER_SEQ, rows)

    def replay(
        self, *, keep_inbox: bool = False, clock: Callable[[], int] | None = None
    ) -> SqliteReplayStore:
        """The replay store; with ``keep_inbox`` every delivered envelope is also kept
        (encrypted, as received) in the inbox, in the same transaction."""
        return SqliteReplayStore(
            self._db, keep_inbox=keep_inbox, clock=clock, path=self.path, seqs=self._seqs
        )

    # quarantine, inbox and outbox (the agent) ----------------------------------------------

    def savepoint(self) -> contextlib.AbstractContextManager[None]:
        """Inside a transaction: the writes of the block, undone alone if it fails (the rest
        of the transaction stays). The agent gives each message of a batch its own, so one
        message that cannot be processed does not take the others' outcomes with it."""
        return _Savepoint(self._db, self.path, self._seqs)

    @_guarded("write")
    def quarantine(
        self,
        item: Quarantined,
        *,
        keep_bytes: int = QUARANTINE_KEEP_BYTES,
        total_bytes: int = QUARANTINE_TOTAL_BYTES,
        whole: bool = False,
    ) -> bool:
        """Keep a rejected envelope with its code (once per envelope hash): always the code,
        reason, claimed sender and msg_id, env_hash and size; of the envelope itself the first
        ``keep_bytes``, and nothing once the quarantine holds ``total_bytes`` of envelopes (a
        member flooding junk cannot fill the disk). Returns whether content was kept.

        ``whole``: a signed message waiting for its epoch key, to be received again from here
        when the key comes: kept whole whatever the caps (it is counted in the total all the
        same). What a writer can put here this way is bounded by its quota on the channel's
        stream, and it leaves when the key comes (released, or relabelled)."""
        with _tx(self._db, self.path):
            row = self._db.execute(
                "SELECT value FROM meta WHERE key = 'quarantine_bytes'"
            ).fetchone()
            if row is None:  # kept by schema 2; counted again only if someone removed it
                (used,) = self._db.execute(
                    "SELECT coalesce(sum(length(envelope)), 0) FROM quarantine"
                ).fetchone()
            else:
                used = int(row[0])
            kept = item.envelope if whole else item.envelope[: max(keep_bytes, 0)]
            if not whole and used + len(kept) > total_bytes:
                kept = b""
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    item.env_hash,
                    item.code,
                    item.reason,
                    item.sender,
                    item.msg_id,
                    item.subject,
                    item.received_ms,
                    kept,
                    item.size if item.size is not None else len(item.envelope),
                ),
            ).rowcount
            if inserted:
                used += len(kept)
            self._db.execute(
                "INSERT INTO meta VALUES ('quarantine_bytes', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(used),),
            )
        return bool(inserted and kept)

    @_guarded("read")
    def quarantine_usage(self) -> tuple[int, int]:
        """(entries, bytes of envelope content kept) in the quarantine."""
        count, used = self._db.execute(
            "SELECT count(*), coalesce(sum(length(envelope)), 0) FROM quarantine"
        ).fetchone()
        return int(count), int(used)

    @_guarded("read")
    def inbox_count(self) -> int:
        (count,) = self._db.execute("SELECT count(*) FROM inbox").fetchone()
        return int(count)

    @_guarded("read")
    def quarantined(self, limit: int = 100) -> list[Quarantined]:
        rows = self._db.execute(
            "SELECT env_hash, code, reason, sender, msg_id, subject, received_ms, envelope, "
            "coalesce(size, length(envelope)) FROM quarantine ORDER BY received_ms DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [_quarantined(r) for r in rows]

    @_guarded("read")
    def quarantined_on(self, code: str, subject_prefix: str) -> list[Quarantined]:
        """The quarantined envelopes of ``code`` whose subject starts with ``subject_prefix``
        (a channel's, say), oldest first: the agent receives its E_EPOCH ones again once the
        channel's new key is held."""
        rows = self._db.execute(
            "SELECT env_hash, code, reason, sender, msg_id, subject, received_ms, envelope, "
            "coalesce(size, length(envelope)) FROM quarantine "
            "WHERE code = ? AND substr(subject, 1, ?) = ? ORDER BY received_ms",
            (code, len(subject_prefix), subject_prefix),
        ).fetchall()
        return [_quarantined(r) for r in rows]

    @_guarded("write")
    def quarantine_release(self, env_hash: bytes) -> bool:
        """Take an envelope out of the quarantine (it was received again and settled), and
        its bytes out of the quarantine's running total. Returns whether it was there."""
        with _tx(self._db, self.path):
            row = self._db.execute(
                "SELECT length(envelope) FROM quarantine WHERE env_hash = ?", (env_hash,)
            ).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM quarantine WHERE env_hash = ?", (env_hash,))
            self._db.execute(
                "UPDATE meta SET value = CAST(max(CAST(value AS INTEGER) - ?, 0) AS TEXT) "
                "WHERE key = 'quarantine_bytes'",
                (int(row[0]),),
            )
        return True

    @_guarded("write")
    def quarantine_relabel(self, env_hash: bytes, code: str, reason: str) -> None:
        """Give a quarantined envelope the verdict it got when received again."""
        with _tx(self._db, self.path):
            self._db.execute(
                "UPDATE quarantine SET code = ?, reason = ? WHERE env_hash = ?",
                (code, reason, env_hash),
            )

    @_guarded("read")
    def inbox(self, limit: int = 100) -> list[InboxItem]:
        rows = self._db.execute(
            "SELECT msg_id, sender_kid, env_hash, sender, channel, schema, ts_ms, received_ms, "
            "envelope, inbox_keys.sealed "
            "FROM inbox LEFT JOIN inbox_keys USING (sender_kid, msg_id) "
            "ORDER BY received_ms DESC, ts_ms DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [_inbox_item(r) for r in rows]

    @_guarded("write")
    def outbox_add(self, msg_id: bytes, subject: str, envelope: bytes, created_ms: int) -> None:
        with _tx(self._db, self.path):
            self._db.execute(
                "INSERT OR IGNORE INTO outbox (msg_id, subject, envelope, created_ms) "
                "VALUES (?, ?, ?, ?)",
                (msg_id, subject, envelope, created_ms),
            )

    @_guarded("read")
    def outbox(self) -> list[tuple[bytes, str, bytes]]:
        rows = self._db.execute(
            "SELECT msg_id, subject, envelope FROM outbox WHERE refused IS NULL ORDER BY created_ms"
        ).fetchall()
        return [(bytes(r[0]), r[1], bytes(r[2])) for r in rows]

    @_guarded("write")
    def outbox_refused(self, msg_id: bytes, reason: str) -> None:
        """Set aside an envelope the broker refused: kept (for people to see), never retried,
        and no longer in the way of the messages queued after it."""
        with _tx(self._db, self.path):
            self._db.execute("UPDATE outbox SET refused = ? WHERE msg_id = ?", (reason, msg_id))

    @_guarded("read")
    def outbox_refusals(self) -> list[tuple[bytes, str, str]]:
        rows = self._db.execute(
            "SELECT msg_id, subject, refused FROM outbox WHERE refused IS NOT NULL"
        ).fetchall()
        return [(bytes(r[0]), r[1], r[2]) for r in rows]

    @_guarded("write")
    def sent_add(self, item: SentItem) -> None:
        with _tx(self._db, self.path):
            self._db.execute(
                "INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (item.msg_id, item.env_hash, item.channel, item.schema, item.ts_ms,
                 int(item.no_forward), item.handling_code, item.envelope),
            )  # fmt: skip

    @_guarded("write")
    def sent_drop(self, msg_id: bytes) -> None:
        """Forget a sealed message that was neither sent nor queued."""
        with _tx(self._db, self.path):
            self._db.execute("DELETE FROM sent WHERE msg_id = ?", (msg_id,))

    @_guarded("read")
    def find_by_prefix(self, prefix_hex: str) -> tuple[list[InboxItem], list[SentItem]]:
        """Received and own messages whose msg_id starts with these hex digits."""
        like = prefix_hex.upper() + "%"
        received = self._db.execute(
            "SELECT msg_id, sender_kid, env_hash, sender, channel, schema, ts_ms, received_ms, "
            "envelope, inbox_keys.sealed "
            "FROM inbox LEFT JOIN inbox_keys USING (sender_kid, msg_id) "
            "WHERE hex(msg_id) LIKE ? LIMIT 10",
            (like,),
        ).fetchall()
        own = self._db.execute(
            "SELECT msg_id, env_hash, channel, schema, ts_ms, no_forward, handling_code, "
            "envelope FROM sent WHERE hex(msg_id) LIKE ? LIMIT 10",
            (like,),
        ).fetchall()
        return (
            [_inbox_item(r) for r in received],
            [
                SentItem(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4], bool(r[5]), r[6], bytes(r[7]))
                for r in own
            ],
        )

    @_guarded("read")
    def sent(self, limit: int = 100) -> list[SentItem]:
        """This agency's own messages, newest first."""
        rows = self._db.execute(
            "SELECT msg_id, env_hash, channel, schema, ts_ms, no_forward, handling_code, "
            "envelope FROM sent ORDER BY ts_ms DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            SentItem(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4], bool(r[5]), r[6], bytes(r[7]))
            for r in rows
        ]

    @_guarded("write")
    def outbox_done(self, *msg_ids: bytes) -> None:
        """Drop envelopes JetStream acknowledged (in one transaction)."""
        with _tx(self._db, self.path):
            self._db.executemany("DELETE FROM outbox WHERE msg_id = ?", [(m,) for m in msg_ids])

    # epoch keys ---------------------------------------------------------------------------

    @_guarded("write")
    def epoch_key_add(
        self,
        taskforce: str,
        key: EpochKey,
        *,
        state_key: bytes,
        received_ms: int,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> bool:
        """Keep a delivered epoch key, sealed under ``state_key``; a key held already is
        left as it is (a resend, or a delivery processed twice), unless its row does not open
        with ``state_key`` (sealed under another, or altered): then the key manager's resend
        replaces it. Returns whether the key was stored. Inside the agent's batch transaction
        when there is one: the key is kept together with the replay record of the message
        that delivered it."""
        sealed = seal_epoch_key(state_key, taskforce, key, rng(NONCE_BYTES))
        row = (taskforce, key.channel, key.epoch, key.starts_ms, sealed, received_ms)
        with _tx(self._db, self.path):
            if self._db.execute(
                "INSERT OR IGNORE INTO epoch_keys VALUES (?, ?, ?, ?, ?, ?)", row
            ).rowcount:
                return True
            starts_ms, held = self._db.execute(
                "SELECT starts_ms, sealed FROM epoch_keys "
                "WHERE taskforce = ? AND channel = ? AND epoch = ?",
                (taskforce, key.channel, key.epoch),
            ).fetchone()
            try:
                open_epoch_key(
                    state_key, taskforce, key.channel, key.epoch, int(starts_ms), bytes(held)
                )
            except CryptoError:
                self._db.execute("REPLACE INTO epoch_keys VALUES (?, ?, ?, ?, ?, ?)", row)
                return True
        return False

    @_guarded("read")
    def epoch_keys(self, taskforce: str, *, state_key: bytes) -> tuple[list[EpochKey], int]:
        """The epoch keys held for ``taskforce``, opened with ``state_key``, and how many
        rows did not open (sealed under another state key, or altered: never used)."""
        rows = self._db.execute(
            "SELECT channel, epoch, starts_ms, sealed FROM epoch_keys WHERE taskforce = ? "
            "ORDER BY channel, epoch",
            (taskforce,),
        ).fetchall()
        keys: list[EpochKey] = []
        unreadable = 0
        for channel, epoch, starts_ms, sealed in rows:
            try:
                secret, made_for = open_epoch_key_and_readers(
                    state_key, taskforce, channel, int(epoch), int(starts_ms), bytes(sealed)
                )
            except CryptoError:
                unreadable += 1
                continue
            keys.append(EpochKey(channel, int(epoch), secret, int(starts_ms), made_for))
        return keys, unreadable

    @_guarded("write")
    def epoch_keys_delete(self, taskforce: str, keys: Iterable[EpochKey]) -> int:
        """Forget epoch keys (past their retention): what was sealed under them no longer
        opens from this state. Returns how many rows went."""
        with _tx(self._db, self.path):
            cursor = self._db.executemany(
                "DELETE FROM epoch_keys WHERE taskforce = ? AND channel = ? AND epoch = ?",
                [(taskforce, k.channel, k.epoch) for k in keys],
            )
        return max(cursor.rowcount, 0)


# An epoch key at rest: nonce || XChaCha20-Poly1305(key || readers_digest), the associated
# data binding it to its task force, channel, epoch and start, so a row moved or edited in the
# file does not open. A row of an earlier tfshare seals the key alone (32 bytes): it opens
# with readers_digest b"", and such a key opens messages but never seals one.
L_STATE_EPOCH_KEY: Final = label("tfshare/v1/state-epoch-key")
NONCE_BYTES: Final = 24


def _epoch_key_ad(taskforce: str, channel: str, epoch: int, starts_ms: int) -> bytes:
    return (
        L_STATE_EPOCH_KEY
        + u32(taskforce.encode())
        + u32(channel.encode())
        + epoch.to_bytes(8, "big")
        + starts_ms.to_bytes(8, "big")
    )


def seal_epoch_key(state_key: bytes, taskforce: str, key: EpochKey, nonce: bytes) -> bytes:
    """``key.key`` and the reader set it was made for (``key.readers_digest``, 32 bytes or
    none) sealed for the state database (a fresh random ``nonce`` each time)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("the nonce must be 24 bytes")
    if len(key.readers_digest) not in (0, 32):
        raise ValueError("a reader-set digest is 32 bytes")
    ad = _epoch_key_ad(taskforce, key.channel, key.epoch, key.starts_ms)
    return nonce + primitives.aead_encrypt(key.key + key.readers_digest, ad, nonce, state_key)


def open_epoch_key_and_readers(
    state_key: bytes, taskforce: str, channel: str, epoch: int, starts_ms: int, sealed: bytes
) -> tuple[bytes, bytes]:
    """The epoch key of a stored row and the reader-set digest kept with it (b"" for a row
    of an earlier tfshare); ``CryptoError`` if it does not open as that row's."""
    if len(sealed) not in (NONCE_BYTES + 32 + 16, NONCE_BYTES + 64 + 16):
        raise CryptoError("a sealed epoch key has the wrong size")
    ad = _epoch_key_ad(taskforce, channel, epoch, starts_ms)
    plain = primitives.aead_decrypt(sealed[NONCE_BYTES:], ad, sealed[:NONCE_BYTES], state_key)
    return plain[:32], plain[32:]


def open_epoch_key(
    state_key: bytes, taskforce: str, channel: str, epoch: int, starts_ms: int, sealed: bytes
) -> bytes:
    """The epoch key of a stored row; ``CryptoError`` if it does not open as that row's."""
    return open_epoch_key_and_readers(state_key, taskforce, channel, epoch, starts_ms, sealed)[0]


def _quarantined(r: tuple[Any, ...]) -> Quarantined:
    return Quarantined(
        bytes(r[0]), r[1], r[2], r[3], bytes(r[4]) if r[4] else None, r[5], r[6], bytes(r[7]),
        int(r[8]),
    )  # fmt: skip


def _inbox_item(r: tuple[Any, ...]) -> InboxItem:
    return InboxItem(
        bytes(r[0]), bytes(r[1]), bytes(r[2]), r[3], r[4], r[5], r[6], r[7], bytes(r[8]),
        bytes(r[9]) if r[9] is not None else None,
    )  # fmt: skip


# A message's payload key K at rest with its inbox row: nonce || XChaCha20-Poly1305(K) under
# the state key, the associated data binding it to the message (sender key id and msg_id), so
# a sealed key copied to another row does not open there.
L_STATE_INBOX_KEY: Final = label("tfshare/v1/state-inbox-key")
PAYLOAD_KEY_BYTES: Final = 32


def _inbox_key_ad(sender_kid: bytes, msg_id: bytes) -> bytes:
    return L_STATE_INBOX_KEY + u32(sender_kid) + u32(msg_id)


def seal_inbox_key(
    state_key: bytes, sender_kid: bytes, msg_id: bytes, payload_key: bytes, nonce: bytes
) -> bytes:
    """K of a delivered message sealed for its inbox row (a fresh random ``nonce`` each time)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("the nonce must be 24 bytes")
    if len(payload_key) != PAYLOAD_KEY_BYTES:
        raise ValueError("a payload key is 32 bytes")
    ad = _inbox_key_ad(sender_kid, msg_id)
    return nonce + primitives.aead_encrypt(payload_key, ad, nonce, state_key)


def open_inbox_key(state_key: bytes, sender_kid: bytes, msg_id: bytes, sealed: bytes) -> bytes:
    """K of an inbox row; ``CryptoError`` if it does not open as that row's."""
    if len(sealed) != NONCE_BYTES + PAYLOAD_KEY_BYTES + 16:
        raise CryptoError("a sealed message key has the wrong size")
    ad = _inbox_key_ad(sender_kid, msg_id)
    return primitives.aead_decrypt(sealed[NONCE_BYTES:], ad, sealed[:NONCE_BYTES], state_key)


@dataclass(frozen=True)
class SentItem:
    """A message this agency sealed (sent, or queued to be): what lineage needs to derive
    from it later (amend, retract, reshare) without being able to decrypt it."""

    msg_id: bytes
    env_hash: bytes
    channel: str
    schema: str
    ts_ms: int
    no_forward: bool
    handling_code: str
    envelope: bytes


@dataclass(frozen=True)
class Quarantined:
    """A rejected envelope kept for the coordinators, with why. ``envelope`` is what was kept
    of it (a prefix, possibly empty: ``StateStore.quarantine`` caps it), ``size`` its full
    size in bytes (None when given to ``quarantine``: then ``len(envelope)``)."""

    env_hash: bytes
    code: str
    reason: str
    sender: str | None
    msg_id: bytes | None
    subject: str | None
    received_ms: int
    envelope: bytes
    size: int | None = None

    @property
    def truncated(self) -> bool:
        return self.size is not None and len(self.envelope) < self.size


def kept_message_key(state_key: bytes, item: InboxItem) -> bytes | None:
    """K as ``item``'s row kept it; None for a row of an earlier tfshare, or a sealed key
    that does not open as this row's (then the row is opened with the keys held)."""
    if item.sealed_key is None:
        return None
    try:
        return open_inbox_key(state_key, item.sender_kid, item.msg_id, item.sealed_key)
    except CryptoError:
        return None


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
    # K sealed under the state key (``open_inbox_key``); None for a row of an earlier tfshare.
    sealed_key: bytes | None = field(default=None, repr=False)


class SqliteReplayStore:
    """``ReplayStore`` on the state database."""

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        keep_inbox: bool = False,
        clock: Callable[[], int] | None = None,
        path: Path = Path("state.db"),
        seqs: _SeqBatch | None = None,
    ) -> None:
        self._db = db
        self.path = path
        self._keep_inbox = keep_inbox
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        # The batch transaction's pending sequence numbers (``StateStore.transaction``).
        self._seqs = seqs if seqs is not None else _SeqBatch()

    @_guarded("read")
    def lookup(self, sender_kid: bytes, msg_id: bytes) -> bytes | None:
        row = self._db.execute(
            "SELECT env_hash FROM replay WHERE sender_kid = ? AND msg_id = ?",
            (sender_kid, msg_id),
        ).fetchone()
        return bytes(row[0]) if row else None

    @_guarded("read")
    def last_seq(self, sender: str, channel: str) -> int | None:
        row = self._db.execute(
            "SELECT seq FROM sender_seq WHERE sender = ? AND channel = ?", (sender, channel)
        ).fetchone()
        # With those recorded in the open batch and not written yet.
        seqs = [seq for s, c, seq in self._seqs.recorded if s == sender and c == channel]
        if row:
            seqs.append(int(row[0]))
        return max(seqs) if seqs else None

    @_guarded("write")
    def record(self, entry: ReplayEntry) -> bytes | None:
        return self.record_keyed(entry, b"", b"")

    @_guarded("write")
    def record_keyed(
        self, entry: ReplayEntry, payload_key: bytes, state_key: bytes
    ) -> bytes | None:
        """``record``, and with the inbox row its message's payload key sealed under
        ``state_key`` (``seal_inbox_key``; nothing kept if either is empty)."""
        sealed = None
        if self._keep_inbox and payload_key and state_key and entry.schema != EPOCH_KEY_SCHEMA:
            sealed = seal_inbox_key(
                state_key, entry.sender_kid, entry.msg_id, payload_key, os.urandom(NONCE_BYTES)
            )
        if self._seqs.open:  # the batch's transaction: written at its end
            return self._record(entry, sealed)
        with _tx(self._db, self.path):
            return self._record(entry, sealed)

    def _record(self, entry: ReplayEntry, sealed_key: bytes | None = None) -> bytes | None:
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
        if self._seqs.open:
            self._seqs.recorded.append((entry.sender, entry.channel, entry.seq))
        else:
            self._db.execute(_UPSERT_SENDER_SEQ, (entry.sender, entry.channel, entry.seq))
        # A key delivery is bookkeeping, not a message: recorded against replay, never
        # listed (its key is kept sealed in epoch_keys by the agent).
        if self._keep_inbox and entry.schema != EPOCH_KEY_SCHEMA:
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
            if sealed_key is not None:
                self._db.execute(
                    "INSERT INTO inbox_keys VALUES (?, ?, ?)",
                    (entry.sender_kid, entry.msg_id, sealed_key),
                )
        return None
