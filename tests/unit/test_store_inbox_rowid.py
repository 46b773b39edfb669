"""The inbox as a rowid table (state schema 4): appending a delivered envelope instead of
inserting a 2 KiB row at a random place in a key-ordered B-tree. A database of schema 3 is
upgraded in place with its inbox rows, their order and their uniqueness kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tfshare import sqlite_db
from tfshare import store as store_module
from tfshare.replay import ReplayEntry
from tfshare.store import STATE_DATABASE, StateStore, StoreError


def _entry(i: int) -> ReplayEntry:
    return ReplayEntry(
        bytes([i]) * 8, bytes([i]) * 16, bytes([i]) * 32, 1_000 + i, "police", "alerts", i,
        "tf.alert/1", bytes([i]) * 2000,
    )  # fmt: skip


def _schema_3_with_inbox(path: Path, entries: list[ReplayEntry]) -> None:
    db = sqlite_db.open_database(path, STATE_DATABASE, kind=StoreError)
    sqlite_db.migrate(db, STATE_DATABASE, path, store_module.MIGRATIONS[:3])
    with sqlite_db.transaction(db):
        for n, e in enumerate(entries):
            db.execute(
                "INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (e.msg_id, e.sender_kid, e.env_hash, e.sender, e.channel, e.schema, e.ts_ms,
                 5_000 + n, e.envelope),
            )  # fmt: skip
    db.close()


def test_an_inbox_of_schema_3_is_moved_to_a_rowid_table_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    entries = [_entry(i) for i in (3, 1, 2)]
    _schema_3_with_inbox(path, entries)
    store = StateStore(path)
    assert store.upgraded_from == 3
    rows = store.inbox()
    assert [r.msg_id for r in rows] == [e.msg_id for e in reversed(entries)]  # newest first
    assert [r.envelope for r in rows] == [e.envelope for e in reversed(entries)]
    db = sqlite3.connect(path)
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'inbox'").fetchone()
    assert "WITHOUT ROWID" not in sql.upper()
    (unique,) = db.execute("SELECT \"unique\" FROM pragma_index_list('inbox')").fetchone()
    assert unique == 1
    with pytest.raises(sqlite3.IntegrityError):
        e = entries[0]
        db.execute(
            "INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.msg_id, e.sender_kid, b"x" * 32, "p", "c", "s", 1, 1, b""),
        )
    db.close()
    store.close()


def test_a_delivery_after_the_upgrade_is_kept_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _schema_3_with_inbox(path, [_entry(1)])
    store = StateStore(path)
    replay = store.replay(keep_inbox=True, clock=lambda: 9_000)
    assert replay.record(_entry(2)) is None
    assert replay.record(_entry(2)) == _entry(2).env_hash  # recorded before: nothing added
    assert store.inbox_count() == 2
    assert store.inbox()[0].msg_id == _entry(2).msg_id
    store.close()
