"""The key manager's state (real SQLite): keys sealed under the state key, epochs persisted
with their deliveries before anything is published, resends, and the role it needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from kmkit import KM, km_taskforce, open_delivery, trusted, without
from tfkit import NOW_MS, DeterministicRng, TaskForce

from tfshare.errors import ExitCode, TrustError
from tfshare.keymanager.service import KeyManager, queue_resend
from tfshare.keymanager.store import KeyManagerStore
from tfshare.seal import claimed_header


def _manager(tf: TaskForce, path: Path, *, agency: str = KM, now_ms: int = NOW_MS) -> KeyManager:
    identity = tf.ids[agency]
    return KeyManager(
        identity=identity,
        roster=trusted(tf, now_ms=now_ms),
        roster_bytes=tf.roster_bytes,
        store=KeyManagerStore(path, state_key=identity.state_key),
        url="nats://127.0.0.1:1",
        clock=lambda: now_ms,
        rng=DeterministicRng(f"km {path} {now_ms}"),
    )


def test_an_epoch_is_persisted_with_its_deliveries_before_publishing(tmp_path: Path) -> None:
    """A key manager that stops after making an epoch (a broker away, a crash) publishes the
    same envelopes when it comes back, and never makes a second key for that epoch."""
    tf = km_taskforce()
    db = tmp_path / "keymanager.db"
    first = _manager(tf, db)
    [made] = first.make_epochs({"alerts": 41})
    assert (made.channel, made.epoch, made.reason) == ("alerts", 1, "initial")
    queued = first.store.pending()
    assert [(p.channel, p.epoch, p.subject) for p in queued] == [
        ("alerts", 1, "tf.nl-north.ch.alerts.keyman")
    ]
    key = first.store.current()["alerts"].key
    first.store.close()

    again = _manager(tf, db, now_ms=NOW_MS + 5000)
    assert again.make_epochs({"alerts": 41}) == []
    assert [p.msg_id for p in again.store.pending()] == [p.msg_id for p in queued]
    assert [p.envelope for p in again.store.pending()] == [p.envelope for p in queued]
    stored = again.store.current()["alerts"]
    assert (stored.key, stored.state.epoch, stored.state.start_seq) == (key, 1, 41)
    delivery = open_delivery(tf, "ngo", queued[0].envelope, roster=again.roster, now_ms=NOW_MS)
    assert delivery.key == key


def test_the_key_is_sealed_under_the_state_key(tmp_path: Path) -> None:
    tf = km_taskforce()
    db = tmp_path / "keymanager.db"
    manager = _manager(tf, db)
    manager.make_epochs({})
    stored = manager.store.current()["alerts"]
    key = stored.key
    assert key.hex() not in repr(stored) and "key=" not in repr(stored)
    manager.store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key not in on_disk
    other = KeyManagerStore(db, state_key=tf.ids["police"].state_key)
    with pytest.raises(TrustError) as refused:
        other.current()
    assert refused.value.exit_code == ExitCode.TRUST
    assert "does not open" in refused.value.message


def test_a_removal_makes_a_new_epoch_delivered_to_the_others_only(tmp_path: Path) -> None:
    tf = km_taskforce()
    manager = _manager(tf, tmp_path / "km.db")
    manager.make_epochs({})
    manager.store.published(*(p.msg_id for p in manager.store.pending()))
    manager.roster = trusted(without(tf, "labour", now_ms=NOW_MS), now_ms=NOW_MS)
    [rekey] = manager.make_epochs({})
    assert (rekey.epoch, rekey.reason) == (2, "members")
    assert manager.store.readers_of("alerts", 2) == {"coord", "ngo", "police"}
    assert manager.store.readers_of("alerts", 1) == {"coord", "labour", "ngo", "police"}
    [queued] = manager.store.pending()
    assert queued.epoch == 2
    assert manager.make_epochs({}) == []  # delivered to the set in force: nothing more due


def test_its_own_deliveries_do_not_count_against_the_message_budget(tmp_path: Path) -> None:
    tf = km_taskforce()
    manager = _manager(tf, tmp_path / "km.db")
    manager.make_epochs({"alerts": 100})
    [queued] = manager.store.pending()
    manager.store.published(queued.msg_id, own={("alerts", 1): 1})
    assert manager.store.current()["alerts"].state.start_seq == 101
    assert manager.store.pending() == []


def test_an_epoch_made_while_the_stream_was_unreadable_counts_from_when_it_is(
    tmp_path: Path,
) -> None:
    tf = km_taskforce()
    manager = _manager(tf, tmp_path / "km.db")
    manager.make_epochs({})
    assert manager.store.current()["alerts"].state.start_seq is None
    assert manager.make_epochs({"alerts": 7}) == []
    assert manager.store.current()["alerts"].state.start_seq == 7
    manager.make_epochs({"alerts": 9})
    assert manager.store.current()["alerts"].state.start_seq == 7  # set once


def test_sequence_numbers_are_reserved_per_channel_without_overlap(tmp_path: Path) -> None:
    store = KeyManagerStore(tmp_path / "km.db", state_key=bytes(32))
    assert store.reserve_seqs("alerts", 40) == 1
    assert store.reserve_seqs("alerts", 1) == 41
    assert store.reserve_seqs("tips", 2) == 1


def test_resend_delivers_the_current_key_again_to_one_reader(tmp_path: Path) -> None:
    tf = km_taskforce()
    manager = _manager(tf, tmp_path / "km.db")
    manager.make_epochs({})
    current = manager.store.current()["alerts"]
    manager.store.published(*(p.msg_id for p in manager.store.pending()))
    epoch = queue_resend(
        manager.identity, manager.roster, manager.store, "alerts", "ngo",
        now_ms=NOW_MS + 60_000, rng=DeterministicRng("resend"),
    )  # fmt: skip
    assert epoch == 1
    [queued] = manager.store.pending()
    header = claimed_header(queued.envelope)
    assert len(header.wraps) == 56 and header.seq == 2  # ngo alone; after the first delivery
    delivery = open_delivery(tf, "ngo", queued.envelope, roster=manager.roster, now_ms=NOW_MS)
    assert (delivery.epoch, delivery.key, delivery.starts_ms, delivery.reason) == (
        1,
        current.key,
        current.state.starts_ms,
        "resend",
    )


@pytest.mark.parametrize("to", ["outsider", "keyman", "nobody"])
def test_resend_goes_only_to_an_active_reader(tmp_path: Path, to: str) -> None:
    tf = km_taskforce()
    manager = _manager(tf, tmp_path / "km.db")
    manager.make_epochs({})
    with pytest.raises(TrustError) as refused:
        manager.queue_resend("alerts", to)
    assert "not an active reader" in refused.value.message
    assert len(manager.store.pending()) == 1  # nothing queued


def test_resend_before_any_epoch_is_refused(tmp_path: Path) -> None:
    manager = _manager(km_taskforce(), tmp_path / "km.db")
    with pytest.raises(TrustError) as refused:
        manager.queue_resend("alerts", "ngo")
    assert "no epoch" in refused.value.message


def test_an_agency_without_the_role_is_refused_with_the_command_that_grants_it(
    tmp_path: Path,
) -> None:
    manager = _manager(km_taskforce(), tmp_path / "km.db", agency="police")
    with pytest.raises(TrustError) as refused:
        manager.check_role()
    assert refused.value.exit_code == ExitCode.TRUST
    assert "tfshare roster role ROSTER police --roles member,key-manager" in (
        refused.value.hint or ""
    )
    with pytest.raises(TrustError):
        manager.queue_resend("alerts", "ngo")
