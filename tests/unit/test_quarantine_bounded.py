"""The quarantine is bounded (issue 11, item 4) and a message's writes can be undone alone
(item 2): real SQLite state databases in the test's directory."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from tfshare.store import Quarantined, StateStore


def junk(size: int) -> Quarantined:
    data = os.urandom(size)
    return Quarantined(
        env_hash=hashlib.sha256(data).digest(),
        code="E_MALFORMED",
        reason="envelope: malformed",
        sender=None,
        msg_id=None,
        subject="tf.nl-north.ch.alerts.police",
        received_ms=1,
        envelope=data,
    )


def test_a_flood_of_large_junk_keeps_the_quarantine_content_within_both_caps(
    tmp_path: Path,
) -> None:
    """100 envelopes of 300 KB: a row each (code, hash, full size), at most 64 KiB of each, and
    no content past the 1 MiB total; the running total survives reopening the database."""
    store = StateStore(tmp_path / "state.db")
    kept = [store.quarantine(junk(300_000), total_bytes=1024 * 1024) for _ in range(100)]
    assert kept == [True] * 16 + [False] * 84
    entries, used = store.quarantine_usage()
    assert (entries, used) == (100, 16 * 64 * 1024)
    rows = store.quarantined(limit=1000)
    assert {r.size for r in rows} == {300_000}
    assert all(r.truncated for r in rows)
    store.close()
    reopened = StateStore(tmp_path / "state.db")
    assert not reopened.quarantine(junk(10), total_bytes=1024 * 1024)
    assert reopened.quarantine_usage() == (101, 16 * 64 * 1024)


def test_a_small_envelope_is_kept_whole_and_a_repeat_is_not_counted_twice(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.db")
    item = junk(1000)
    assert store.quarantine(item)
    assert not store.quarantine(item)  # once per envelope hash
    [row] = store.quarantined()
    assert (row.envelope, row.size, row.truncated) == (item.envelope, 1000, False)
    assert store.quarantine_usage() == (1, 1000)


def test_a_quarantine_from_before_the_size_column_is_migrated(tmp_path: Path) -> None:
    """A state database written before sizes were kept: the column is added, old rows read
    with the size of what was kept (then the whole envelope)."""
    path = tmp_path / "state.db"
    StateStore(path).close()
    db = sqlite3.connect(path)
    db.executescript(
        "DROP TABLE quarantine; CREATE TABLE quarantine (env_hash BLOB PRIMARY KEY, "
        "code TEXT NOT NULL, reason TEXT NOT NULL, sender TEXT, msg_id BLOB, subject TEXT, "
        "received_ms INTEGER NOT NULL, envelope BLOB NOT NULL) WITHOUT ROWID;"
        "INSERT INTO quarantine VALUES (x'01', 'E_BAD_SIG', 'r', NULL, NULL, NULL, 5, x'aabbcc');"
        # A database from before the size column said schema 1 (it is migrated to 2).
        "UPDATE meta SET value = '1' WHERE key = 'schema';"
        "DELETE FROM meta WHERE key = 'quarantine_bytes';"
    )
    db.close()
    store = StateStore(path)
    [old] = store.quarantined()
    assert (old.code, old.envelope, old.size) == ("E_BAD_SIG", b"\xaa\xbb\xcc", 3)
    assert store.quarantine(junk(10))
    assert store.quarantine_usage() == (2, 13)


def test_a_failed_savepoint_undoes_only_its_own_writes(tmp_path: Path) -> None:
    """Inside one transaction, the writes of a failed savepoint are gone and those of the
    others are committed (how the agent isolates one message of a batch)."""
    store = StateStore(tmp_path / "state.db")
    first, bad, last = junk(10), junk(20), junk(30)
    with store.transaction():
        with store.savepoint():
            store.quarantine(first)
        with pytest.raises(RuntimeError), store.savepoint():
            store.quarantine(bad)
            raise RuntimeError("this message's processing failed")
        with store.savepoint():
            store.quarantine(last)
    hashes = {r.env_hash for r in store.quarantined()}
    assert hashes == {first.env_hash, last.env_hash}
    assert store.quarantine_usage() == (2, 40)
