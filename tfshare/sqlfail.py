"""What went wrong in SQLite: the one place that sorts SQLite's errors.

Owns: ``classify``, which maps an ``sqlite3.Error`` to a ``Failure`` by SQLite's *primary*
result code (the low byte of the extended code). Every store (the agent's state database,
the audit log, the registry cache) asks here, so an extended code such as
``SQLITE_IOERR_WRITE`` (a disk quota, a failing disk) is read as what it is, an I/O error,
and never mistaken for a damaged or tampered file.
"""

from __future__ import annotations

import sqlite3
from enum import Enum


class Failure(Enum):
    """The kinds of storage failure a caller reacts to differently."""

    FULL = "full"  # no space (SQLITE_FULL; ENOSPC and EDQUOT reach SQLite as this or IOERR)
    IO = "io"  # a read or write failed (SQLITE_IOERR_*): wait and retry
    LOCKED = "locked"  # another connection holds the database: retry shortly
    ACCESS = "access"  # read-only, permission, cannot open: the operator must act
    DAMAGED = "damaged"  # the file is not a database or is corrupt: evidence, stop
    RESOURCE = "resource"  # out of memory and similar: transient

    @property
    def transient(self) -> bool:
        """A failure that may go away by itself (space freed, lock released, disk back)."""
        return self in (Failure.FULL, Failure.IO, Failure.LOCKED, Failure.RESOURCE)


_BY_PRIMARY: dict[int, Failure] = {
    sqlite3.SQLITE_FULL: Failure.FULL,
    sqlite3.SQLITE_IOERR: Failure.IO,
    sqlite3.SQLITE_BUSY: Failure.LOCKED,
    sqlite3.SQLITE_LOCKED: Failure.LOCKED,
    sqlite3.SQLITE_READONLY: Failure.ACCESS,
    sqlite3.SQLITE_PERM: Failure.ACCESS,
    sqlite3.SQLITE_CANTOPEN: Failure.ACCESS,
    sqlite3.SQLITE_AUTH: Failure.ACCESS,
    sqlite3.SQLITE_CORRUPT: Failure.DAMAGED,
    sqlite3.SQLITE_NOTADB: Failure.DAMAGED,
    sqlite3.SQLITE_NOMEM: Failure.RESOURCE,
    sqlite3.SQLITE_PROTOCOL: Failure.LOCKED,
}


def primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``exc`` (extended codes carry it in the low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def classify(exc: sqlite3.Error) -> Failure | None:
    """The storage failure ``exc`` reports, or None when it is not one (a constraint or a
    programming error: a bug or an edited file, which the caller judges itself)."""
    primary = primary_code(exc)
    if primary is not None:
        return _BY_PRIMARY.get(primary)
    # Raised without a code (older Pythons, or by the sqlite3 module itself): the text is
    # all there is. SQLite reports ENOSPC as "database or disk is full".
    text = str(exc)
    if "database or disk is full" in text:
        return Failure.FULL
    if "disk I/O error" in text:
        return Failure.IO
    if "database is locked" in text:
        return Failure.LOCKED
    return None
