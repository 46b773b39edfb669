"""Key deliveries on channels that restrict modes or schemas, and what may not ride on them.

A key manager's deliveries are direct mode on every channel, an epoch-only one included, and
the built-in tf.epoch-key/1 is not a registry schema a channel's list names: check 3c lets a
key manager's direct-mode envelope through, and check 9b then holds whatever is not a key
delivery to the channel's modes (E_VERSION); the schema list is not applied to the built-in
type, which 9b holds to key managers (E_NOT_AUTHORIZED from anyone else).
"""

from __future__ import annotations

import functools

import msgspec
from test_epoch_mode import (
    ALERT,
    ALERT_BODY,
    KM,
    T_EDIT,
    deliver,
    delivered,
    epoch_taskforce,
    key,
    receiver,
    rejected,
    trusted,
)
from tfkit import DeterministicRng, TaskForce

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.errors import RejectCode
from tfshare.seal import Recipient, seal_to


@functools.cache
def writing_key_manager(mode_policy: int) -> TaskForce:
    """The epoch task force with the key manager also a writer of "alerts"."""
    base = epoch_taskforce(mode_policy)
    _, roster = R.decode_signed_roster(encode(base.signed))
    channels = [
        msgspec.structs.replace(c, writers=sorted({*c.writers, KM})) if c.name == "alerts" else c
        for c in roster.channels
    ]
    edited = R.edit(
        base.signed, msgspec.structs.replace(roster, channels=channels), now_ms=T_EDIT + 1
    )
    signed = R.sign(edited, base.ids["coord"])
    return TaskForce(ids=base.ids, signed=signed, anchor=base.anchor, now_ms=base.now_ms)


def direct_alert(tf: TaskForce, sender: str) -> bytes:
    roster = trusted(tf)
    return seal_to(
        identity=tf.ids[sender],
        taskforce=roster.taskforce,
        channel="alerts",
        roster_seq=roster.seq,
        recipients=[Recipient(a, tf.ids[a].enc_pk) for a in roster.active_readers("alerts")],
        schema=ALERT,
        body=ALERT_BODY,
        seq=7,
        now_ms=tf.now_ms,
        rng=DeterministicRng("direct-alert"),
    ).data


def test_a_key_delivery_opens_on_an_epoch_only_channel() -> None:
    tf = epoch_taskforce(2)
    outcome = delivered(receiver(tf, "ngo").receive(deliver(tf).data))
    assert outcome.new_epoch_key == key()


def test_a_key_managers_direct_alert_on_an_epoch_only_channel_is_refused_e_version() -> None:
    """Check 3c let it through (a key manager, direct mode); it is no key delivery, so check
    9b refuses it: the channel takes epoch mode only."""
    tf = writing_key_manager(2)
    rejected(receiver(tf, "ngo").receive(direct_alert(tf, KM)), RejectCode.E_VERSION)


def test_a_key_managers_direct_alert_where_direct_is_allowed_is_delivered() -> None:
    tf = writing_key_manager(3)
    delivered(receiver(tf, "ngo").receive(direct_alert(tf, KM)))


def test_a_writers_direct_alert_on_an_epoch_only_channel_is_still_refused_at_3c() -> None:
    tf = writing_key_manager(2)
    outcome = rejected(
        receiver(tf, "ngo").receive(direct_alert(tf, "police")), RejectCode.E_VERSION
    )
    assert not outcome.verified  # refused before the signature check, as before


def test_a_key_delivery_from_a_writer_on_a_schema_restricted_channel_is_not_authorized() -> None:
    """The channel's schema list does not apply to the built-in type: the delivery from a
    writer that is no key manager is refused by check 9b, not waved through."""
    tf = epoch_taskforce(3, ("tf.alert",))
    forged = deliver(tf, sender="police", seed="forged")
    rejected(receiver(tf, "ngo").receive(forged.data), RejectCode.E_NOT_AUTHORIZED)


def test_a_key_delivery_on_a_schema_restricted_channel_is_delivered() -> None:
    tf = epoch_taskforce(3, ("tf.alert",))
    outcome = delivered(receiver(tf, "labour").receive(deliver(tf).data))
    assert outcome.new_epoch_key == key()
