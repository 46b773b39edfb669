"""``tfshare.sqlfail.classify``: SQLite's errors sorted by their primary code.

Real SQLite errors wherever one can be provoked here (a read-only connection, a file that is
not a database, a database another connection holds, a write past the file size limit); the
extended codes that cannot be provoked portably are built on an ``sqlite3.Error`` with
``sqlite_errorcode`` set, as the sqlite3 module itself sets it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tfshare.sqlfail import Failure, classify, primary_code


def _error_of(action: object) -> sqlite3.Error:
    try:
        action()  # type: ignore[operator]
    except sqlite3.Error as exc:
        return exc
    raise AssertionError("no SQLite error was raised")


def _coded(code: int, text: str = "an error") -> sqlite3.Error:
    exc = sqlite3.OperationalError(text)
    exc.sqlite_errorcode = code  # as _sqlite sets it on the errors it raises
    return exc


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "real.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    return path


def test_a_write_on_a_read_only_connection_is_an_access_failure(database: Path) -> None:
    db = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    exc = _error_of(lambda: db.execute("INSERT INTO t VALUES (1)"))
    db.close()
    assert exc.sqlite_errorname == "SQLITE_READONLY"
    assert classify(exc) is Failure.ACCESS
    assert not Failure.ACCESS.transient


def test_a_file_that_is_not_a_database_is_damaged(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not an SQLite database, it is a shopping list\n" * 100)
    db = sqlite3.connect(path)
    exc = _error_of(lambda: db.execute("SELECT * FROM sqlite_master").fetchall())
    db.close()
    assert exc.sqlite_errorname == "SQLITE_NOTADB"
    assert classify(exc) is Failure.DAMAGED
    assert not Failure.DAMAGED.transient


def test_a_database_held_by_another_connection_is_locked(database: Path) -> None:
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(database, timeout=0, isolation_level=None)
    exc = _error_of(lambda: other.execute("INSERT INTO t VALUES (1)"))
    holder.rollback()
    holder.close()
    other.close()
    assert exc.sqlite_errorname == "SQLITE_BUSY"
    assert classify(exc) is Failure.LOCKED
    assert Failure.LOCKED.transient


def test_a_write_past_the_file_size_limit_is_an_io_error_by_its_primary_code(
    tmp_path: Path,
) -> None:
    # A real SQLITE_IOERR_WRITE (what a disk quota gives): EFBIG under RLIMIT_FSIZE, in a
    # child process so that no file of the test run is limited.
    script = """
import resource, sqlite3, sys
from tfshare.sqlfail import classify
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE t (x BLOB)")
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
try:
    for _ in range(100):
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 8000,))
except sqlite3.Error as exc:
    print(exc.sqlite_errorname, classify(exc).value)
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "limited.db")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.split() == ["SQLITE_IOERR_WRITE", "io"]


@pytest.mark.parametrize(
    ("name", "failure"),
    [
        ("SQLITE_IOERR_WRITE", Failure.IO),
        ("SQLITE_IOERR_FSYNC", Failure.IO),
        ("SQLITE_IOERR_SHORT_READ", Failure.IO),
        ("SQLITE_IOERR_NOMEM", Failure.IO),
        ("SQLITE_BUSY_SNAPSHOT", Failure.LOCKED),
        ("SQLITE_LOCKED_SHAREDCACHE", Failure.LOCKED),
        ("SQLITE_READONLY_DBMOVED", Failure.ACCESS),
        ("SQLITE_CANTOPEN_ISDIR", Failure.ACCESS),
        ("SQLITE_CORRUPT_INDEX", Failure.DAMAGED),
    ],
)
def test_extended_codes_are_read_by_their_primary_code(name: str, failure: Failure) -> None:
    code = getattr(sqlite3, name)
    assert code > 0xFF  # really an extended code
    assert classify(_coded(code)) is failure
    assert primary_code(_coded(code)) == code & 0xFF


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        (sqlite3.SQLITE_FULL, Failure.FULL),
        (sqlite3.SQLITE_IOERR, Failure.IO),
        (sqlite3.SQLITE_PERM, Failure.ACCESS),
        (sqlite3.SQLITE_AUTH, Failure.ACCESS),
        (sqlite3.SQLITE_NOMEM, Failure.RESOURCE),
        (sqlite3.SQLITE_PROTOCOL, Failure.LOCKED),
    ],
)
def test_primary_codes(code: int, failure: Failure) -> None:
    assert classify(_coded(code)) is failure


def test_the_full_disk_and_io_failures_are_transient_and_worth_a_retry() -> None:
    assert Failure.FULL.transient and Failure.IO.transient and Failure.RESOURCE.transient


def test_a_constraint_violation_is_not_a_storage_failure(database: Path) -> None:
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE u (x PRIMARY KEY)")
    db.execute("INSERT INTO u VALUES (1)")
    exc = _error_of(lambda: db.execute("INSERT INTO u VALUES (1)"))
    db.close()
    assert exc.sqlite_errorname.startswith("SQLITE_CONSTRAINT")
    assert classify(exc) is None  # a bug or an edited file: the caller judges it


def test_a_programming_error_is_not_a_storage_failure(database: Path) -> None:
    db = sqlite3.connect(database)
    exc = _error_of(lambda: db.execute("SELECT * FROM no_such_table"))
    db.close()
    assert classify(exc) is None


@pytest.mark.parametrize(
    ("text", "failure"),
    [
        ("database or disk is full", Failure.FULL),
        ("disk I/O error", Failure.IO),
        ("database is locked", Failure.LOCKED),
        ("something else entirely", None),
    ],
)
def test_an_error_without_a_code_is_read_from_its_text(text: str, failure: Failure | None) -> None:
    exc = sqlite3.OperationalError(text)
    assert primary_code(exc) is None
    assert classify(exc) is failure
