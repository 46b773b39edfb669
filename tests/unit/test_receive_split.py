"""Receiver.open + Receiver.settle give exactly the outcomes of Receiver.receive.

The agent runs ``open`` (every check but the replay store's) apart from ``settle`` (the replay
check and the record); the replay check is ordered before the wrap, decryption and schema
checks (PROTOCOL.md), so a replayed or equivocating envelope must still be reported as such
when a later check would also have failed.
"""

from __future__ import annotations

import pytest
from tfkit import TaskForce, build_taskforce

from tfshare.errors import RejectCode
from tfshare.protocol import Delivered, Receiver, Rejection
from tfshare.registry.book import Registry
from tfshare.replay import MemoryReplayStore, ReplayEntry
from tfshare.seal import Duplicate, ReceivePolicy


class RefusingReplay:
    """A replay store that fails the test if anyone asks it anything."""

    def lookup(self, sender_kid: bytes, msg_id: bytes) -> bytes | None:
        raise AssertionError("open() consulted the replay store")

    def last_seq(self, sender: str, channel: str) -> int | None:
        raise AssertionError("open() consulted the replay store")

    def record(self, entry: ReplayEntry) -> bytes | None:
        raise AssertionError("open() wrote to the replay store")


@pytest.fixture(scope="module")
def tf() -> TaskForce:
    return build_taskforce()


def test_open_leaves_the_replay_store_alone_and_settle_delivers(tf: TaskForce) -> None:
    sealed = tf.seal("police")
    opener = Receiver(
        identity=tf.ids["ngo"],
        roster=tf.trusted(),
        replay=RefusingReplay(),
        schemas=tf.schemas,
        clock=lambda: tf.now_ms,
        policy=ReceivePolicy(),
    )
    opening = opener.open(sealed.data, None, tf.now_ms)
    assert opening.replay_key == (tf.ids["police"].kid_sig, sealed.msg_id)

    replay = MemoryReplayStore()
    outcome = tf.receiver("ngo", replay=replay).settle(sealed.data, opening)
    assert isinstance(outcome, Delivered)
    assert replay.lookup(tf.ids["police"].kid_sig, sealed.msg_id) == sealed.env_hash
    again = tf.receiver("ngo", replay=replay).settle(sealed.data, opening)
    assert isinstance(again, Duplicate)


def test_a_replay_that_fails_a_later_check_is_still_a_duplicate(tf: TaskForce) -> None:
    sealed = tf.seal("police")
    replay = MemoryReplayStore()
    assert isinstance(tf.receiver("ngo", replay=replay).receive(sealed.data), Delivered)
    # The same receiver, now without the schema: the schema check (after the replay check)
    # would fail, but the envelope is a replay of one already delivered.
    forgetful = Receiver(
        identity=tf.ids["ngo"],
        roster=tf.trusted(),
        replay=replay,
        schemas=Registry([]),
        clock=lambda: tf.now_ms,
        policy=ReceivePolicy(),
    )
    opening = forgetful.open(sealed.data, None, tf.now_ms)
    assert isinstance(opening.result, Rejection)
    assert opening.result.code is RejectCode.E_SCHEMA
    assert isinstance(forgetful.settle(sealed.data, opening), Duplicate)
    assert isinstance(forgetful.receive(sealed.data), Duplicate)


def test_equivocation_is_reported_before_a_wrap_that_is_not_ours(tf: TaskForce) -> None:
    first = tf.seal("police", rng_seed="same")
    replay = MemoryReplayStore()
    receiver = tf.receiver("ngo", replay=replay)
    assert isinstance(receiver.receive(first.data), Delivered)
    # Same msg_id (same randomness), other content, not addressed to ngo at all.
    second = tf.seal("police", rng_seed="same", to=["labour"], seq=2)
    assert second.msg_id == first.msg_id and second.env_hash != first.env_hash
    opening = receiver.open(second.data, None, tf.now_ms)
    assert isinstance(opening.result, Rejection)
    assert opening.result.code is RejectCode.E_NOT_RECIPIENT
    outcome = receiver.settle(second.data, opening)
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_EQUIVOCATION
    assert replay.lookup(tf.ids["police"].kid_sig, first.msg_id) == first.env_hash


def test_a_rejection_before_the_signature_owes_no_replay_check(tf: TaskForce) -> None:
    sealed = tf.seal("police")
    tampered = bytearray(sealed.data)
    tampered[-1] ^= 1
    opening = tf.receiver("ngo").open(bytes(tampered), None, tf.now_ms)
    assert isinstance(opening.result, Rejection)
    assert opening.result.code is RejectCode.E_BAD_SIG
    assert opening.replay_key is None
