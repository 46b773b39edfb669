"""The audit log on disk: entries, the stored Merkle tree and signed checkpoints in one SQLite file.

Owns: ``AuditStore`` (append with deduplication, lookups, proofs and roots for any size from
the stored perfect-subtree hashes, checkpoints), ``SqliteSubtreeStore`` (the ``SubtreeStore``
of ``tfshare.audit.tree`` over the ``nodes`` table), ``verify_store`` (recompute everything
from the entry bytes and check it against the stored tree and the signed checkpoints) and its
refusals, ``AuditTampered``, and ``AuditStoreUnavailable``: the disk, a lock or the
permissions failed (SQLite's error sorted by its primary code in ``tfshare.sqlfail``), which
says nothing about the file's content and is never reported as tampering.

Layout (one file, opened by ``tfshare.sqlite_db`` like the state database: created 0600, WAL,
``synchronous=FULL``, its schema brought to ``SCHEMA_VERSION`` by the ordered ``MIGRATIONS``,
a log newer than the code refused):

- ``meta``: ``kind`` (always ``tfshare-audit``), ``schema`` (the version, ``sqlite_db``'s)
  and ``leaf_count``. The leaf count is the commit point: entries and nodes at or beyond it
  are not part of the log.
- ``entries``: ``idx`` (0-based, the leaf index), the entry bytes, and lookup columns derived
  from them (type, env_sha256, the sender for receipts, msg_id). The unique key (type,
  env_sha256, receipt sender) is what makes a redelivered message a no-op.
- ``refs``: (idx, position, parent msg_id) for every ref of every entry, for ``referencing``.
- ``nodes``: (level, idx, hash) of every perfect subtree, leaf hashes at level 0.
- ``checkpoints``: (size, signed note, signed_ms).
- ``receipts`` and ``facts``: derived data beside receipt and message entries (what a receipt
  says; a message's recipients and, where the auditor could read it, its handling and
  response class). Not part of the tree: reports and lineage checks read them.

The lookup columns and the nodes are caches of what the entry bytes imply; ``verify_store``
trusts none of them. Every append is one transaction, so a crash leaves the log as it was
before it or after it, never in between.

Never: store a payload, let an entry in twice, or answer from a node at or beyond the leaf
count.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from tfshare import sqlite_db
from tfshare.audit.entry import (
    EntryError,
    LogEntry,
    decode_entry,
    encode_entry,
    entry_leaf_hash,
)
from tfshare.audit.merkle import EMPTY_ROOT, HASH_SIZE, MAX_TREE_SIZE, node_hash
from tfshare.audit.note import (
    Checkpoint,
    NoteCode,
    NoteError,
    NoteVerifier,
    open_checkpoint,
)
from tfshare.audit.tree import CompactRange, MerkleLog
from tfshare.encoding import MAX_UINT
from tfshare.errors import InputError, TrustError
from tfshare.sqlfail import Failure, classify
from tfshare.sqlite_db import DatabaseFile, Migration, StorageError, failure_text, transaction

KIND: Final = "tfshare-audit"

# Schema 1, executed one statement at a time inside its step's transaction. Never edited: a
# change of the layout is a new step in ``MIGRATIONS``.
_SCHEMA_1: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS entries (
        idx INTEGER PRIMARY KEY, entry BLOB NOT NULL, entry_type TEXT NOT NULL,
        env_sha256 BLOB NOT NULL, dedupe_sender TEXT NOT NULL, msg_id BLOB NOT NULL,
        UNIQUE (entry_type, env_sha256, dedupe_sender)
    )""",
    "CREATE INDEX IF NOT EXISTS entries_msg_id ON entries (msg_id)",
    """CREATE TABLE IF NOT EXISTS refs (
        idx INTEGER NOT NULL, pos INTEGER NOT NULL, parent BLOB NOT NULL,
        PRIMARY KEY (idx, pos)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS refs_parent ON refs (parent)",
    """CREATE TABLE IF NOT EXISTS nodes (
        level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        size INTEGER PRIMARY KEY, note BLOB NOT NULL, signed_ms INTEGER NOT NULL
    )""",
    # What each receipt says (from inside the encrypted receipt, which the auditor opened):
    # derived data beside the log for reports, not part of the tree. The entry at ``idx``
    # proves the receipt exists; its envelope hash binds these words to it.
    """CREATE TABLE IF NOT EXISTS receipts (
        idx INTEGER PRIMARY KEY, receiver TEXT NOT NULL, msg_id BLOB NOT NULL,
        env_hash BLOB NOT NULL, outcome TEXT NOT NULL, code TEXT, received_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS receipts_msg_id ON receipts (msg_id)",
    # What the auditor learnt of a message beyond its entry: the recipients (from the
    # header's key ids, no decryption) and, where the auditor is itself a recipient, the
    # schema, handling and response class from the body. Derived data, not part of the tree;
    # it makes lineage checks, overdue requests and reports answerable. Never a payload.
    """CREATE TABLE IF NOT EXISTS facts (
        idx INTEGER PRIMARY KEY, msg_id BLOB NOT NULL, recipients TEXT NOT NULL,
        schema TEXT, no_forward INTEGER, handling_code TEXT, response_class TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS facts_msg_id ON facts (msg_id)",
    # KIND, and an empty log:
    "INSERT OR IGNORE INTO meta (key, value) VALUES ('kind', 'tfshare-audit'), ('leaf_count', '0')",
)

# The layout, step by step, oldest first; a log is brought from its version to the last.
MIGRATIONS: Final = (Migration(1, "the first tables", _SCHEMA_1),)
SCHEMA_VERSION: Final = MIGRATIONS[-1].version

AUDIT_LOG: Final = DatabaseFile(
    name="the audit log",
    location="where the audit log is",
    files="the audit log, its -wal/-shm files and their directory",
    damaged_hint="keep the file as evidence, compare it with the published checkpoints or a "
    "member's copy, and restore a verified backup",
)


@dataclass(frozen=True)
class ReceiptWords:
    """What a receipt says: who received which message, when, and with what outcome."""

    receiver: str
    msg_id: bytes
    env_hash: bytes
    outcome: str  # "accepted" or "rejected"
    code: str | None
    received_ms: int


@dataclass(frozen=True)
class MessageFacts:
    """What the auditor knows of a message beyond its log entry. ``recipients`` comes from
    the header (every auditor knows it); the rest only where the auditor could open the
    message (it is a recipient), else None."""

    recipients: tuple[str, ...]
    schema: str | None = None
    no_forward: bool | None = None
    handling_code: str | None = None
    response_class: str | None = None

    @property
    def read(self) -> bool:
        """Whether the auditor read the body (so handling and response class are known)."""
        return self.schema is not None


class AuditStoreUnavailable(StorageError):
    """The audit log could not be read or written for a reason outside the file's content:
    the disk is full or failing (a quota, an I/O error), another process holds a lock, the
    permissions. Whatever the failing transaction wrote was rolled back. ``failure`` says
    which (``tfshare.sqlfail``); ``transient`` failures are worth retrying as they are. The
    message and hint are ``tfshare.sqlite_db``'s, worded as for the state database.

    Never tampering: that is only what verification finds (``AuditTampered``)."""

    failure: Failure

    def __init__(self, message: str, *, failure: Failure, hint: str) -> None:
        super().__init__(message, hint=hint, failure=failure)


def _unavailable(action: str, path: Path | str, exc: sqlite3.Error) -> AuditStoreUnavailable | None:
    """The ``AuditStoreUnavailable`` for an SQLite failure of the environment, classified by
    its primary code in ``tfshare.sqlfail`` (so SQLITE_IOERR_WRITE is an I/O error like
    SQLITE_IOERR), or None for a failure that speaks about the file (damaged, or not what
    our statements expect): the caller reports that as tampering."""
    failure = classify(exc)
    if failure is None or failure is Failure.DAMAGED:
        return None
    message, hint = failure_text(AUDIT_LOG, failure, action, path, str(exc))
    return AuditStoreUnavailable(message, failure=failure, hint=hint)


class TamperCode(StrEnum):
    """Why a stored audit log was refused. Stable: callers and tests match on them."""

    E_LOG_TAMPERED = "E_LOG_TAMPERED"  # entries, nodes or the size do not fit together
    E_CHECKPOINT_BAD_SIG = "E_CHECKPOINT_BAD_SIG"  # a stored checkpoint does not verify
    E_CHECKPOINT_INCONSISTENT = "E_CHECKPOINT_INCONSISTENT"  # signed checkpoints disagree


_HINTS: Final = {
    TamperCode.E_LOG_TAMPERED: (
        "the audit log file was altered or damaged: do not sign or publish from it; keep the "
        "file as evidence, compare it with the published checkpoints or a member's copy, and "
        "restore a verified backup"
    ),
    TamperCode.E_CHECKPOINT_BAD_SIG: (
        "a stored checkpoint is not validly signed by the log's keys: check that the verifier "
        "keys are the task force's current ones; a forged checkpoint is evidence, keep it"
    ),
    TamperCode.E_CHECKPOINT_INCONSISTENT: (
        "signed checkpoints that cannot all describe this log: a split view or a rewrite "
        "after signing; keep the file and the notes as evidence and report it to the task force"
    ),
}


class AuditTampered(TrustError):
    """The stored log (or a checkpoint) does not check out; the message names where.

    ``index`` is the first bad entry index, ``checkpoint_size`` the bad checkpoint's tree
    size and ``node`` a bad stored node as (level, index), whichever applies.
    """

    def __init__(
        self,
        code: TamperCode,
        message: str,
        *,
        index: int | None = None,
        checkpoint_size: int | None = None,
        node: tuple[int, int] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint or _HINTS[code], code=code.value)
        self.tamper_code = code
        self.index = index
        self.checkpoint_size = checkpoint_size
        self.node = node


def _tampered(
    message: str,
    *,
    index: int | None = None,
    checkpoint_size: int | None = None,
    node: tuple[int, int] | None = None,
) -> AuditTampered:
    return AuditTampered(
        TamperCode.E_LOG_TAMPERED,
        message,
        index=index,
        checkpoint_size=checkpoint_size,
        node=node,
    )


# One transaction, BEGIN IMMEDIATE ... COMMIT (or join the one already open); a failed
# COMMIT is rolled back too (``tfshare.sqlite_db``).
_tx = transaction


def _blob(value: object) -> bytes | None:
    """A BLOB column's value, or None if a hand edit left something else there."""
    return value if type(value) is bytes else None


def _count(value: object) -> int | None:
    """The leaf count as stored (decimal text), or None if it is not one."""
    if type(value) is not str or not value.isdecimal() or len(value) > 20:
        return None
    count = int(value)
    return count if count <= MAX_TREE_SIZE else None


def _read_leaf_count(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'leaf_count'").fetchone()
    count = None if row is None else _count(row[0])
    if count is None:
        raise _tampered("the log's leaf count (meta 'leaf_count') is missing or not a number")
    return count


class SqliteSubtreeStore:
    """The ``SubtreeStore`` of ``tfshare.audit.tree`` over the ``nodes`` and ``meta`` tables.

    ``put`` only collects nodes; ``set_leaf_count`` writes them with one ``executemany`` and
    the new count, in the caller's transaction if one is open (``AuditStore.append``) or in
    its own. ``discard`` drops what was collected when that transaction is rolled back.
    """

    __slots__ = ("_db", "_pending")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._pending: dict[tuple[int, int], bytes] = {}

    def get(self, level: int, index: int) -> bytes:
        node = self._pending.get((level, index))
        if node is not None:
            return node
        row = self._db.execute(
            "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, index)
        ).fetchone()
        node = None if row is None else _blob(row[0])
        if node is None or len(node) != HASH_SIZE:
            raise KeyError((level, index))
        return node

    def put(self, level: int, index: int, node: bytes) -> None:
        if len(node) != HASH_SIZE or level < 0 or index < 0:
            raise ValueError(f"cannot store node ({level}, {index}) of {len(node)} bytes")
        self._pending[(level, index)] = node

    def leaf_count(self) -> int:
        return _read_leaf_count(self._db)

    def set_leaf_count(self, count: int) -> None:
        if not 0 <= count <= MAX_TREE_SIZE:
            raise ValueError(f"leaf count {count} is outside 0..2^64-1")
        with _tx(self._db):
            self._db.executemany(
                "INSERT OR REPLACE INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                [(level, index, node) for (level, index), node in self._pending.items()],
            )
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('leaf_count', ?)", (str(count),)
            )
        self._pending.clear()

    def discard(self) -> None:
        """Forget nodes put since the last ``set_leaf_count`` (their transaction failed)."""
        self._pending.clear()


class AuditStore:
    """The audit log of one task force in one SQLite file (see the module docstring)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._merkle: MerkleLog | None = None
        with self._guard("open"):
            # Created 0600: who sent what to whom is case metadata, even without payloads.
            # Three indexes keyed by random hashes: a larger page cache keeps appends to a
            # large log from going to disk for every index page they touch.
            self._db = sqlite_db.open_database(
                self.path, AUDIT_LOG, pragmas=("cache_size=-65536",), kind=AuditStoreUnavailable
            )
            try:
                self._check_kind()
                self.upgraded_from, _ = sqlite_db.migrate(
                    self._db, AUDIT_LOG, self.path, MIGRATIONS
                )
            except BaseException:
                self._db.close()
                raise
        self._nodes = SqliteSubtreeStore(self._db)

    def _check_kind(self) -> None:
        """Never add audit tables to some other database (a state.db given by mistake)."""
        tables = {
            row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        kind = None
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
            kind = None if row is None else row[0]
        if tables and kind != KIND:
            raise InputError(
                f"{str(self.path)!r} is an SQLite file but not a tfshare audit log",
                hint="give the path of the audit log (or of a new file to create)",
            )

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """SQLite failures of the environment (full or failing disk, lock, permissions)
        become ``AuditStoreUnavailable``; a damaged file, and a node the tree needs but cannot
        find, become ``AuditTampered``: never a traceback."""
        try:
            yield
        except sqlite3.IntegrityError:
            # The only constraints an append can hit are on rows at or past the leaf count,
            # which no transaction of ours leaves behind.
            raise _tampered(
                f"cannot {action} the audit log {str(self.path)!r}: it holds rows beyond its "
                "committed size (edited)"
            ) from None
        except sqlite3.DatabaseError as exc:
            unavailable = _unavailable(action, self.path, exc)
            if unavailable is not None:
                raise unavailable from None
            raise _tampered(
                f"cannot {action} the audit log {str(self.path)!r}: the file is damaged or "
                f"not an audit log ({exc})"
            ) from None
        except KeyError as exc:
            raise _tampered(
                f"cannot {action} the audit log {str(self.path)!r}: stored tree node "
                f"(level, index) {exc.args[0]} is missing or damaged",
                node=exc.args[0] if isinstance(exc.args[0], tuple) else None,
            ) from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log(self) -> MerkleLog:
        """The tree at the committed size (rebuilt if another process appended meanwhile)."""
        count = self._nodes.leaf_count()
        if self._merkle is None or self._merkle.size != count:
            self._merkle = MerkleLog(self._nodes)
        return self._merkle

    # --- writing ---------------------------------------------------------------------------

    def append(
        self,
        entries: Sequence[LogEntry],
        receipts: Sequence[ReceiptWords | None] = (),
        facts: Sequence[MessageFacts | None] = (),
    ) -> list[int | None]:
        """Append ``entries`` in one transaction; each one's index, or None if already logged.

        An entry is already logged if one with the same type and env_sha256 (and, for
        receipts, the same sender) is: a redelivered envelope, or one seen again after a
        restart, is not appended twice, whatever its ``observed_ms``. Every entry is checked
        before anything is written; on any failure nothing is appended. ``receipts`` (one per
        entry, or empty) are kept beside receipt entries, and ``facts`` (likewise) beside
        message entries, in the same transaction.
        """
        encoded = [(entry, encode_entry(entry)) for entry in entries]
        if not encoded:
            return []
        out: list[int | None] = []
        with self._guard("append to"):
            try:
                with _tx(self._db):
                    log = self._log()  # inside the transaction: the latest committed size
                    start = log.size
                    leaf_hashes: list[bytes] = []
                    ref_rows: list[tuple[int, int, bytes]] = []
                    for entry, data in encoded:
                        index = start + len(leaf_hashes)
                        dedupe_sender = entry.sender if entry.entry_type == "receipt" else ""
                        cursor = self._db.execute(
                            "INSERT INTO entries "
                            "(idx, entry, entry_type, env_sha256, dedupe_sender, msg_id) "
                            "VALUES (?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (entry_type, env_sha256, dedupe_sender) DO NOTHING",
                            (index, data, entry.entry_type, entry.env_sha256, dedupe_sender,
                             entry.msg_id),
                        )  # fmt: skip
                        if cursor.rowcount == 0:
                            out.append(None)
                            continue
                        ref_rows.extend((index, pos, ref[1]) for pos, ref in enumerate(entry.refs))
                        words = receipts[len(out)] if len(receipts) > len(out) else None
                        known = facts[len(out)] if len(facts) > len(out) else None
                        if known is not None:
                            self._db.execute(
                                "INSERT INTO facts VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (index, entry.msg_id, ",".join(known.recipients), known.schema,
                                 None if known.no_forward is None else int(known.no_forward),
                                 known.handling_code, known.response_class),
                            )  # fmt: skip
                        if words is not None:
                            self._db.execute(
                                "INSERT INTO receipts VALUES (?, ?, ?, ?, ?, ?, ?)",
                                (index, words.receiver, words.msg_id, words.env_hash,
                                 words.outcome, words.code, words.received_ms),
                            )  # fmt: skip
                        leaf_hashes.append(entry_leaf_hash(data))
                        out.append(index)
                    self._db.executemany(
                        "INSERT INTO refs (idx, pos, parent) VALUES (?, ?, ?)", ref_rows
                    )
                    if leaf_hashes:
                        log.extend_leaf_hashes(leaf_hashes)
            except BaseException:
                # The transaction was rolled back: forget the uncommitted nodes and edge.
                self._nodes.discard()
                self._merkle = None
                raise
        return out

    def add_checkpoint(self, size: int, note: bytes, signed_ms: int) -> None:
        """Keep a signed checkpoint of this log at ``size``.

        The note's body must be a checkpoint for exactly ``size`` whose root is this log's
        root at that size (the signature is the signer's business; ``verify_store`` checks
        it). Storing the identical note again is a no-op; another note for a stored size is
        refused.
        """
        if type(signed_ms) is not int or not 0 <= signed_ms <= MAX_UINT:
            raise InputError("signed_ms is not a time in ms", hint="pass the signing time")
        checkpoint = _unverified_checkpoint(note)
        with self._guard("add a checkpoint to"):
            log = self._log()
            if checkpoint.size != size or not 0 <= size <= log.size:
                raise AuditTampered(
                    TamperCode.E_CHECKPOINT_INCONSISTENT,
                    f"checkpoint for tree size {checkpoint.size} cannot be stored as size "
                    f"{size} of a log with {log.size} entries",
                    checkpoint_size=checkpoint.size,
                )
            if checkpoint.root_hash != log.root_at(size):
                raise AuditTampered(
                    TamperCode.E_CHECKPOINT_INCONSISTENT,
                    f"checkpoint at size {size} has a root that is not this log's root at "
                    f"size {size}",
                    checkpoint_size=size,
                )
            with _tx(self._db):
                row = self._db.execute(
                    "SELECT note FROM checkpoints WHERE size = ?", (size,)
                ).fetchone()
                if row is not None:
                    if row[0] == note:
                        return
                    raise InputError(
                        f"another checkpoint note for size {size} is already stored",
                        hint="a checkpoint is stored once per size; sign the next size instead",
                    )
                self._db.execute(
                    "INSERT INTO checkpoints (size, note, signed_ms) VALUES (?, ?, ?)",
                    (size, note, signed_ms),
                )

    # --- reading ---------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of committed entries."""
        with self._guard("read"):
            return self._nodes.leaf_count()

    def root(self) -> bytes:
        """The root hash at the current size."""
        with self._guard("read"):
            return self._log().root()

    def root_at(self, size: int) -> bytes:
        """The root hash the log had at ``size`` entries (0 <= size <= current size)."""
        with self._guard("read"):
            return self._log().root_at(size)

    def entry_bytes(self, index: int) -> bytes:
        """The stored bytes of entry ``index``, checked against its stored leaf hash."""
        with self._guard("read"):
            log = self._log()
            log.leaf_hash(index)  # ProofError E_PROOF_INDEX if not below the size
            row = self._db.execute("SELECT entry FROM entries WHERE idx = ?", (index,)).fetchone()
            data = None if row is None else _blob(row[0])
            if data is None:
                raise _tampered(f"entry {index} is missing from the audit log", index=index)
            if entry_leaf_hash(data) != log.leaf_hash(index):
                raise _tampered(
                    f"entry {index} does not match its stored leaf hash (changed)", index=index
                )
            return data

    def entry(self, index: int) -> LogEntry:
        """Entry ``index``, decoded."""
        return self._decode(index, self.entry_bytes(index))

    def find(self, msg_id: bytes) -> list[tuple[int, LogEntry]]:
        """Every entry whose own msg_id is ``msg_id``, in log order. Entries that point at
        it (its receipts, reshares, retractions...) are ``referencing(msg_id)``."""
        return self._lookup(
            "SELECT idx FROM entries WHERE msg_id = ? AND idx < ? ORDER BY idx",
            msg_id,
            lambda entry: entry.msg_id == msg_id,
        )

    def referencing(self, msg_id: bytes) -> list[tuple[int, LogEntry]]:
        """Every entry with a ref to ``msg_id``: its receipts, reshares, amendments, merges,
        escalations and retractions, in log order."""
        return self._lookup(
            "SELECT DISTINCT idx FROM refs WHERE parent = ? AND idx < ? ORDER BY idx",
            msg_id,
            lambda entry: any(ref[1] == msg_id for ref in entry.refs),
        )

    def _lookup(
        self, query: str, msg_id: bytes, keep: Callable[[LogEntry], bool]
    ) -> list[tuple[int, LogEntry]]:
        with self._guard("read"):
            rows = self._db.execute(query, (msg_id, self._nodes.leaf_count())).fetchall()
        found = []
        for (index,) in rows:
            entry = self.entry(index)
            # The lookup columns are a cache: an edited one must not make us report an
            # entry that says something else.
            if keep(entry):
                found.append((index, entry))
        return found

    def _decode(self, index: int, data: bytes) -> LogEntry:
        try:
            return decode_entry(data)
        except EntryError as exc:
            raise _tampered(f"entry {index} does not decode ({exc.message})", index=index) from None

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The RFC 6962 audit path of entry ``index`` in the tree at ``size`` (default: now)."""
        with self._guard("read"):
            return self._log().inclusion_proof(index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The RFC 6962 consistency proof from ``old_size`` to ``new_size`` (default: now)."""
        with self._guard("read"):
            return self._log().consistency_proof(old_size, new_size)

    def receipts_for(self, msg_id: bytes) -> list[tuple[int, ReceiptWords]]:
        """Receipts for a message: (log index of the receipt, what it says)."""
        with self._guard("read"):
            rows = self._db.execute(
                "SELECT idx, receiver, msg_id, env_hash, outcome, code, received_ms "
                "FROM receipts WHERE msg_id = ? ORDER BY idx",
                (msg_id,),
            ).fetchall()
        return [(int(r[0]), _words(r)) for r in rows]

    def all_receipts(self) -> list[tuple[int, ReceiptWords]]:
        with self._guard("read"):
            rows = self._db.execute(
                "SELECT idx, receiver, msg_id, env_hash, outcome, code, received_ms "
                "FROM receipts ORDER BY idx"
            ).fetchall()
        return [(int(r[0]), _words(r)) for r in rows]

    def facts_of(self, index: int) -> MessageFacts | None:
        """What the auditor recorded beside message entry ``index`` (None: nothing)."""
        with self._guard("read"):
            row = self._db.execute(
                "SELECT recipients, schema, no_forward, handling_code, response_class "
                "FROM facts WHERE idx = ?",
                (index,),
            ).fetchone()
        return None if row is None else _facts(row)

    def all_facts(self) -> list[tuple[int, MessageFacts]]:
        """(entry index, facts) of every message with facts, in log order."""
        with self._guard("read"):
            rows = self._db.execute(
                "SELECT idx, recipients, schema, no_forward, handling_code, response_class "
                "FROM facts WHERE idx < ? ORDER BY idx",
                (self._nodes.leaf_count(),),
            ).fetchall()
        return [(int(r[0]), _facts(r[1:])) for r in rows]

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, LogEntry]]:
        """(index, entry) for entries ``start`` to ``stop`` (default: the size), decoded."""
        end = self.size if stop is None else min(stop, self.size)
        with self._guard("read"):
            rows = self._db.execute(
                "SELECT idx, entry FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end),
            ).fetchall()
        for index, data in rows:
            yield int(index), self._decode(int(index), bytes(data))

    def checkpoints(self) -> list[tuple[int, bytes]]:
        """Every stored checkpoint as (tree size, signed note), smallest size first."""
        with self._guard("read"):
            rows = self._db.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
        return [_checkpoint_row(row) for row in rows]

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        """The stored checkpoint of the largest size, as (size, signed note), or None."""
        with self._guard("read"):
            row = self._db.execute(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        return None if row is None else _checkpoint_row(row)


def _checkpoint_row(row: tuple[object, object]) -> tuple[int, bytes]:
    size, note = row
    if type(size) is not int or type(note) is not bytes:
        raise _tampered(f"the checkpoint row for size {size!r} was edited (not a size and a note)")
    return size, note


def _words(row: tuple[Any, ...]) -> ReceiptWords:
    idx, receiver, msg_id, env_hash, outcome, code, received_ms = row
    del idx
    return ReceiptWords(
        str(receiver),
        bytes(msg_id),
        bytes(env_hash),
        str(outcome),
        None if code is None else str(code),
        int(received_ms),
    )


def _facts(row: tuple[Any, ...]) -> MessageFacts:
    recipients, schema, no_forward, handling_code, response_class = row
    return MessageFacts(
        tuple(name for name in str(recipients).split(",") if name),
        None if schema is None else str(schema),
        None if no_forward is None else bool(no_forward),
        None if handling_code is None else str(handling_code),
        None if response_class is None else str(response_class),
    )


def _unverified_checkpoint(note: bytes) -> Checkpoint:
    """The checkpoint body of a signed note, without checking signatures (for bookkeeping:
    which size a note is for). Trust decisions always go through ``open_checkpoint``."""
    if type(note) is not bytes:
        raise NoteError(NoteCode.E_NOTE_MALFORMED, "a signed note is bytes")
    split = note.rfind(b"\n\n")
    if split < 0:
        raise NoteError(NoteCode.E_NOTE_MALFORMED, "note has no blank line before its signatures")
    try:
        text = note[: split + 1].decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError(NoteCode.E_NOTE_MALFORMED, "note is not valid UTF-8") from None
    return Checkpoint.parse(text)


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify_store`` checked, all of it recomputed from the entry bytes."""

    entries: int  # committed entries (the tree size), each decoded and hashed
    root: bytes  # the root recomputed from them
    nodes: int  # stored nodes compared with the recomputed tree
    checkpoints: int  # stored checkpoints whose signature and root checked out
    latest_checkpoint_size: int | None
    signers: tuple[str, ...]  # key names that signed the checkpoints

    @property
    def size(self) -> int:
        """The tree size: the same number as ``entries``."""
        return self.entries


class _Peek:
    """An iterator over query rows with one row of lookahead."""

    __slots__ = ("_next", "_rows")

    def __init__(self, rows: Iterable[tuple[object, ...]]) -> None:
        self._rows = iter(rows)
        self._next = next(self._rows, None)

    def peek(self) -> tuple[object, ...] | None:
        return self._next

    def pop(self) -> tuple[object, ...] | None:
        row, self._next = self._next, next(self._rows, None)
        return row


class _StoredNodes:
    """Reads the stored nodes level by level, in index order, alongside the recomputation:
    one cursor per level, so each stored node is read once and in order."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._levels: dict[int, _Peek] = {}
        self.compared = 0

    def get(self, level: int, index: int) -> bytes | None:
        rows = self._levels.get(level)
        if rows is None:
            rows = self._levels[level] = _Peek(
                self._db.execute(
                    "SELECT idx, hash FROM nodes WHERE level = ? ORDER BY idx", (level,)
                )
            )
        while (row := rows.peek()) is not None and _int(row[0]) < index:
            rows.pop()  # a node no leaf produces (a negative index): never read, not checked
        self.compared += 1
        row = rows.peek()
        if row is None or row[0] != index:
            return None
        return _blob(row[1])


def _int(value: object) -> int:
    return value if type(value) is int else -1


def verify_store(
    path_or_store: Path | str | AuditStore, verifiers: Sequence[NoteVerifier], origin: str
) -> VerifyReport:
    """Recompute the whole log from its entry bytes and check everything stored against it.

    Checks, in order, stopping at the first failure (``AuditTampered``; the message names
    the entry index, node or checkpoint size and what is wrong):

    1. every stored checkpoint is signed by one of ``verifiers`` for ``origin``
       (E_CHECKPOINT_BAD_SIG), is stored under its own size and is not beyond the log's
       size (checked first: a forged checkpoint is reported as forged, not as a mismatch);
    2. entries 0..size-1 are all there, in order, and nothing is stored beyond the size;
    3. each entry's bytes hash to the stored leaf hash (otherwise: changed, reordered,
       inserted, deleted), decode as a ``LogEntry``, and agree with their lookup columns;
    4. every stored node of the tree equals the node recomputed from the leaves;
    5. each checkpoint's root equals the recomputed root at its size. If none does, the log
       was rewritten (E_LOG_TAMPERED); if some do and others do not, the signed checkpoints
       contradict each other or the log was rewritten after one of them
       (E_CHECKPOINT_INCONSISTENT). When every root matches, consecutive checkpoints are
       consistent by construction: they are roots of one recomputed tree.

    The stored nodes are only compared, never used. A file that is not an audit log, or is
    truncated or damaged, is refused as E_LOG_TAMPERED; a missing or locked file is an
    ``InputError``.
    """
    if isinstance(path_or_store, AuditStore):
        return _verify_open(path_or_store._db, verifiers, origin, str(path_or_store.path))
    path = Path(path_or_store)
    if not path.is_file():
        raise InputError(
            f"no audit log at {str(path)!r}", hint="give the path of the audit log file"
        )
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise InputError(
            f"cannot open the audit log {str(path)!r} ({exc})",
            hint="check that the file is readable and its directory writable (SQLite WAL)",
        ) from None
    try:
        return _verify_open(db, verifiers, origin, str(path))
    finally:
        db.close()


def _verify_open(
    db: sqlite3.Connection, verifiers: Sequence[NoteVerifier], origin: str, name: str
) -> VerifyReport:
    verifiers = list(verifiers)
    try:
        # One read transaction: a concurrent appender cannot change what we see midway.
        began = not db.in_transaction
        if began:
            db.execute("BEGIN")
        try:
            return _Verifier(db, verifiers, origin).run()
        finally:
            if began:
                db.rollback()
    except sqlite3.DatabaseError as exc:
        unavailable = _unavailable("read", name, exc)
        if unavailable is not None:
            raise unavailable from None
        raise _tampered(
            f"the audit log {name!r} is damaged, truncated or not an audit log ({exc})"
        ) from None


class _Verifier:
    def __init__(self, db: sqlite3.Connection, verifiers: list[NoteVerifier], origin: str) -> None:
        self.db = db
        self.verifiers = verifiers
        self.origin = origin
        self.checkpoint_roots: dict[int, bytes] = {}

    def run(self) -> VerifyReport:
        db = self.db
        row = db.execute("SELECT value FROM meta WHERE key = 'kind'").fetchone()
        if row is None or row[0] != KIND:
            raise _tampered("the file is not a tfshare audit log (meta 'kind' is missing)")
        size = _read_leaf_count(db)
        checkpoints = self._open_checkpoints(size)
        wanted = {cp_size for cp_size, _ in checkpoints}
        roots = {0: EMPTY_ROOT} if 0 in wanted else {}
        edge, nodes = self._recompute(size, wanted, roots)
        self._check_checkpoint_roots(checkpoints, roots)
        signers: list[str] = []
        for _, names in checkpoints:
            signers.extend(name for name in names if name not in signers)
        return VerifyReport(
            entries=size,
            root=edge.root(),
            nodes=nodes,
            checkpoints=len(checkpoints),
            latest_checkpoint_size=checkpoints[-1][0] if checkpoints else None,
            signers=tuple(signers),
        )

    # 1. signatures (before the long scan: a forged checkpoint is reported as such) ---------

    def _open_checkpoints(self, size: int) -> list[tuple[int, tuple[str, ...]]]:
        opened: list[tuple[int, tuple[str, ...]]] = []
        rows = self.db.execute("SELECT size, note FROM checkpoints ORDER BY size")
        for cp_size, note in rows:
            if type(cp_size) is not int or cp_size < 0:
                raise _tampered("a stored checkpoint has no valid tree size")
            data = _blob(note)
            if data is None:
                raise AuditTampered(
                    TamperCode.E_CHECKPOINT_BAD_SIG,
                    f"checkpoint at size {cp_size} is not stored as a signed note",
                    checkpoint_size=cp_size,
                )
            try:
                checkpoint, names = open_checkpoint(data, self.verifiers, origin=self.origin)
            except NoteError as exc:
                raise AuditTampered(
                    TamperCode.E_CHECKPOINT_BAD_SIG,
                    f"checkpoint at size {cp_size} does not verify: {exc.code}: {exc.message}",
                    checkpoint_size=cp_size,
                ) from None
            if checkpoint.size != cp_size:
                raise _tampered(
                    f"the checkpoint stored for size {cp_size} is signed for size "
                    f"{checkpoint.size} (moved)",
                    checkpoint_size=cp_size,
                )
            if cp_size > size:
                raise _tampered(
                    f"checkpoint at size {cp_size} is beyond the log's {size} entries: entries "
                    f"{size}..{cp_size - 1} were removed (the log was truncated)",
                    index=size,
                    checkpoint_size=cp_size,
                )
            self.checkpoint_roots[cp_size] = checkpoint.root_hash
            opened.append((cp_size, names))
        return opened

    # 2-4. entries, leaves and nodes --------------------------------------------------------

    def _recompute(
        self, size: int, wanted: set[int], roots: dict[int, bytes]
    ) -> tuple[CompactRange, int]:
        db = self.db
        stored = _StoredNodes(db)
        edge = CompactRange()
        entries = db.execute("SELECT idx, entry, entry_type, env_sha256, dedupe_sender, msg_id "
                             "FROM entries ORDER BY idx")  # fmt: skip
        refs = _Peek(db.execute("SELECT idx, pos, parent FROM refs ORDER BY idx, pos"))
        expected = 0
        for row in entries:
            index = row[0]
            if type(index) is not int:
                raise _tampered("an entry row has no integer index")
            if index < expected:
                raise _tampered(f"entry row {index} is not part of the log (inserted)", index=index)
            if index > expected:
                if expected >= size:
                    break  # reported below as beyond the size
                raise _tampered(
                    f"entry {expected} is missing (deleted): the rows jump from "
                    f"{expected - 1} to {index}",
                    index=expected,
                )
            if index >= size:
                raise _tampered(
                    f"entry {index} is beyond the log's committed size {size} (inserted)",
                    index=index,
                )
            data = _blob(row[1])
            if data is None:
                raise _tampered(f"entry {index} is not stored as bytes (changed)", index=index)
            leaf = entry_leaf_hash(data)
            completed = edge.append(leaf)
            # completed[0] is the leaf itself; the rest are the parents it completed.
            stored_leaf = stored.get(0, index)
            if stored_leaf != leaf:
                raise self._leaf_mismatch(index, leaf, stored_leaf, size)
            for level, node_index, node in completed[1:]:
                if stored.get(level, node_index) != node:
                    raise _tampered(
                        f"stored tree node (level {level}, index {node_index}) is missing or "
                        "does not match the entries below it (changed)",
                        node=(level, node_index),
                    )
            entry = self._decode(index, data)
            self._check_columns(index, entry, row, refs)
            if edge.size in wanted:
                roots[edge.size] = edge.root()
            expected += 1
        if expected < size:
            raise _tampered(
                f"entries {expected}..{size - 1} are missing (deleted): the log's size is "
                f"{size} but the rows end at {expected}",
                index=expected,
            )
        extra = db.execute("SELECT min(idx) FROM entries WHERE idx >= ?", (size,)).fetchone()
        if extra is not None and extra[0] is not None:
            raise _tampered(
                f"entry {extra[0]} is beyond the log's committed size {size} (inserted)",
                index=_int(extra[0]),
            )
        leftover = refs.peek()
        if leftover is not None and _int(leftover[0]) < size:
            raise _tampered(
                f"a ref row names entry {leftover[0]} but that entry has no such ref (inserted)",
                index=_int(leftover[0]),
            )
        return edge, stored.compared

    def _leaf_mismatch(
        self, index: int, leaf: bytes, stored_leaf: bytes | None, size: int
    ) -> AuditTampered:
        """Say what happened at the first entry that does not match its stored leaf hash."""
        if stored_leaf is None:
            return _tampered(
                f"the stored leaf hash of entry {index} is missing or damaged (node deleted)",
                index=index,
                node=(0, index),
            )
        row = self.db.execute(
            "SELECT idx FROM nodes WHERE level = 0 AND hash = ? AND idx < ? AND idx != ? "
            "ORDER BY idx LIMIT 1",
            (leaf, size, index),
        ).fetchone()
        home = None if row is None else _int(row[0])
        following = self._leaf_of_row(index + 1)
        if home is None:
            if self._parent_vouches_for(index, leaf):
                return _tampered(
                    f"the stored leaf hash of entry {index} was changed: the entry still fits "
                    "the stored node above it",
                    index=index,
                    node=(0, index),
                )
            if following == stored_leaf:
                return _tampered(
                    f"an entry was inserted at index {index}: the entry that was there is now "
                    "one further (the rows after it moved up)",
                    index=index,
                )
            return _tampered(
                f"entry {index} was changed: its bytes no longer hash to its stored leaf hash"
                + ("" if self._decodes(index) else ", and they do not decode as an entry"),
                index=index,
            )
        if self._leaf_of_row(home) == stored_leaf:
            return _tampered(f"entries {index} and {home} were swapped (reordered)", index=index)
        if home == index + 1:
            return _tampered(
                f"entry {index} was deleted: the entry at index {index} is the one that "
                f"belongs at {home} (the rows after it moved down)",
                index=index,
            )
        return _tampered(
            f"entries were reordered: index {index} holds the entry that belongs at {home}",
            index=index,
        )

    def _parent_vouches_for(self, index: int, leaf: bytes) -> bool:
        """True if the stored parent of leaf ``index`` was computed from ``leaf`` (so the
        stored leaf hash, not the entry, is what changed)."""
        sibling = self.db.execute(
            "SELECT hash FROM nodes WHERE level = 0 AND idx = ?", (index ^ 1,)
        ).fetchone()
        parent = self.db.execute(
            "SELECT hash FROM nodes WHERE level = 1 AND idx = ?", (index >> 1,)
        ).fetchone()
        if sibling is None or parent is None:
            return False
        other = _blob(sibling[0])
        if other is None or len(other) != HASH_SIZE:
            return False
        pair = (other, leaf) if index & 1 else (leaf, other)
        return _blob(parent[0]) == node_hash(*pair)

    def _decodes(self, index: int) -> bool:
        row = self.db.execute("SELECT entry FROM entries WHERE idx = ?", (index,)).fetchone()
        data = None if row is None else _blob(row[0])
        try:
            return data is not None and decode_entry(data) is not None
        except EntryError:
            return False

    def _leaf_of_row(self, index: int) -> bytes | None:
        row = self.db.execute("SELECT entry FROM entries WHERE idx = ?", (index,)).fetchone()
        data = None if row is None else _blob(row[0])
        return None if data is None else entry_leaf_hash(data)

    @staticmethod
    def _decode(index: int, data: bytes) -> LogEntry:
        try:
            return decode_entry(data)
        except EntryError as exc:
            raise _tampered(
                f"entry {index} does not decode ({exc.message}): it was stored so, or the "
                "file was edited together with its tree",
                index=index,
            ) from None

    @staticmethod
    def _check_columns(index: int, entry: LogEntry, row: tuple[object, ...], refs: _Peek) -> None:
        dedupe_sender = entry.sender if entry.entry_type == "receipt" else ""
        columns = (entry.entry_type, entry.env_sha256, dedupe_sender, entry.msg_id)
        if tuple(row[2:6]) != columns:
            raise _tampered(
                f"the lookup columns of entry {index} disagree with its bytes (edited)",
                index=index,
            )
        for pos, ref in enumerate(entry.refs):
            stored_ref = refs.pop()
            if stored_ref != (index, pos, ref[1]):
                raise _tampered(
                    f"the ref rows of entry {index} disagree with its bytes (edited)",
                    index=index,
                )
        following = refs.peek()
        if following is not None and _int(following[0]) <= index:
            raise _tampered(
                f"the ref rows of entry {index} disagree with its bytes (inserted)",
                index=index,
            )

    def _check_checkpoint_roots(
        self, checkpoints: list[tuple[int, tuple[str, ...]]], roots: dict[int, bytes]
    ) -> None:
        bad = [size for size, _ in checkpoints if self.checkpoint_roots[size] != roots[size]]
        if not bad:
            return
        good = [size for size, _ in checkpoints if size not in bad]
        first = bad[0]
        if not good:
            raise _tampered(
                f"the log does not match the signed checkpoint at size {first}: an entry below "
                f"index {first} was changed, removed or reordered after it was signed (and the "
                "stored tree rewritten to match)",
                checkpoint_size=first,
            )
        # The closest matching checkpoint on either side names the range that disagrees.
        before = [size for size in good if size < first]
        other = before[-1] if before else good[0]
        raise AuditTampered(
            TamperCode.E_CHECKPOINT_INCONSISTENT,
            f"signed checkpoint at size {first} is not consistent with the signed checkpoint "
            f"at size {other}: they cannot both be roots of this log (a split view, or the "
            f"entries between them were rewritten after signing)",
            checkpoint_size=first,
        )
