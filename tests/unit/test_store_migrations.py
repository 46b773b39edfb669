"""Stores that can be upgraded (issue 12, item 8): a state database and an audit log made by
the previous tfshare (the exact DDL of commit c9cc8ce, frozen below) are opened by this one,
upgraded in place with their data kept and usable; a newer database is refused and left as it
is; a step that fails leaves the database at its previous version. Real SQLite files."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Final

import pytest
from tfkit import TaskForce

from tfshare import roster as R
from tfshare import store as store_module
from tfshare.audit.entry import LogEntry, encode_entry, entry_leaf_hash
from tfshare.audit.logstore import AuditStore, verify_store
from tfshare.audit.merkle import node_hash
from tfshare.audit.note import Checkpoint, NoteSigner, checkpoint_origin, sign_checkpoint
from tfshare.encoding import encode
from tfshare.errors import ExitCode
from tfshare.protocol import Delivered, Receiver
from tfshare.replay import MemoryReplayStore, ReplayEntry, ReplayStore
from tfshare.seal import Duplicate, ReceivePolicy
from tfshare.sqlite_db import SchemaError
from tfshare.store import SCHEMA_VERSION, StateStore

# --- the previous schemas, verbatim (git show c9cc8ce:tfshare/store.py, ...logstore.py) -------

STATE_DDL_C9CC8CE: Final = """
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

AUDIT_DDL_C9CC8CE: Final = (
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
    """CREATE TABLE IF NOT EXISTS receipts (
        idx INTEGER PRIMARY KEY, receiver TEXT NOT NULL, msg_id BLOB NOT NULL,
        env_hash BLOB NOT NULL, outcome TEXT NOT NULL, code TEXT, received_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS receipts_msg_id ON receipts (msg_id)",
    """CREATE TABLE IF NOT EXISTS facts (
        idx INTEGER PRIMARY KEY, msg_id BLOB NOT NULL, recipients TEXT NOT NULL,
        schema TEXT, no_forward INTEGER, handling_code TEXT, response_class TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS facts_msg_id ON facts (msg_id)",
)

SUBJECT: Final = "tf.nl-north.ch.alerts.police"
RECEIVED_MS: Final = 1_795_000_000_500


def _receiver(tf: TaskForce, replay: ReplayStore) -> Receiver:
    return Receiver(
        identity=tf.ids["ngo"],
        roster=tf.trusted(),
        replay=replay,
        schemas=tf.schemas,
        clock=lambda: tf.now_ms,
        policy=ReceivePolicy(),
    )


def _columns(path: Path, table: str) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    finally:
        db.close()


def _meta(path: Path) -> dict[str, str]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()


class OldState:
    """A state database as tfshare c9cc8ce made it, holding one delivered message, one
    quarantined envelope, one queued envelope, one sent message, the roster state and an
    outbound sequence number."""

    def __init__(self, tf: TaskForce, path: Path) -> None:
        self.sealed = tf.seal("police", rng_seed="old-state")
        memory = MemoryReplayStore()
        outcome = _receiver(tf, memory).receive(self.sealed.data, SUBJECT)
        assert isinstance(outcome, Delivered)
        [self.entry] = memory.entries.values()
        _, self.roster_state = R.verify_roster(
            tf.roster_bytes, anchor=tf.anchor, state=None, now_ms=tf.now_ms
        )
        self.junk = b"\x01junk envelope"
        self.queued = tf.seal("police", seq=2, rng_seed="old-queued")
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        try:
            db.execute("PRAGMA journal_mode=WAL")  # as c9cc8ce opened it
            db.executescript(STATE_DDL_C9CC8CE)
            with db:
                self._fill(db, self.entry)
        finally:
            db.close()

    def _fill(self, db: sqlite3.Connection, e: ReplayEntry) -> None:
        db.execute("INSERT INTO meta VALUES ('schema', '1')")
        db.execute(
            "INSERT INTO replay VALUES (?, ?, ?, ?, ?, ?, ?)",
            (e.sender_kid, e.msg_id, e.env_hash, e.ts_ms, e.sender, e.channel, e.seq),
        )
        db.execute("INSERT INTO sender_seq VALUES (?, ?, ?)", (e.sender, e.channel, e.seq))
        db.execute(
            "INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.msg_id, e.sender_kid, e.env_hash, e.sender, e.channel, e.schema, e.ts_ms,
             RECEIVED_MS, e.envelope),
        )  # fmt: skip
        db.execute(
            "INSERT INTO quarantine VALUES (?, 'E_MALFORMED', 'envelope: malformed', NULL, "
            "NULL, ?, ?, ?)",
            (hashlib.sha256(self.junk).digest(), SUBJECT, RECEIVED_MS, self.junk),
        )
        db.execute(
            "INSERT INTO outbox (msg_id, subject, envelope, created_ms) VALUES (?, ?, ?, ?)",
            (self.queued.msg_id, SUBJECT, self.queued.data, RECEIVED_MS),
        )
        db.execute(
            "INSERT INTO sent VALUES (?, ?, 'alerts', 'tf.alert/1', ?, 0, 'share', ?)",
            (self.queued.msg_id, hashlib.sha256(self.queued.data).digest(), RECEIVED_MS,
             self.queued.data),
        )  # fmt: skip
        db.execute("INSERT INTO outbound_seq VALUES ('alerts', 2)")
        db.execute(
            "INSERT INTO roster_state VALUES ('nl-north', ?, ?)",
            (self.roster_state.seq, encode(self.roster_state)),
        )


# --- the state database -------------------------------------------------------------------------


def test_a_state_database_of_the_previous_schema_is_upgraded_in_place_with_its_data_usable(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    path = tmp_path / "state" / "state.db"
    old = OldState(taskforce, path)
    assert "size" not in _columns(path, "quarantine")

    store = StateStore(path)
    try:
        assert store.upgraded_from == 1
        assert _meta(path)["schema"] == str(SCHEMA_VERSION) == "5"
        assert "size" in _columns(path, "quarantine")
        assert "sealed" in _columns(path, "inbox_keys")
        # The inbox item reads back and its envelope still opens.
        [item] = store.inbox()
        assert (item.msg_id, item.sender, item.received_ms) == (
            old.sealed.msg_id,
            "police",
            RECEIVED_MS,
        )
        assert item.sealed_key is None  # stored before: opens with the keys held, as it did
        reopened = _receiver(taskforce, MemoryReplayStore()).receive(item.envelope, SUBJECT)
        assert isinstance(reopened, Delivered)
        assert (reopened.message.msg_id, reopened.message.sender) == (old.sealed.msg_id, "police")
        # The replay entry is recognised: the same envelope again is a duplicate.
        again = _receiver(taskforce, store.replay(keep_inbox=True)).receive(
            old.sealed.data, SUBJECT
        )
        assert isinstance(again, Duplicate)
        assert len(store.inbox()) == 1
        # The old quarantine row reads with the size of what was kept (then all of it), and
        # the running total counts it.
        [junk] = store.quarantined()
        assert (junk.code, junk.envelope, junk.size, junk.truncated) == (
            "E_MALFORMED",
            old.junk,
            len(old.junk),
            False,
        )
        assert _meta(path)["quarantine_bytes"] == str(len(old.junk))
        # Outbox, sent list, roster state and the outbound sequence go on where they were.
        assert store.outbox() == [(old.queued.msg_id, SUBJECT, old.queued.data)]
        assert [s.msg_id for s in store.sent()] == [old.queued.msg_id]
        assert store.roster_state("nl-north") == old.roster_state
        assert store.next_seq("alerts") == 3
    finally:
        store.close()
    # Opened again: nothing more to do.
    with_no_steps = StateStore(path)
    assert with_no_steps.upgraded_from == SCHEMA_VERSION
    with_no_steps.close()


def test_a_state_database_of_the_interim_schema_1_with_sizes_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    """Databases made between the quarantine sizes (an ad-hoc column) and schema 2 say
    schema 1 but already hold the column and the running total: the step keeps both."""
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.executescript(STATE_DDL_C9CC8CE)
    with db:
        db.execute("ALTER TABLE quarantine ADD COLUMN size INTEGER")
        db.execute("INSERT INTO meta VALUES ('schema', '1'), ('quarantine_bytes', '3')")
        db.execute(
            "INSERT INTO quarantine VALUES (x'01', 'E_BAD_SIG', 'r', NULL, NULL, NULL, 5, "
            "x'aabbcc', 300000)"
        )
    db.close()
    store = StateStore(path)
    [row] = store.quarantined()
    assert (row.size, row.truncated) == (300_000, True)
    assert _meta(path)["quarantine_bytes"] == "3"
    assert _meta(path)["schema"] == "5"
    store.close()


def test_a_state_database_newer_than_the_code_is_refused_and_left_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    StateStore(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = '7' WHERE key = 'schema'")
        db.execute("CREATE TABLE from_the_future (x)")
    db.close()
    before = path.read_bytes()
    with pytest.raises(SchemaError) as raised:
        StateStore(path)
    error = raised.value
    assert "schema 7" in error.message and "newer" in error.message
    assert "state.db" in error.message
    assert "upgrade tfshare" in error.hint
    assert error.exit_code is ExitCode.ERROR
    assert path.read_bytes() == before
    assert _meta(path)["schema"] == "7"


def test_a_step_that_fails_midway_leaves_the_previous_version_and_data(
    taskforce: TaskForce, tmp_path: Path
) -> None:
    """Step 2 adds the size column, then writes the running total; here the write fails
    (a trigger of the file refuses it): the column is gone again, the version is still 1,
    the data is all there. Once the obstacle is gone, the upgrade goes through."""
    path = tmp_path / "state.db"
    old = OldState(taskforce, path)
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "CREATE TRIGGER no_new_meta BEFORE INSERT ON meta "
            "BEGIN SELECT RAISE(ABORT, 'meta is frozen'); END"
        )
    db.close()
    with pytest.raises(SchemaError) as raised:
        StateStore(path)
    assert "from schema 1 to 2" in raised.value.message
    assert "meta is frozen" in raised.value.message
    assert "still at schema 1" in raised.value.hint
    assert _meta(path) == {"schema": "1"}
    assert "size" not in _columns(path, "quarantine")
    db = sqlite3.connect(path)
    with db:
        db.execute("DROP TRIGGER no_new_meta")
    db.close()
    store = StateStore(path)
    assert store.upgraded_from == 1
    assert [i.msg_id for i in store.inbox()] == [old.sealed.msg_id]
    store.close()


def test_the_state_schema_is_its_migrations_applied_in_order() -> None:
    versions = [m.version for m in store_module.MIGRATIONS]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


# --- the audit log ------------------------------------------------------------------------------

ORIGIN: Final = checkpoint_origin("nl-north")
LOG_KEY: Final = NoteSigner(ORIGIN, hashlib.sha256(b"migration test key").digest())
T0: Final = 1_795_000_000_000


def _entry(i: int) -> LogEntry:
    digest = hashlib.sha256(f"entry {i}".encode()).digest()
    refs = [(1, hashlib.sha256(f"entry {i - 1}".encode()).digest()[:16], digest)] if i % 2 else []
    return LogEntry(
        entry_type="message",
        msg_id=digest[:16],
        sender="police",
        sender_kid=b"K" * 8,
        taskforce="nl-north",
        channel="alerts",
        ts_ms=T0 + i,
        env_sha256=digest,
        refs=refs,
        observed_ms=T0 + i + 100,
    )


def _old_audit_log(path: Path, size: int) -> bytes:
    """An audit log of ``size`` (a power of two) entries written with the c9cc8ce DDL: rows,
    refs, every perfect subtree's node and a signed checkpoint, computed here. Its root."""
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")  # as c9cc8ce opened it
        with db:
            for statement in AUDIT_DDL_C9CC8CE:
                db.execute(statement)
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("kind", "tfshare-audit"), ("schema", "1"), ("leaf_count", str(size))],
            )
            level = []
            for i in range(size):
                entry = _entry(i)
                data = encode_entry(entry)
                db.execute(
                    "INSERT INTO entries VALUES (?, ?, 'message', ?, '', ?)",
                    (i, data, entry.env_sha256, entry.msg_id),
                )
                for pos, ref in enumerate(entry.refs):
                    db.execute("INSERT INTO refs VALUES (?, ?, ?)", (i, pos, ref[1]))
                level.append(entry_leaf_hash(data))
            height = 0
            while level:
                db.executemany(
                    "INSERT INTO nodes VALUES (?, ?, ?)",
                    [(height, j, node) for j, node in enumerate(level)],
                )
                if len(level) == 1:
                    break
                level = [node_hash(level[j], level[j + 1]) for j in range(0, len(level), 2)]
                height += 1
            root = level[0]
            db.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?)",
                (size, sign_checkpoint(Checkpoint(ORIGIN, size, root), [LOG_KEY]), T0),
            )
    finally:
        db.close()
    return root


def test_an_audit_log_of_the_previous_schema_opens_grows_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    root = _old_audit_log(path, 8)
    with AuditStore(path) as store:
        assert store.upgraded_from == 1
        assert (store.size, store.root()) == (8, root)
        assert [i for i, _ in store.find(_entry(3).msg_id)] == [3]
        assert store.append([_entry(3), _entry(8), _entry(9)]) == [None, 8, 9]
        store.add_checkpoint(
            10, sign_checkpoint(Checkpoint(ORIGIN, 10, store.root()), [LOG_KEY]), T0 + 10
        )
    report = verify_store(path, [LOG_KEY.verifier], ORIGIN)
    assert (report.entries, report.checkpoints) == (10, 2)
    assert _meta(path)["schema"] == "1"


def test_an_audit_log_newer_than_the_code_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    _old_audit_log(path, 2)
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    db.close()
    before = path.read_bytes()
    with pytest.raises(SchemaError) as raised:
        AuditStore(path)
    assert "the audit log" in raised.value.message and "schema 2" in raised.value.message
    assert "upgrade tfshare" in raised.value.hint
    assert path.read_bytes() == before


def test_a_state_database_at_the_current_version_missing_a_column_is_refused_by_name(
    tmp_path: Path,
) -> None:
    """A file that says schema 2 but lacks the quarantine's size column (edited by hand, or
    a table rebuilt by some tool) is refused when opened, naming what is missing, instead of
    failing later on "no such column" as an internal error."""
    path = tmp_path / "state.db"
    StateStore(path).close()
    db = sqlite3.connect(path)
    with db:
        db.execute("ALTER TABLE quarantine DROP COLUMN size")
        db.execute("DROP TABLE sent")
    db.close()
    with pytest.raises(SchemaError) as raised:
        StateStore(path)
    message = raised.value.message
    assert "has schema 5 but lacks column quarantine.size, table sent: it was edited" in message
    assert "restore the state directory from backup" in raised.value.hint
