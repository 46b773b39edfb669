"""The agent's side of epoch mode without a broker (issue 15): epoch keys at rest in the state
database (sealed under the state key, bound to their row), key deliveries kept out of the
inbox, retention, the agency's keyring on the CLI's path (loading, refreshing, sealing), and
what ``agent status`` shows of the keys held."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from agent_epochs_kit import (
    epoch_message,
    epoch_taskforce,
    load_agency,
    new_key,
    state_files,
)
from hypothesis import given
from hypothesis import strategies as st
from nacl.exceptions import CryptoError
from structlog.testing import capture_logs
from tfkit import TaskForce, example_json

from tfshare.agent import Agent
from tfshare.desk import api
from tfshare.desk.service import epoch_keys_held
from tfshare.desk.views import iso
from tfshare.epochs import EPOCH_KEY_RETENTION_MS, EPOCH_KEY_SCHEMA, EpochKey, EpochKeyring
from tfshare.errors import TrustError
from tfshare.protocol import Delivered, Receiver
from tfshare.registry.book import shipped
from tfshare.replay import ReplayEntry
from tfshare.seal import ReceivePolicy
from tfshare.store import StateStore, open_epoch_key, seal_epoch_key
from tfshare.workflows import live

DAY_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@pytest.fixture(scope="module")
def tf() -> TaskForce:
    return epoch_taskforce(now_ms=now_ms())


STATE_KEY = bytes(range(32))


# -- at rest -------------------------------------------------------------------------------


def test_an_epoch_key_is_kept_sealed_and_opens_only_with_the_state_key_it_was_sealed_under(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.db")
    key = new_key("alerts", 3, starts_ms=1_000)
    assert store.epoch_key_add("nl-north", key, state_key=STATE_KEY, received_ms=2_000)
    # The same key again (a resend, a second attempt): nothing changes.
    assert not store.epoch_key_add("nl-north", key, state_key=STATE_KEY, received_ms=3_000)
    assert key.key not in state_files(store.path)
    assert store.epoch_keys("nl-north", state_key=STATE_KEY) == ([key], 0)
    assert store.epoch_keys("other-tf", state_key=STATE_KEY) == ([], 0)
    # Another agency's (or a rotated-away) state key opens nothing, and says so.
    assert store.epoch_keys("nl-north", state_key=bytes(32)) == ([], 1)
    store.close()


def test_a_row_that_does_not_open_is_replaced_by_the_key_managers_resend(tmp_path: Path) -> None:
    """A key kept under another state key (or altered) is never used, and must not block
    the resend that repairs it ('tfshare keys resend')."""
    store = StateStore(tmp_path / "state.db")
    key = new_key("alerts", 3, starts_ms=1_000)
    store.epoch_key_add("nl-north", key, state_key=bytes(32), received_ms=1)
    assert store.epoch_keys("nl-north", state_key=STATE_KEY) == ([], 1)
    assert store.epoch_key_add("nl-north", key, state_key=STATE_KEY, received_ms=2)
    assert store.epoch_keys("nl-north", state_key=STATE_KEY) == ([key], 0)
    store.close()


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE epoch_keys SET channel = 'tips'",
        "UPDATE epoch_keys SET epoch = 4",
        "UPDATE epoch_keys SET starts_ms = 0",
        "UPDATE epoch_keys SET taskforce = 'other-tf'",
    ],
)
def test_a_stored_key_moved_to_another_row_does_not_open(tmp_path: Path, edit: str) -> None:
    """The sealed key is bound to its task force, channel, epoch and start: a row edited in
    the file (to make an old key current, say) is not used."""
    store = StateStore(tmp_path / "state.db")
    store.epoch_key_add(
        "nl-north", new_key("alerts", 3, starts_ms=1_000), state_key=STATE_KEY, received_ms=1
    )
    store.close()
    db = sqlite3.connect(tmp_path / "state.db")
    with db:
        db.execute(edit)
    db.close()
    store = StateStore(tmp_path / "state.db")
    taskforce = "other-tf" if "taskforce" in edit else "nl-north"
    assert store.epoch_keys(taskforce, state_key=STATE_KEY) == ([], 1)
    store.close()


@given(
    taskforce=st.text(min_size=1, max_size=20),
    channel=st.text(min_size=1, max_size=20),
    epoch=st.integers(1, 2**53 - 1),
    starts_ms=st.integers(0, 2**53 - 1),
    secret=st.binary(min_size=32, max_size=32),
    flip=st.integers(0, 72 * 8 - 1),
)
def test_sealed_epoch_keys_open_as_themselves_and_never_once_altered(
    taskforce: str, channel: str, epoch: int, starts_ms: int, secret: bytes, flip: int
) -> None:
    key = EpochKey(channel, epoch, secret, starts_ms)
    sealed = seal_epoch_key(STATE_KEY, taskforce, key, os.urandom(24))
    assert len(sealed) == 72
    assert open_epoch_key(STATE_KEY, taskforce, channel, epoch, starts_ms, sealed) == secret
    altered = bytearray(sealed)
    altered[flip // 8] ^= 1 << (flip % 8)
    with pytest.raises(CryptoError):
        open_epoch_key(STATE_KEY, taskforce, channel, epoch, starts_ms, bytes(altered))
    with pytest.raises(CryptoError):
        open_epoch_key(STATE_KEY, taskforce, channel, epoch + 1, starts_ms, sealed)
    with pytest.raises(CryptoError):
        open_epoch_key(STATE_KEY, taskforce, channel, epoch, starts_ms, sealed[:-1])


def test_a_key_delivery_is_recorded_against_replay_but_never_kept_in_the_inbox(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.db")
    replay = store.replay(keep_inbox=True)

    def entry(msg_id: bytes, schema: str) -> ReplayEntry:
        return ReplayEntry(
            sender_kid=b"k" * 8, msg_id=msg_id, env_hash=b"h" * 32, ts_ms=1, sender="keymgr",
            channel="alerts", seq=int(msg_id[0]), schema=schema, envelope=b"sealed bytes",
        )  # fmt: skip

    assert replay.record(entry(b"\x01" * 16, EPOCH_KEY_SCHEMA)) is None
    assert replay.lookup(b"k" * 8, b"\x01" * 16) == b"h" * 32
    assert store.inbox() == []
    replay.record(entry(b"\x02" * 16, "tf.alert/1"))
    assert [i.msg_id for i in store.inbox()] == [b"\x02" * 16]
    store.close()


# -- retention -------------------------------------------------------------------------------


def _keep(store: StateStore, tf: TaskForce, agency: str, *keys: EpochKey) -> None:
    for key in keys:
        store.epoch_key_add("nl-north", key, state_key=tf.ids[agency].state_key, received_ms=1)


def test_the_agent_loads_its_keys_and_deletes_those_past_retention_from_memory_and_disk(
    tf: TaskForce, tmp_path: Path
) -> None:
    now = now_ms()
    gone = new_key("alerts", 1, starts_ms=now - 60 * DAY_MS)
    kept = new_key("alerts", 2, starts_ms=now - EPOCH_KEY_RETENTION_MS - DAY_MS)  # newest
    other = new_key("bulletin", 1, starts_ms=now - 90 * DAY_MS)  # the newest of its channel
    store = StateStore(tmp_path / "state.db")
    _keep(store, tf, "ngo", gone, kept, other)
    agent = Agent(
        identity=tf.ids["ngo"], roster=tf.trusted(), schemas=shipped(), store=store,
        url="nats://127.0.0.1:1", clock=now_ms,
    )  # fmt: skip
    assert sorted((k.channel, k.epoch) for k in agent.epochs) == [
        ("alerts", 1),
        ("alerts", 2),
        ("bulletin", 1),
    ]
    assert agent.receiver.epochs is agent.epochs
    with capture_logs() as events:
        assert agent.prune_epoch_keys(force=True) == 1
    assert agent.epochs.get("alerts", 1) is None
    assert agent.epochs.get("alerts", 2) is not None and agent.epochs.get("bulletin", 1)
    held, _ = store.epoch_keys("nl-north", state_key=tf.ids["ngo"].state_key)
    assert sorted((k.channel, k.epoch) for k in held) == [("alerts", 2), ("bulletin", 1)]
    assert [(e["event"], e["epoch"]) for e in events] == [("epoch_key_deleted", 1)]
    # Daily, not at every turn of the loop.
    assert agent.prune_epoch_keys() == 0
    store.close()


def test_keys_that_do_not_open_are_logged_once_at_start_and_never_used(
    tf: TaskForce, tmp_path: Path
) -> None:
    store = StateStore(tmp_path / "state.db")
    _keep(store, tf, "police", new_key("alerts", 1, starts_ms=1))  # police's state key
    with capture_logs() as events:
        agent = Agent(
            identity=tf.ids["ngo"], roster=tf.trusted(), schemas=shipped(), store=store,
            url="nats://127.0.0.1:1", clock=now_ms,
        )  # fmt: skip
    assert len(agent.epochs) == 0
    [logged] = [e for e in events if e["event"] == "epoch_keys_unreadable"]
    assert logged["count"] == 1 and logged["log_level"] == "error"
    store.close()


def test_the_cli_path_loads_the_keys_and_deletes_those_past_retention(
    tf: TaskForce, tmp_path: Path
) -> None:
    now = now_ms()
    first = new_key("alerts", 1, starts_ms=now - 60 * DAY_MS)
    second = new_key("alerts", 2, starts_ms=now - EPOCH_KEY_RETENTION_MS - DAY_MS)
    third = new_key("alerts", 3, starts_ms=now - DAY_MS)
    agency = load_agency(tf, "police", tmp_path / "police")  # makes the state
    _keep(agency.store, tf, "police", first, second, third)
    agency.store.close()
    agency = load_agency(tf, "police", tmp_path / "police")
    # Epoch 2's successor started a day ago: still within its retention; epoch 1's did not.
    assert sorted(k.epoch for k in agency.epochs) == [2, 3]
    held, _ = agency.store.epoch_keys("nl-north", state_key=tf.ids["police"].state_key)
    assert sorted(k.epoch for k in held) == [2, 3]
    agency.store.close()


# -- the agency's keyring on the CLI's path ---------------------------------------------------


def test_the_inbox_reads_an_epoch_message_whose_key_the_agent_kept_after_the_command_started(
    tf: TaskForce, tmp_path: Path
) -> None:
    """A direct ``listen`` runs for hours beside the agent: a message under a key kept since
    it started is opened after reading the keys again, not shown as unreadable."""
    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    key = new_key("alerts", 1, starts_ms=now_ms() - 1000)
    message = epoch_message(tf, "police", key, seq=1, now_ms=now_ms())
    # The agent (another connection to the same file) keeps the key and the message.
    agent_store = StateStore(agency.store.path)
    _keep(agent_store, tf, "ngo", key)
    receiver = Receiver(
        identity=tf.ids["ngo"], roster=tf.trusted(), replay=agent_store.replay(keep_inbox=True),
        schemas=shipped(), clock=now_ms, policy=ReceivePolicy(), epochs=EpochKeyring([key]),
    )  # fmt: skip
    assert isinstance(receiver.receive(message.data, None), Delivered)
    agent_store.close()
    # A row stored before the inbox kept each message's key (state schema 5): it opens
    # with the epoch keys held, as it always did.
    db = sqlite3.connect(agency.store.path)
    with db:
        db.execute("DELETE FROM inbox_keys")
    db.close()
    assert len(agency.epochs) == 0
    [read] = list(live.read_inbox(agency, agency.store.inbox()))
    assert isinstance(read, live.InboxMessage), read
    assert read.opened.epoch == 1 and read.opened.msg_id == message.msg_id
    assert agency.epochs.get("alerts", 1) is not None
    agency.store.close()


def test_an_epoch_message_whose_key_is_gone_is_listed_as_unreadable_E_EPOCH(
    tf: TaskForce, tmp_path: Path
) -> None:
    agency = load_agency(tf, "ngo", tmp_path / "ngo")
    key = new_key("alerts", 1, starts_ms=now_ms() - 1000)
    message = epoch_message(tf, "police", key, seq=1, now_ms=now_ms())
    receiver = Receiver(
        identity=tf.ids["ngo"], roster=tf.trusted(), replay=agency.store.replay(keep_inbox=True),
        schemas=shipped(), clock=now_ms, policy=ReceivePolicy(), epochs=EpochKeyring([key]),
    )  # fmt: skip
    assert isinstance(receiver.receive(message.data, None), Delivered)
    # A row stored before the inbox kept each message's key (state schema 5): it opens
    # with the epoch keys held, as it always did.
    db = sqlite3.connect(agency.store.path)
    with db:
        db.execute("DELETE FROM inbox_keys")
    db.close()
    [read] = list(live.read_inbox(agency, agency.store.inbox()))
    assert isinstance(read, live.Unreadable) and read.code == "E_EPOCH"
    agency.store.close()


def _compose(agency: live.Agency, channel: str) -> live.Composed:
    return live.compose(
        agency, kind="alert", channel=channel, to=None, body=example_json("tf.alert/1")
    )


def test_sealing_picks_epoch_mode_above_64_readers_and_direct_mode_below_with_the_same_key(
    tmp_path: Path,
) -> None:
    large = epoch_taskforce(now_ms=now_ms(), extra_readers=61)  # "alerts": 65 readers
    small = epoch_taskforce(now_ms=now_ms())  # "alerts": 4 readers
    # made for the large audience; the small one seals in direct mode whatever the key
    key = new_key("alerts", 1, starts_ms=now_ms() - 1000, extra_readers=61)
    sealed = {}
    for name, tf in (("large", large), ("small", small)):
        agency = load_agency(tf, "police", tmp_path / name)
        _keep(agency.store, tf, "police", key)
        agency.store.close()
        agency = load_agency(tf, "police", tmp_path / name)
        sealed[name], mine = live.seal_and_keep(agency, _compose(agency, "alerts"), queue=True)
        assert [m for m, _, _ in agency.store.outbox()] == [mine.msg_id]
        agency.store.close()
    assert (sealed["large"].epoch, sealed["large"].recipients) == (1, ())
    assert sealed["small"].epoch == 0
    assert sorted(sealed["small"].recipients) == ["coord", "labour", "ngo", "police"]


def test_sealing_on_an_epoch_only_channel_without_a_key_is_a_trust_error_and_keeps_nothing(
    tf: TaskForce, tmp_path: Path
) -> None:
    agency = load_agency(tf, "police", tmp_path / "police")
    with pytest.raises(TrustError) as refused:
        live.seal_and_keep(agency, _compose(agency, "bulletin"), queue=True)
    assert refused.value.exit_code == 6
    assert "no epoch key for channel 'bulletin' yet" in refused.value.message
    assert agency.store.outbox() == [] and agency.store.sent() == []
    agency.store.close()


# -- agent status -----------------------------------------------------------------------------


def test_status_shows_per_channel_the_newest_epoch_its_start_and_the_older_ones_kept() -> None:
    ring = EpochKeyring(
        [
            new_key("alerts", 1, starts_ms=1_000),
            new_key("alerts", 2, starts_ms=2_000),
            new_key("alerts", 3, starts_ms=3_000),
            new_key("bulletin", 7, starts_ms=7_000),
        ]
    )
    assert epoch_keys_held(ring) == [
        api.EpochKeysHeld("alerts", 3, iso(3_000), 2),
        api.EpochKeysHeld("bulletin", 7, iso(7_000), 0),
    ]
    assert epoch_keys_held(EpochKeyring()) == []
