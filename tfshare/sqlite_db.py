"""One SQLite database file of tfshare, opened, written, failing and upgraded one way.

Owns, for every store that keeps a database (the agent's state database, the audit log):

- ``open_database``: the file created 0600 (in a 0700 directory) before SQLite opens it, WAL
  journal, ``synchronous=FULL`` and the store's own pragmas;
- ``transaction`` and ``savepoint``: all or nothing; a COMMIT that fails is rolled back too,
  so a connection is never left inside a transaction later writes would silently join;
- ``StorageError`` and ``storage_error``: an SQLite failure, sorted by ``tfshare.sqlfail``,
  becomes one message and hint per kind of failure, the same for every store; only what the
  file is called (``DatabaseFile``) is the store's own;
- ``migrate`` over ``Migration`` steps: the schema version is the ``schema`` row of the
  ``meta`` table; the ordered steps from the database's version to the code's are applied,
  each in its own transaction with the version it reaches, so a step that fails leaves the
  database at the version before it, whole. A database newer than the code is refused
  (``SchemaError``), and so is one at the code's version that lacks a table or column the
  steps give a new database (edited or damaged): named when opened, not "no such column"
  later.

Never: change a database whose schema is newer than the code; apply a step half; let a
failure of the disk read as a damaged file or as a bug.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from tfshare.errors import InputError
from tfshare.sqlfail import Failure, classify


@dataclass(frozen=True)
class DatabaseFile:
    """How a store's messages name its file and what to do about it: the only wording that
    differs between stores."""

    name: str  # "the state database"
    location: str  # where space is to be freed: "where the state directory is"
    files: str  # what to check the owner and mode of
    damaged_hint: str  # what to do with a damaged file (backup, evidence)


class StorageError(InputError):
    """A database could not be opened, read, written or upgraded. ``failure`` (from
    ``tfshare.sqlfail``) says why when the disk, a lock or the permissions are the cause;
    None when the file's content is (a schema too new, an upgrade that could not apply).
    Whatever the failing transaction wrote was rolled back."""

    def __init__(self, message: str, *, hint: str, failure: Failure | None = None) -> None:
        super().__init__(message, hint=hint)
        self.failure = failure

    @property
    def transient(self) -> bool:
        """Worth retrying as it is (space freed, lock released, disk back)."""
        return self.failure is not None and self.failure.transient


class SchemaError(StorageError):
    """The database's schema is not one this code can use: newer than the code (written by
    a newer tfshare), not a version at all, or an upgrade step that does not apply to what
    the file holds. The file was left as it was."""


_E = TypeVar("_E", bound=StorageError)

_WHY: Final = {
    Failure.FULL: "the disk is full",
    Failure.IO: "the disk failed to read or write",
    Failure.LOCKED: "another process holds it locked",
    Failure.ACCESS: "it is read-only or not accessible",
    Failure.RESOURCE: "the machine is out of memory",
}


def failure_text(what: DatabaseFile, failure: Failure, action: str, path: Path | str,
                 detail: str) -> tuple[str, str]:  # fmt: skip
    """(message, hint) of ``failure`` while doing ``action`` ("write", "append to") on the
    file ``path``: the same words for every store, but for the file's name and location."""
    where = repr(str(path))
    if failure is Failure.DAMAGED:
        return f"{what.name} {where} is damaged and cannot be used ({detail})", what.damaged_hint
    hints = {
        Failure.FULL: f"free disk space {what.location} (or raise the quota), then retry; "
        "nothing was written",
        Failure.IO: "check the disk (free space, quota, errors in the system log), then retry; "
        "nothing was written",
        Failure.LOCKED: f"another tfshare process is using {what.name}; retry in a moment",
        Failure.ACCESS: f"check the owner and mode of {what.files}",
        Failure.RESOURCE: "the machine is short of memory; retry",
    }
    return f"cannot {action} {what.name} {where}: {_WHY[failure]} ({detail})", hints[failure]


def storage_error(
    what: DatabaseFile,
    action: str,
    path: Path | str,
    exc: sqlite3.Error,
    kind: type[_E] = StorageError,  # type: ignore[assignment]
) -> _E | None:
    """The ``kind`` of ``StorageError`` for an SQLite failure of the disk, a lock, the
    permissions or a damaged file, or None when ``exc`` is none of these (a constraint or a
    statement that does not fit the file: a bug or an edit, judged by the caller)."""
    failure = classify(exc)
    if failure is None:
        return None
    message, hint = failure_text(what, failure, action, path, str(exc))
    return kind(message, hint=hint, failure=failure)


def open_database(
    path: Path,
    what: DatabaseFile,
    *,
    pragmas: Sequence[str] = (),
    kind: type[_E] = StorageError,  # type: ignore[assignment]
) -> sqlite3.Connection:
    """A connection to ``path`` in autocommit mode (transactions are ``transaction``'s),
    with WAL, ``synchronous=FULL`` and ``pragmas`` ("cache_size=-65536"). The directory is
    created 0700 and the file 0600 before SQLite opens it: even ids and hashes are case
    metadata. A file system failure is a ``kind`` error; an SQLite one is raised as it is,
    for the store to judge (a damaged audit log is evidence, a damaged state file is not)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        failure = Failure.FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else Failure.ACCESS
        message, hint = failure_text(what, failure, "create", path, exc.strerror or str(exc))
        raise kind(message, hint=hint, failure=failure) from None
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        for pragma in pragmas:
            db.execute(f"PRAGMA {pragma}")
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or join the transaction already open (so a caller can
    group several writes into one commit). If anything fails, the COMMIT included (a full
    disk often fails there), it is rolled back whole. SQLite's errors are raised as they are."""
    if db.in_transaction:
        yield
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.commit()
    except BaseException:
        if db.in_transaction:
            db.rollback()
        raise


@contextlib.contextmanager
def savepoint(db: sqlite3.Connection, name: str = "step") -> Iterator[None]:
    """Inside a transaction: the writes of the block, undone alone if it fails (the rest of
    the transaction stays). ``name`` is an identifier of ours, never input."""
    db.execute(f"SAVEPOINT {name}")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute(f"ROLLBACK TO {name}")
            db.execute(f"RELEASE {name}")
        raise
    db.execute(f"RELEASE {name}")


# --- schema versions and migrations --------------------------------------------------------

Step = tuple[str, ...] | Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Migration:
    """One step of a store's schema: from ``version - 1`` to ``version``. ``step`` is a
    sequence of SQL statements (``statements`` splits a script) or a function of the
    connection; it runs inside the step's transaction and must not commit."""

    version: int
    about: str
    step: Step


def statements(script: str) -> tuple[str, ...]:
    """The statements of an SQL script, one by one (``executescript`` would COMMIT first,
    outside the step's transaction)."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement at the end of a script: {pending.strip()!r}")
    return tuple(out)


_META: Final = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


def schema_version(db: sqlite3.Connection, what: DatabaseFile, path: Path | str) -> int:
    """The database's schema version: 0 for a new (empty) one, else the ``schema`` row of
    ``meta``. A value that is not a version is refused (``SchemaError``)."""
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is None:
        return 0
    value = row[0]
    if type(value) is not str or not value.isdecimal() or len(value) > 9:
        raise SchemaError(
            f"{what.name} {str(path)!r} has no valid schema version ({value!r} in meta)",
            hint=what.damaged_hint,
        )
    return int(value)


def migrate(
    db: sqlite3.Connection,
    what: DatabaseFile,
    path: Path | str,
    migrations: Sequence[Migration],
    *,
    check: bool = True,
) -> tuple[int, int]:
    """Bring the database to the last version of ``migrations`` (ordered, numbered 1, 2, ...);
    returns (version found, version now). Each step missing runs in its own transaction
    together with the new version, so a step that fails leaves the database, whole, at the
    version before it. Another process upgrading at the same time is waited for (the steps
    take the write lock and re-read the version). A database newer than the code is refused
    and left as it is (``SchemaError``, as is a step that does not apply to what the file
    holds). A failure of the disk, a lock, the permissions or a damaged file is raised as
    SQLite's error, for the store to name (``storage_error``) as it names any other. With
    ``check``, a database that says it is at the last version but lacks one of its tables or
    columns (edited, damaged) is refused (``SchemaError``) rather than failing later."""
    latest = _check_order(migrations)
    found = schema_version(db, what, path)
    _refuse_newer(found, latest, what, path)
    current = found
    for migration in migrations:
        if migration.version <= current:
            continue
        try:
            with transaction(db):
                db.execute(_META)
                current = schema_version(db, what, path)  # under the write lock, at last
                _refuse_newer(current, latest, what, path)
                if migration.version <= current:
                    continue  # another process applied it meanwhile
                if isinstance(migration.step, tuple):
                    for statement in migration.step:
                        db.execute(statement)
                else:
                    migration.step(db)
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(migration.version),),
                )
        except sqlite3.Error as exc:
            if classify(exc) is not None:
                raise
            raise SchemaError(
                f"cannot upgrade {what.name} {str(path)!r} from schema {current} to "
                f"{migration.version} ({migration.about}): {exc}",
                hint=f"nothing was changed: it is still at schema {current}; {what.damaged_hint}",
            ) from None
        current = migration.version
    if check:
        _check_shape(db, what, path, tuple(migrations))
    return found, current


def _shape(db: sqlite3.Connection) -> dict[str, frozenset[str]]:
    """Every table of the database and its columns."""
    tables = [
        row[0]
        for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    columns = "SELECT name FROM pragma_table_info(?)"
    return {table: frozenset(row[0] for row in db.execute(columns, (table,))) for table in tables}


_SHAPES: dict[tuple[Migration, ...], dict[str, frozenset[str]]] = {}


def expected_shape(migrations: tuple[Migration, ...]) -> dict[str, frozenset[str]] | None:
    """The tables and columns ``migrations`` give a new database (applied once per process,
    in memory), or None if even that failed (out of memory): then there is nothing to compare
    with, and the failure is not the file's (asked again next time)."""
    shape = _SHAPES.get(migrations)
    if shape is not None:
        return shape
    try:
        scratch = sqlite3.connect(":memory:", isolation_level=None)
        try:
            migrate(scratch, _SCRATCH, ":memory:", migrations, check=False)
            shape = _SHAPES[migrations] = _shape(scratch)
        finally:
            scratch.close()
    except sqlite3.Error:
        return None
    return shape


_SCRATCH: Final = DatabaseFile("a scratch database", "", "", "")


def _check_shape(
    db: sqlite3.Connection, what: DatabaseFile, path: Path | str, migrations: tuple[Migration, ...]
) -> None:
    """A database at the code's version must hold every table and column that version has:
    one that says so but does not was edited or damaged, and is refused here rather than
    failing later on a statement ("no such column")."""
    expected = expected_shape(migrations)
    if expected is None:
        return
    have = _shape(db)
    missing: list[str] = []
    for table, columns in expected.items():
        if table not in have:
            missing.append(f"table {table}")
        else:
            missing.extend(f"column {table}.{column}" for column in sorted(columns - have[table]))
    if missing:
        raise SchemaError(
            f"{what.name} {str(path)!r} has schema {len(migrations)} but lacks "
            f"{', '.join(missing)}: it was edited or damaged",
            hint=what.damaged_hint,
        )


def _check_order(migrations: Sequence[Migration]) -> int:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, ... in order, not {versions}")
    return len(versions)


def _refuse_newer(version: int, latest: int, what: DatabaseFile, path: Path | str) -> None:
    if version > latest:
        raise SchemaError(
            f"{what.name} {str(path)!r} has schema {version}, newer than this version of "
            f"tfshare understands (up to {latest})",
            hint="it was written by a newer tfshare: upgrade tfshare to use it (it was left "
            "unchanged; an older version cannot read it)",
        )
