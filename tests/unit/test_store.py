"""SQLite state: schema, outbound sequence numbers, replay store and roster state."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tfkit import TaskForce

from tfshare import roster as R
from tfshare.errors import InputError, TrustError
from tfshare.replay import ReplayEntry
from tfshare.store import SCHEMA_VERSION, StateStore

KID = b"K" * 8
OTHER_KID = b"k" * 8


def _entry(
    msg_id: bytes = b"m" * 16,
    *,
    kid: bytes = KID,
    env_hash: bytes = b"h" * 32,
    seq: int = 1,
    sender: str = "police",
    channel: str = "alerts",
) -> ReplayEntry:
    return ReplayEntry(
        sender_kid=kid,
        msg_id=msg_id,
        env_hash=env_hash,
        ts_ms=1_795_000_000_000,
        sender=sender,
        channel=channel,
        seq=seq,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "state.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[StateStore]:
    opened = StateStore(db_path)
    try:
        yield opened
    finally:
        opened.close()


def _reopen(store: StateStore) -> StateStore:
    store.close()
    return StateStore(store.path)


def _raw(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# schema ---------------------------------------------------------------------------------------


def test_creates_the_database_and_its_directory(store: StateStore, db_path: Path) -> None:
    """Opening a store creates the state directory and the database file."""
    assert db_path.parent.is_dir()
    assert db_path.is_file()


def test_database_file_is_private(store: StateStore, db_path: Path) -> None:
    """state.db is created 0600: ids and hashes are case metadata."""
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_records_the_schema_version(store: StateStore, db_path: Path) -> None:
    """The meta table holds the schema version."""
    assert _raw(db_path, "SELECT value FROM meta WHERE key = 'schema'") == [(str(SCHEMA_VERSION),)]


def test_reopening_keeps_one_schema_row(store: StateStore, db_path: Path) -> None:
    """Reopening an existing database does not add a second schema row."""
    _reopen(store).close()
    assert _raw(db_path, "SELECT count(*) FROM meta WHERE key = 'schema'") == [(1,)]


def test_refuses_another_schema_version(store: StateStore, db_path: Path) -> None:
    """A database written with another schema version is an InputError."""
    store.close()
    db = sqlite3.connect(db_path)
    with db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.close()
    with pytest.raises(InputError, match="schema 99"):
        StateStore(db_path)


def test_garbage_database_is_an_input_error(tmp_path: Path) -> None:
    """A state.db of garbage bytes raises InputError, not a sqlite3 exception."""
    path = tmp_path / "state.db"
    path.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(InputError, match="cannot be used") as info:
        StateStore(path)
    assert not isinstance(info.value, sqlite3.Error)


def test_state_path_under_a_file_is_an_input_error(tmp_path: Path) -> None:
    """A state directory that cannot be created (a file is in the way) is an InputError."""
    (tmp_path / "blocker").write_bytes(b"")
    with pytest.raises(InputError):
        StateStore(tmp_path / "blocker" / "state.db")


# outbound sequence numbers --------------------------------------------------------------------


def test_next_seq_starts_at_one(store: StateStore) -> None:
    """The first sequence number on a channel is 1."""
    assert store.next_seq("alerts") == 1


def test_next_seq_increments(store: StateStore) -> None:
    """Each call reserves the next number on the channel."""
    assert [store.next_seq("alerts") for _ in range(3)] == [1, 2, 3]


def test_next_seq_is_per_channel(store: StateStore) -> None:
    """Channels count independently."""
    store.next_seq("alerts")
    store.next_seq("alerts")
    assert store.next_seq("tips") == 1
    assert store.next_seq("alerts") == 3


def test_next_seq_persists_across_reopen(store: StateStore) -> None:
    """A reopened store continues where the previous one stopped."""
    store.next_seq("alerts")
    store.next_seq("alerts")
    reopened = _reopen(store)
    try:
        assert reopened.next_seq("alerts") == 3
    finally:
        reopened.close()


# replay store ---------------------------------------------------------------------------------


def test_lookup_unknown_is_none(store: StateStore) -> None:
    """An unrecorded (kid, msg_id) has no entry."""
    assert store.replay().lookup(KID, b"m" * 16) is None


def test_record_then_lookup_returns_env_hash(store: StateStore) -> None:
    """A recorded entry is found by (kid, msg_id) with its env_hash."""
    replay = store.replay()
    replay.record(_entry(env_hash=b"H" * 32))
    assert replay.lookup(KID, b"m" * 16) == b"H" * 32


def test_lookup_is_keyed_by_kid_and_msg_id(store: StateStore) -> None:
    """The same msg_id under another kid, or another msg_id, is not found."""
    replay = store.replay()
    replay.record(_entry())
    assert replay.lookup(OTHER_KID, b"m" * 16) is None
    assert replay.lookup(KID, b"n" * 16) is None


def test_last_seq_unknown_is_none(store: StateStore) -> None:
    """No seq is known for a sender/channel never seen."""
    assert store.replay().last_seq("police", "alerts") is None


def test_last_seq_is_the_maximum_recorded(store: StateStore) -> None:
    """last_seq is the highest seq, not the latest one recorded."""
    replay = store.replay()
    replay.record(_entry(b"a" * 16, seq=5))
    replay.record(_entry(b"b" * 16, seq=3))
    assert replay.last_seq("police", "alerts") == 5


def test_last_seq_rises(store: StateStore) -> None:
    """A higher seq raises the high-water mark."""
    replay = store.replay()
    replay.record(_entry(b"a" * 16, seq=5))
    replay.record(_entry(b"b" * 16, seq=9))
    assert replay.last_seq("police", "alerts") == 9


def test_last_seq_is_per_sender_and_channel(store: StateStore) -> None:
    """Sequence high-water marks are kept per (sender, channel)."""
    replay = store.replay()
    replay.record(_entry(b"a" * 16, seq=5))
    replay.record(_entry(b"b" * 16, seq=2, channel="tips"))
    replay.record(_entry(b"c" * 16, kid=OTHER_KID, seq=7, sender="ngo"))
    assert replay.last_seq("police", "alerts") == 5
    assert replay.last_seq("police", "tips") == 2
    assert replay.last_seq("ngo", "alerts") == 7
    assert replay.last_seq("ngo", "tips") is None


def test_replay_entries_persist_across_reopen(store: StateStore) -> None:
    """Recorded entries and seqs are still there after reopening the database."""
    store.replay().record(_entry(env_hash=b"H" * 32, seq=4))
    reopened = _reopen(store)
    try:
        replay = reopened.replay()
        assert replay.lookup(KID, b"m" * 16) == b"H" * 32
        assert replay.last_seq("police", "alerts") == 4
    finally:
        reopened.close()


def test_record_of_a_new_entry_returns_none(store: StateStore) -> None:
    """Recording an unseen (kid, msg_id) reports no earlier entry."""
    assert store.replay().record(_entry()) is None


def test_recording_the_same_id_twice_returns_the_stored_hash(store: StateStore) -> None:
    """A second record under the same (kid, msg_id) answers the env_hash stored first."""
    replay = store.replay()
    replay.record(_entry(env_hash=b"H" * 32))
    assert replay.record(_entry(env_hash=b"X" * 32, seq=8)) == b"H" * 32


def test_recording_the_same_id_twice_keeps_the_first_entry(store: StateStore) -> None:
    """After the second record the first env_hash and seq stand."""
    replay = store.replay()
    replay.record(_entry(env_hash=b"H" * 32, seq=2))
    replay.record(_entry(env_hash=b"X" * 32, seq=8))
    assert replay.lookup(KID, b"m" * 16) == b"H" * 32
    assert replay.last_seq("police", "alerts") == 2


def test_recording_the_same_id_twice_keeps_one_row(store: StateStore, db_path: Path) -> None:
    """The primary key (kid, msg_id) holds one row however often it is recorded."""
    replay = store.replay()
    replay.record(_entry(env_hash=b"H" * 32))
    replay.record(_entry(env_hash=b"X" * 32))
    assert _raw(db_path, "SELECT count(*) FROM replay") == [(1,)]


def test_store_is_usable_after_a_repeated_record(store: StateStore) -> None:
    """A repeated record leaves no open transaction: later writes still work."""
    replay = store.replay()
    replay.record(_entry())
    replay.record(_entry())
    replay.record(_entry(b"n" * 16, seq=3))
    assert replay.last_seq("police", "alerts") == 3
    assert store.next_seq("alerts") == 1


def test_replay_table_holds_no_plaintext_columns(store: StateStore, db_path: Path) -> None:
    """The replay table stores ids, hashes, times and seqs only."""
    columns = [row[1] for row in _raw(db_path, "PRAGMA table_info(replay)")]
    assert columns == ["sender_kid", "msg_id", "env_hash", "ts_ms", "sender", "channel", "seq"]


# roster state ---------------------------------------------------------------------------------


def test_roster_state_unknown_is_none(store: StateStore) -> None:
    """No state is stored for a task force never accepted."""
    assert store.roster_state("nl-north") is None


def test_roster_state_round_trip(store: StateStore, taskforce: TaskForce) -> None:
    """A saved RosterState loads back equal."""
    _, state = R.verify_roster(
        taskforce.roster_bytes, anchor=taskforce.anchor, state=None, now_ms=taskforce.now_ms
    )
    store.save_roster_state("nl-north", state)
    assert store.roster_state("nl-north") == state


def test_roster_state_persists_across_reopen(store: StateStore, taskforce: TaskForce) -> None:
    """Roster state survives closing and reopening the database."""
    _, state = R.verify_roster(
        taskforce.roster_bytes, anchor=taskforce.anchor, state=None, now_ms=taskforce.now_ms
    )
    store.save_roster_state("nl-north", state)
    reopened = _reopen(store)
    try:
        assert reopened.roster_state("nl-north") == state
    finally:
        reopened.close()


def test_saving_roster_state_replaces_the_previous(store: StateStore, taskforce: TaskForce) -> None:
    """Saving again for the same task force replaces the state."""
    _, state = R.verify_roster(
        taskforce.roster_bytes, anchor=taskforce.anchor, state=None, now_ms=taskforce.now_ms
    )
    newer = R.RosterState(seq=state.seq + 1, roster_hash=b"n" * 32, anchor=state.anchor)
    store.save_roster_state("nl-north", state)
    store.save_roster_state("nl-north", newer)
    assert store.roster_state("nl-north") == newer


def test_roster_state_is_per_taskforce(store: StateStore, taskforce: TaskForce) -> None:
    """A state saved for one task force is not returned for another."""
    _, state = R.verify_roster(
        taskforce.roster_bytes, anchor=taskforce.anchor, state=None, now_ms=taskforce.now_ms
    )
    store.save_roster_state("nl-north", state)
    assert store.roster_state("be-south") is None


def test_saving_an_older_roster_state_is_ignored(store: StateStore, taskforce: TaskForce) -> None:
    """A state with a lower seq never replaces a newer one (two processes may race)."""
    _, state = R.verify_roster(
        taskforce.roster_bytes, anchor=taskforce.anchor, state=None, now_ms=taskforce.now_ms
    )
    newer = R.RosterState(seq=state.seq + 1, roster_hash=b"n" * 32, anchor=state.anchor)
    store.save_roster_state("nl-north", newer)
    store.save_roster_state("nl-north", state)
    assert store.roster_state("nl-north") == newer


def test_damaged_roster_state_is_a_trust_error(
    store: StateStore, db_path: Path, taskforce: TaskForce
) -> None:
    """A damaged state blob is reported as TrustError, not a decode exception."""
    _, state = R.verify_roster(
        taskforce.roster_bytes, anchor=taskforce.anchor, state=None, now_ms=taskforce.now_ms
    )
    store.save_roster_state("nl-north", state)
    db = sqlite3.connect(db_path)
    with db:
        db.execute("UPDATE roster_state SET state = ?", (b"\xc1garbage",))
    db.close()
    with pytest.raises(TrustError, match="damaged"):
        store.roster_state("nl-north")
