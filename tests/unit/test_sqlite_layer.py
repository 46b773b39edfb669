"""``tfshare.sqlite_db``: the one SQLite layer of the state database and the audit log.

Private files, pragmas, transactions, ordered migrations (one transaction each, a newer
database refused) and one wording per storage failure, the same for both stores: a full disk
is the same kind of error with the same hint from either, only the file's name differs. Real
SQLite files; the full disk is real (the database may not grow by one page), and the codes
that cannot be provoked portably are set on an ``sqlite3.Error`` as the sqlite3 module sets
them (as in test_sqlfail).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
from pathlib import Path
from typing import Final

import pytest

from tfshare import sqlite_db
from tfshare.audit.entry import LogEntry
from tfshare.audit.logstore import AUDIT_LOG, AuditStore, AuditStoreUnavailable, _unavailable
from tfshare.sqlfail import Failure
from tfshare.sqlite_db import Migration, SchemaError, StorageError
from tfshare.store import STATE_DATABASE, Quarantined, StateStore, StoreError, store_error

NOTE: Final = sqlite_db.DatabaseFile(
    name="the note file",
    location="where the notes are",
    files="the notes",
    damaged_hint="restore the notes",
)


def _coded(code: int, text: str) -> sqlite3.Error:
    exc = sqlite3.OperationalError(text)
    exc.sqlite_errorcode = code  # as _sqlite sets it on the errors it raises
    return exc


def _meta(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM meta").fetchall())


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


# --- opening ----------------------------------------------------------------------------------


def test_a_new_database_is_private_in_a_private_directory_with_wal_and_full_sync(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "notes.db"
    db = sqlite_db.open_database(path, NOTE, pragmas=("cache_size=-1234",))
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert db.execute("PRAGMA cache_size").fetchone()[0] == -1234
        assert db.isolation_level is None  # transactions are the layer's, not the module's
    finally:
        db.close()


def test_a_directory_that_cannot_be_made_is_an_access_failure_in_the_stores_words(
    tmp_path: Path,
) -> None:
    (tmp_path / "blocker").write_bytes(b"")
    with pytest.raises(StoreError) as state:
        StateStore(tmp_path / "blocker" / "state.db")
    with pytest.raises(AuditStoreUnavailable) as audit:
        AuditStore(tmp_path / "blocker" / "audit.db")
    for error, what in ((state.value, STATE_DATABASE), (audit.value, AUDIT_LOG)):
        assert error.failure is Failure.ACCESS and not error.transient
        assert error.message.startswith(f"cannot create {what.name} ")
        assert error.hint == f"check the owner and mode of {what.files}"


# --- one wording for a storage failure, whichever store --------------------------------------


def test_a_real_full_disk_is_the_same_error_with_the_same_hint_from_both_stores(
    tmp_path: Path,
) -> None:
    state = StateStore(tmp_path / "state.db")
    audit = AuditStore(tmp_path / "audit.db")
    for db in (state._db, audit._db):
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full for this connection
    blob = os.urandom(200_000)
    with pytest.raises(StoreError) as state_full:
        state.quarantine(
            Quarantined(hashlib.sha256(blob).digest(), "E_MALFORMED", "r", None, None, None, 1,
                        blob),
            keep_bytes=len(blob),
        )  # fmt: skip
    entries = [_entry(i) for i in range(2000)]
    with pytest.raises(AuditStoreUnavailable) as audit_full:
        audit.append(entries)
    errors = {"state": state_full.value, "audit": audit_full.value}
    for error in errors.values():
        assert isinstance(error, StorageError)
        assert error.failure is Failure.FULL and error.transient
        assert "the disk is full (database or disk is full)" in error.message
        assert error.code is None  # never a tampering code
    assert errors["state"].message.startswith("cannot write the state database ")
    assert errors["audit"].message.startswith("cannot append to the audit log ")
    assert errors["state"].hint == (
        f"free disk space {STATE_DATABASE.location} (or raise the quota), then retry; "
        "nothing was written"
    )
    assert errors["audit"].hint == (
        f"free disk space {AUDIT_LOG.location} (or raise the quota), then retry; "
        "nothing was written"
    )
    # Nothing was written by either.
    assert state.quarantine_usage() == (0, 0)
    assert audit.size == 0
    state.close()
    audit.close()


def _entry(i: int) -> LogEntry:
    digest = hashlib.sha256(f"full {i}".encode()).digest()
    return LogEntry(
        entry_type="message",
        msg_id=digest[:16],
        sender="police",
        sender_kid=b"K" * 8,
        taskforce="nl-north",
        channel="alerts",
        ts_ms=1_795_000_000_000,
        env_sha256=digest,
        refs=[],
        observed_ms=1_795_000_000_100,
    )


@pytest.mark.parametrize(
    ("code", "text", "failure"),
    [
        (sqlite3.SQLITE_FULL, "database or disk is full", Failure.FULL),
        (sqlite3.SQLITE_IOERR | (3 << 8), "disk I/O error", Failure.IO),  # SQLITE_IOERR_WRITE
        (sqlite3.SQLITE_BUSY, "database is locked", Failure.LOCKED),
        (sqlite3.SQLITE_READONLY, "attempt to write a readonly database", Failure.ACCESS),
        (sqlite3.SQLITE_NOMEM, "out of memory", Failure.RESOURCE),
    ],
)
def test_each_classified_failure_reads_the_same_from_both_stores_but_for_the_file(
    code: int, text: str, failure: Failure
) -> None:
    exc = _coded(code, text)
    state = store_error(Path("/s/state.db"), exc)
    audit = _unavailable("write", Path("/a/audit.db"), exc)
    assert isinstance(state, StoreError) and isinstance(audit, AuditStoreUnavailable)
    assert state.failure is audit.failure is failure
    assert state.transient == audit.transient == failure.transient

    def generic(message: str, what: sqlite_db.DatabaseFile, path: str) -> str:
        # The longer first: the file's name is part of the others.
        for specific, placeholder in (
            (what.files, "FILES"),
            (what.location, "WHERE"),
            (what.name, "FILE"),
            (repr(path), "PATH"),
        ):
            message = message.replace(specific, placeholder)
        return message

    assert generic(state.message, STATE_DATABASE, "/s/state.db") == generic(
        audit.message, AUDIT_LOG, "/a/audit.db"
    )
    assert generic(state.hint, STATE_DATABASE, "/s/state.db") == generic(
        audit.hint, AUDIT_LOG, "/a/audit.db"
    )
    assert text in state.message and text in audit.message


def test_a_damaged_file_is_the_stores_to_judge() -> None:
    """SQLITE_CORRUPT: the state store says restore from backup; the audit store leaves it
    to verification (tampering, never "unavailable")."""
    exc = _coded(sqlite3.SQLITE_CORRUPT, "database disk image is malformed")
    state = store_error(Path("state.db"), exc)
    assert state is not None and state.failure is Failure.DAMAGED
    assert "is damaged" in state.message and state.hint == STATE_DATABASE.damaged_hint
    assert _unavailable("read", Path("audit.db"), exc) is None


def test_a_constraint_or_a_bug_is_no_storage_failure() -> None:
    exc = sqlite3.IntegrityError("UNIQUE constraint failed: t.x")
    assert store_error(Path("state.db"), exc) is None
    assert sqlite_db.storage_error(NOTE, "write", "x.db", exc) is None


# --- transactions ---------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    connection = sqlite_db.open_database(tmp_path / "t.db", NOTE)
    connection.execute("CREATE TABLE t (x INTEGER UNIQUE)")
    return connection


def test_a_transaction_is_all_or_nothing_and_joins_one_already_open(
    db: sqlite3.Connection,
) -> None:
    with pytest.raises(sqlite3.IntegrityError), sqlite_db.transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO t VALUES (1)")
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert not db.in_transaction
    with sqlite_db.transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        with sqlite_db.transaction(db):  # joined: committed with the outer one
            db.execute("INSERT INTO t VALUES (2)")
        assert db.in_transaction
    assert db.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_a_failed_savepoint_undoes_only_its_own_writes(db: sqlite3.Connection) -> None:
    with sqlite_db.transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        with pytest.raises(RuntimeError), sqlite_db.savepoint(db, "one"):
            db.execute("INSERT INTO t VALUES (2)")
            raise RuntimeError("this one failed")
        with sqlite_db.savepoint(db, "one"):
            db.execute("INSERT INTO t VALUES (3)")
    assert db.execute("SELECT x FROM t ORDER BY x").fetchall() == [(1,), (3,)]


# --- migrations -----------------------------------------------------------------------------

STEPS: Final = (
    Migration(1, "notes", sqlite_db.statements("CREATE TABLE notes (n TEXT);\n")),
    Migration(2, "note dates", ("ALTER TABLE notes ADD COLUMN day TEXT",)),
)


def _set_day(db: sqlite3.Connection) -> None:
    db.execute("UPDATE notes SET day = 'monday'")
    db.execute("INSERT INTO no_such_table VALUES (1)")  # fails after a write


def test_a_new_database_gets_every_step_and_the_last_version(tmp_path: Path) -> None:
    db = sqlite_db.open_database(tmp_path / "n.db", NOTE)
    assert sqlite_db.migrate(db, NOTE, "n.db", STEPS) == (0, 2)
    assert _meta(db) == {"schema": "2"}
    assert [r[1] for r in db.execute("PRAGMA table_info(notes)")] == ["n", "day"]
    assert sqlite_db.migrate(db, NOTE, "n.db", STEPS) == (2, 2)


def test_an_older_database_gets_the_missing_steps_in_order_keeping_its_data(
    tmp_path: Path,
) -> None:
    db = sqlite_db.open_database(tmp_path / "n.db", NOTE)
    sqlite_db.migrate(db, NOTE, "n.db", STEPS[:1])
    db.execute("INSERT INTO notes VALUES ('kept')")
    assert sqlite_db.migrate(db, NOTE, "n.db", STEPS) == (1, 2)
    assert db.execute("SELECT n, day FROM notes").fetchall() == [("kept", None)]


def test_a_step_that_fails_midway_leaves_the_version_before_it_whole(tmp_path: Path) -> None:
    db = sqlite_db.open_database(tmp_path / "n.db", NOTE)
    sqlite_db.migrate(db, NOTE, "n.db", STEPS[:1])
    db.execute("INSERT INTO notes VALUES ('kept')")
    steps = (*STEPS, Migration(3, "a step that fails", _set_day))
    with pytest.raises(SchemaError) as raised:
        sqlite_db.migrate(db, NOTE, "n.db", steps)
    # Step 2 is in (its own transaction), step 3's first write is not.
    assert _meta(db) == {"schema": "2"}
    assert db.execute("SELECT n, day FROM notes").fetchall() == [("kept", None)]
    assert not db.in_transaction
    assert "from schema 2 to 3 (a step that fails)" in raised.value.message
    assert "no such table" in raised.value.message
    assert raised.value.hint.startswith("nothing was changed: it is still at schema 2;")


def test_a_database_newer_than_the_code_is_refused_before_anything_runs(tmp_path: Path) -> None:
    db = sqlite_db.open_database(tmp_path / "n.db", NOTE)
    sqlite_db.migrate(db, NOTE, "n.db", STEPS)
    with pytest.raises(SchemaError) as raised:
        sqlite_db.migrate(db, NOTE, "n.db", STEPS[:1])
    assert raised.value.message == (
        "the note file 'n.db' has schema 2, newer than this version of tfshare understands "
        "(up to 1)"
    )
    assert "upgrade tfshare" in raised.value.hint
    assert raised.value.failure is None and not raised.value.transient
    assert _meta(db) == {"schema": "2"}


def test_a_version_that_is_not_a_number_is_refused(tmp_path: Path) -> None:
    db = sqlite_db.open_database(tmp_path / "n.db", NOTE)
    sqlite_db.migrate(db, NOTE, "n.db", STEPS)
    db.execute("UPDATE meta SET value = 'two' WHERE key = 'schema'")
    with pytest.raises(SchemaError, match="no valid schema version") as raised:
        sqlite_db.migrate(db, NOTE, "n.db", STEPS)
    assert raised.value.hint == NOTE.damaged_hint


def test_a_storage_failure_during_a_step_is_raised_for_the_store_to_name(tmp_path: Path) -> None:
    """A full disk while upgrading is a full disk (the store's StoreError), not a schema
    problem, and the version stays."""
    path = tmp_path / "state.db"
    db = sqlite_db.open_database(path, STATE_DATABASE)
    db.execute("CREATE TABLE filler (b BLOB)")
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    db.execute(f"PRAGMA max_page_count = {pages + 1}")
    big = (Migration(1, "a big table", ("CREATE TABLE big AS SELECT randomblob(500000) AS b",)),)
    with pytest.raises(sqlite3.Error) as raised:
        sqlite_db.migrate(db, STATE_DATABASE, path, big)
    error = store_error(path, raised.value, "open")
    assert error is not None and error.failure is Failure.FULL
    assert "big" not in _tables(db)
    assert "meta" not in _tables(db)  # the step's transaction created it, and was undone
    db.close()


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    db = sqlite_db.open_database(tmp_path / "n.db", NOTE)
    with pytest.raises(ValueError, match="in order"):
        sqlite_db.migrate(db, NOTE, "n.db", (STEPS[1], STEPS[0]))
    with pytest.raises(ValueError, match="in order"):
        sqlite_db.migrate(db, NOTE, "n.db", STEPS[1:])


def test_a_script_is_split_into_whole_statements() -> None:
    script = "CREATE TABLE a (x TEXT DEFAULT ';');\nCREATE TABLE b (\n  y\n);\n"
    assert sqlite_db.statements(script) == (
        "CREATE TABLE a (x TEXT DEFAULT ';');",
        "CREATE TABLE b (\n  y\n);",
    )
    with pytest.raises(ValueError, match="incomplete"):
        sqlite_db.statements("CREATE TABLE c (z")
