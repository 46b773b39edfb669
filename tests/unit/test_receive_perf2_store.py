"""The receive path's shared per-batch work (issue 15, receive overhead): the senders'
sequence numbers are written once per batch transaction instead of once per message, and a
message's savepoint is a class of the store's own. What the state database says afterwards
must be exactly what a row-by-row write said: these tests pin that down."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tfshare.replay import ReplayEntry
from tfshare.store import StateStore, StoreError


def entry(seq: int, *, sender: str = "police", channel: str = "alerts") -> ReplayEntry:
    return ReplayEntry(
        sender_kid=b"k" * 32,
        msg_id=os.urandom(16),
        env_hash=os.urandom(32),
        ts_ms=1_000 + seq,
        sender=sender,
        channel=channel,
        seq=seq,
        schema="tf.alert/1",
        envelope=b"e" * 100,
    )


def stored_seqs(store: StateStore) -> dict[tuple[str, str], int]:
    db = sqlite3.connect(store.path)
    try:
        return {(s, c): q for s, c, q in db.execute("SELECT sender, channel, seq FROM sender_seq")}
    finally:
        db.close()


def test_a_batch_writes_the_highest_seq_of_each_sender_and_channel(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    replay = store.replay(keep_inbox=True)
    with store.transaction():
        for seq in (3, 7, 5):
            assert replay.record(entry(seq)) is None
        assert replay.record(entry(2, channel="tips")) is None
        assert replay.record(entry(9, sender="ngo")) is None
    assert stored_seqs(store) == {
        ("police", "alerts"): 7,
        ("police", "tips"): 2,
        ("ngo", "alerts"): 9,
    }
    assert store.inbox_count() == 5
    store.close()


def test_a_batch_never_moves_a_stored_seq_back(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    replay = store.replay(keep_inbox=True)
    replay.record(entry(10))  # outside a batch: written at once
    assert stored_seqs(store) == {("police", "alerts"): 10}
    with store.transaction():
        replay.record(entry(4))
    assert stored_seqs(store) == {("police", "alerts"): 10}
    store.close()


def test_a_message_whose_savepoint_is_undone_leaves_no_seq_behind(tmp_path: Path) -> None:
    """The agent undoes one message's savepoint when its processing fails: its replay row
    goes, and so must its sequence number (it was not delivered)."""
    store = StateStore(tmp_path / "state.db")
    replay = store.replay(keep_inbox=True)
    with store.transaction():
        with store.savepoint():
            replay.record(entry(3))
        with pytest.raises(RuntimeError), store.savepoint():
            replay.record(entry(8))
            raise RuntimeError("this message's processing failed")
        with store.savepoint():
            replay.record(entry(4))
    assert stored_seqs(store) == {("police", "alerts"): 4}
    assert store.inbox_count() == 2
    store.close()


def test_the_seq_recorded_earlier_in_the_open_batch_is_the_last_seq(tmp_path: Path) -> None:
    """A receiver built during the batch (a roster update) reads the last seq from the
    store: what the batch recorded counts though it is not written yet."""
    store = StateStore(tmp_path / "state.db")
    store.replay().record(entry(2))
    with store.transaction():
        store.replay().record(entry(6))
        assert store.replay().last_seq("police", "alerts") == 6
        assert store.replay().last_seq("police", "tips") is None
    assert store.replay().last_seq("police", "alerts") == 6
    store.close()


def test_a_batch_rolled_back_writes_no_seq_and_leaves_nothing_for_the_next(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.db")
    replay = store.replay(keep_inbox=True)
    with pytest.raises(RuntimeError), store.transaction():
        replay.record(entry(50))
        raise RuntimeError("the batch failed")
    assert stored_seqs(store) == {}
    with store.transaction():
        replay.record(entry(1))
    assert stored_seqs(store) == {("police", "alerts"): 1}
    store.close()


def test_a_storage_failure_inside_a_savepoint_is_a_store_error(tmp_path: Path) -> None:
    """The savepoint turns SQLite's storage failures into StoreError (the agent then
    acknowledges nothing); a constraint error stays what it is (a bug about one message)."""
    store = StateStore(tmp_path / "state.db")
    with store.transaction():
        with pytest.raises(sqlite3.IntegrityError), store.savepoint():
            raise sqlite3.IntegrityError("UNIQUE constraint failed")
        with pytest.raises(StoreError), store.savepoint():
            raise sqlite3.OperationalError("database or disk is full")
    store.close()
