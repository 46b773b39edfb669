"""The key manager's state: the epochs it made and the deliveries still to publish.

Owns: ``KeyManagerStore`` over ``keymanager.db`` in the agency's state directory (opened,
written and upgraded by ``tfshare.sqlite_db``, like the agent's state and the audit log):

- ``epochs``: per channel and epoch, the key AEAD-sealed under the agency's state key
  (``Identity.state_key``: only the unlocked key file opens it), its start, why it was made,
  the channel stream's sequence when it began (for the message budget) and the digest of the
  reader set its deliveries name (a resend names the same; NULL for an epoch made before
  deliveries named one, which is replaced at once);
- ``epoch_readers``: who (agency and the encryption key id) each epoch was delivered to;
- ``outbox``: the sealed delivery envelopes, written in the same transaction as their epoch
  and removed once JetStream acknowledged them. After a broker outage the same bytes are
  published again under the same Nats-Msg-Id: never a second key for an epoch;
- ``outbound_seq``: the key manager's own per-channel sequence numbers.

Never: a key in the clear on disk, in a log or a repr.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nacl.exceptions import CryptoError

from tfshare import primitives, sqlite_db
from tfshare.encoding import label, u32
from tfshare.errors import TrustError
from tfshare.keymanager.plan import EpochState, ReaderSet
from tfshare.seal import Recipient, Sealed
from tfshare.sqlite_db import DatabaseFile, Migration, StorageError

DATABASE_NAME: Final = "keymanager.db"
L_SEALED_EPOCH: Final = label("tfshare/v1/keymanager-epoch")

_SCHEMA_1: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    channel TEXT NOT NULL, epoch INTEGER NOT NULL, nonce BLOB NOT NULL, sealed_key BLOB NOT NULL,
    starts_ms INTEGER NOT NULL, reason TEXT NOT NULL, start_seq INTEGER,
    own_msgs INTEGER NOT NULL DEFAULT 0, roster_seq INTEGER NOT NULL,
    PRIMARY KEY (channel, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS epoch_readers (
    channel TEXT NOT NULL, epoch INTEGER NOT NULL, agency TEXT NOT NULL, enc_kid BLOB NOT NULL,
    PRIMARY KEY (channel, epoch, agency)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    msg_id BLOB PRIMARY KEY, channel TEXT NOT NULL, epoch INTEGER NOT NULL,
    subject TEXT NOT NULL, envelope BLOB NOT NULL, created_ms INTEGER NOT NULL,
    refused TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbound_seq (
    channel TEXT PRIMARY KEY, seq INTEGER NOT NULL
) WITHOUT ROWID;
"""

# Schema 2: each epoch's reader-set digest (PROTOCOL.md 8.6), what a resend names again.
_SCHEMA_2: Final = """
ALTER TABLE epochs ADD COLUMN readers_digest BLOB;
"""

MIGRATIONS: Final = (
    Migration(1, "the key manager's first tables", sqlite_db.statements(_SCHEMA_1)),
    Migration(2, "the reader set each epoch was made for", sqlite_db.statements(_SCHEMA_2)),
)

KEYMANAGER_DATABASE: Final = DatabaseFile(
    name="the key manager's database",
    location="where the state directory is (or move it elsewhere with --state)",
    files=f"the state directory and of {DATABASE_NAME}* in it",
    damaged_hint="restore the state directory from backup; without it the key manager starts "
    "every epoch-mode channel's epochs again from a new number, which the agents refuse "
    "(E_EPOCH): tell the coordinators",
)


class KeyManagerStoreError(StorageError):
    """The key manager's database cannot be read or written (disk, lock, damage)."""


@dataclass(frozen=True)
class StoredEpoch:
    """One epoch as stored, its key opened with the state key."""

    state: EpochState
    key: bytes = field(repr=False)
    reason: str


@dataclass(frozen=True)
class Pending:
    """A delivery envelope not yet acknowledged by the broker."""

    msg_id: bytes
    channel: str
    epoch: int
    subject: str
    envelope: bytes = field(repr=False)


def _ad(channel: str, epoch: int, starts_ms: int) -> bytes:
    # The key is bound to its row: a sealed key copied to another channel or epoch (an edit
    # of the file) does not open there.
    return (
        L_SEALED_EPOCH
        + u32(channel.encode())
        + epoch.to_bytes(8, "big")
        + starts_ms.to_bytes(8, "big")
    )


class KeyManagerStore:
    """The database of one key manager (one agency, one task force)."""

    def __init__(self, path: Path, *, state_key: bytes) -> None:
        if len(state_key) != 32:
            raise ValueError("the state key is 32 bytes")
        self.path = path
        self._state_key = state_key
        # Who each epoch went to never changes once written: read once per process (the
        # key manager looks every few seconds, at up to 20,000 readers per channel).
        self._reader_sets: dict[tuple[str, int], ReaderSet] = {}
        try:
            self._db = sqlite_db.open_database(path, KEYMANAGER_DATABASE, kind=KeyManagerStoreError)
        except sqlite3.Error as exc:
            raise self._error(exc, "open") from None
        try:
            sqlite_db.migrate(self._db, KEYMANAGER_DATABASE, path, MIGRATIONS)
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error(exc, "open") from None
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"KeyManagerStore({str(self.path)!r})"

    @classmethod
    def in_state_dir(cls, state_dir: Path, *, state_key: bytes) -> KeyManagerStore:
        return cls(state_dir / DATABASE_NAME, state_key=state_key)

    def close(self) -> None:
        self._db.close()

    def _error(self, exc: sqlite3.Error, action: str) -> KeyManagerStoreError:
        return sqlite_db.storage_error(
            KEYMANAGER_DATABASE, action, self.path, exc, KeyManagerStoreError
        ) or KeyManagerStoreError(
            f"the key manager's database {str(self.path)!r} cannot be used ({exc})",
            hint=KEYMANAGER_DATABASE.damaged_hint,
        )

    @contextlib.contextmanager
    def _tx(self, action: str = "write") -> Iterator[None]:
        try:
            with sqlite_db.transaction(self._db):
                yield
        except sqlite3.Error as exc:
            raise self._error(exc, action) from None

    def _read(self, sql: str, args: tuple[object, ...] = ()) -> list[Any]:
        try:
            return list(self._db.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise self._error(exc, "read") from None

    # epochs -------------------------------------------------------------------------------

    def _open_key(
        self, channel: str, epoch: int, starts_ms: int, nonce: bytes, sealed: bytes
    ) -> bytes:
        try:
            return primitives.aead_decrypt(
                sealed, _ad(channel, epoch, starts_ms), nonce, self._state_key
            )
        except CryptoError:
            raise TrustError(
                f"the key of epoch {epoch} of {channel!r} in {str(self.path)!r} does not open "
                "with this agency's key",
                hint="this state directory belongs to another key file, or was altered; use "
                "the key manager's own key and state",
            ) from None

    def _readers(self, channel: str, epoch: int) -> ReaderSet:
        known = self._reader_sets.get((channel, epoch))
        if known is None:
            known = self._reader_sets[channel, epoch] = frozenset(
                (str(agency), bytes(kid))
                for agency, kid in self._read(
                    "SELECT agency, enc_kid FROM epoch_readers WHERE channel = ? AND epoch = ?",
                    (channel, epoch),
                )
            )
        return known

    def current(self) -> dict[str, StoredEpoch]:
        """Each channel's newest epoch, its key opened."""
        rows = self._read(
            "SELECT channel, epoch, nonce, sealed_key, starts_ms, reason, start_seq, own_msgs, "
            "readers_digest FROM epochs e "
            "WHERE epoch = (SELECT max(epoch) FROM epochs WHERE channel = e.channel)"
        )
        out: dict[str, StoredEpoch] = {}
        for channel, epoch, nonce, sealed, starts_ms, reason, start_seq, own, digest in rows:
            assert (
                isinstance(channel, str) and isinstance(epoch, int) and isinstance(starts_ms, int)
            )
            readers = self._readers(channel, epoch)
            key = self._open_key(channel, epoch, starts_ms, bytes(nonce), bytes(sealed))
            # The key manager's own deliveries are not messages of the epoch's budget.
            start = None if start_seq is None else int(start_seq) + int(own)
            made_for = None if digest is None else bytes(digest)
            state = EpochState(channel, epoch, starts_ms, readers, start, made_for)
            out[channel] = StoredEpoch(state, key, str(reason))
        return out

    def record_epoch(
        self,
        *,
        channel: str,
        epoch: int,
        key: bytes,
        nonce: bytes,
        starts_ms: int,
        reason: str,
        start_seq: int | None,
        roster_seq: int,
        readers: Sequence[Recipient],
        readers_digest: bytes,
        subject: str,
        deliveries: Sequence[Sealed],
    ) -> None:
        """Persist a new epoch, who it goes to (and the digest its deliveries name) and its
        delivery envelopes, in one transaction: what is published afterwards is exactly this
        (retried as it is)."""
        if len(readers_digest) != 32:
            raise ValueError("a reader-set digest is 32 bytes")
        sealed = primitives.aead_encrypt(
            key, _ad(channel, epoch, starts_ms), nonce, self._state_key
        )
        with self._tx():
            self._db.execute(
                "INSERT INTO epochs (channel, epoch, nonce, sealed_key, starts_ms, reason, "
                "start_seq, own_msgs, roster_seq, readers_digest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
                (
                    channel,
                    epoch,
                    nonce,
                    sealed,
                    starts_ms,
                    reason,
                    start_seq,
                    roster_seq,
                    readers_digest,
                ),
            )
            self._db.executemany(
                "INSERT INTO epoch_readers VALUES (?, ?, ?, ?)",
                [(channel, epoch, r.agency_id, r.kid) for r in readers],
            )
            self._queue(channel, epoch, subject, deliveries)

    def queue_deliveries(
        self, channel: str, epoch: int, subject: str, deliveries: Sequence[Sealed]
    ) -> None:
        """Queue more deliveries of an epoch already made (a resend)."""
        with self._tx():
            self._queue(channel, epoch, subject, deliveries)

    def _queue(self, channel: str, epoch: int, subject: str, deliveries: Sequence[Sealed]) -> None:
        self._db.executemany(
            "INSERT INTO outbox VALUES (?, ?, ?, ?, ?, ?, NULL)",
            [(d.msg_id, channel, epoch, subject, d.data, d.ts_ms) for d in deliveries],
        )

    def set_start_seq(self, channel: str, epoch: int, seq: int) -> None:
        """The stream position the epoch's message budget counts from, for an epoch made
        while its stream could not be read (set once)."""
        with self._tx():
            self._db.execute(
                "UPDATE epochs SET start_seq = ? WHERE channel = ? AND epoch = ? "
                "AND start_seq IS NULL",
                (seq, channel, epoch),
            )

    def channels(self) -> set[str]:
        """The channels this key manager made an epoch of (without opening a key)."""
        return {str(row[0]) for row in self._read("SELECT DISTINCT channel FROM epochs")}

    def readers_of(self, channel: str, epoch: int) -> set[str]:
        return {
            str(row[0])
            for row in self._read(
                "SELECT agency FROM epoch_readers WHERE channel = ? AND epoch = ?",
                (channel, epoch),
            )
        }

    # outbox -------------------------------------------------------------------------------

    def pending(self) -> list[Pending]:
        """Deliveries not yet acknowledged (and not refused by the broker), oldest first."""
        return [
            Pending(bytes(m), str(c), int(e), str(s), bytes(d))
            for m, c, e, s, d in self._read(
                "SELECT msg_id, channel, epoch, subject, envelope FROM outbox "
                "WHERE refused IS NULL ORDER BY created_ms, msg_id"
            )
        ]

    def published(self, *msg_ids: bytes, own: Mapping[tuple[str, int], int] | None = None) -> None:
        """Acknowledged deliveries leave the queue; ``own``: how many messages each
        (channel, epoch) thereby added to its stream (not counted in its budget)."""
        with self._tx():
            self._db.executemany("DELETE FROM outbox WHERE msg_id = ?", [(m,) for m in msg_ids])
            self._db.executemany(
                "UPDATE epochs SET own_msgs = own_msgs + ? WHERE channel = ? AND epoch = ?",
                [(n, channel, epoch) for (channel, epoch), n in (own or {}).items()],
            )

    def refused(self, msg_id: bytes, reason: str) -> None:
        """Set aside a delivery the broker refuses (permissions, size): tried again only after
        ``retry_refused`` (a restart: the broker's configuration may have been fixed)."""
        with self._tx():
            self._db.execute("UPDATE outbox SET refused = ? WHERE msg_id = ?", (reason, msg_id))

    def retry_refused(self) -> int:
        with self._tx():
            cursor = self._db.execute("UPDATE outbox SET refused = NULL WHERE refused IS NOT NULL")
        return int(cursor.rowcount)

    # sequence numbers ---------------------------------------------------------------------

    def reserve_seqs(self, channel: str, count: int) -> int:
        """Reserve ``count`` consecutive sequence numbers on ``channel``; returns the first."""
        with self._tx():
            row = self._db.execute(
                "INSERT INTO outbound_seq VALUES (?, ?) "
                "ON CONFLICT(channel) DO UPDATE SET seq = seq + ? RETURNING seq",
                (channel, count, count),
            ).fetchone()
        return int(row[0]) - count + 1
