"""Attacks on epoch mode, each refused with its code (PROTOCOL.md 8.4 checks 2f, 3c, 7a, 7d,
9d, 9e; issue 15 "Bad input"): forged, misdirected, stale and replayed key deliveries; messages
under unknown, future and superseded epochs; a removed member after the re-key; malformed
mode-2 headers. Every refused envelope leaves the replay store and the keyring unchanged.

Malformed headers are re-encrypted under the message's own K and signed again by its sender,
so the check under test, not the signature, is what stops them.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from nacl import bindings
from test_epoch_mode import (
    ALERT,
    ALERT_BODY,
    EK1,
    EK2,
    EK_OTHER,
    KM,
    S1,
    S2,
    WRITER,
    deliver,
    delivered,
    delivery_body,
    epoch_message,
    epoch_taskforce,
    key,
    receiver,
    rejected,
    removal_rosters,
    trusted,
)
from tfkit import DeterministicRng, TaskForce

from tfshare.encoding import encode
from tfshare.envelope import Envelope, Header
from tfshare.epochs import EPOCH_GRACE_MS, EPOCH_KEY_SCHEMA, EPOCH_KEY_TYPE, message_key
from tfshare.errors import RejectCode
from tfshare.keys import Identity
from tfshare.protocol import Outcome, Receiver, Rejection
from tfshare.seal import (
    L_PAYLOAD,
    Duplicate,
    Recipient,
    claimed_header,
    key_commitment,
    seal_to,
    signed_message,
)


def receive_refused(box: Receiver, data: bytes, code: RejectCode) -> Rejection:
    """Receive ``data``: refused with ``code``, replay store and keyring as they were."""
    entries = dict(box.replay.entries)  # type: ignore[attr-defined]
    keys = list(box.epochs)
    outcome: Outcome = box.receive(data)
    rejection = rejected(outcome, code)
    assert box.replay.entries == entries  # type: ignore[attr-defined]
    assert list(box.epochs) == keys
    return rejection


def resealed(data: bytes, signer: Identity, payload_key: bytes, **changes: Any) -> bytes:
    """The envelope with header fields changed, its payload re-encrypted under the new header
    with the same K, and signed again by ``signer``: a valid signature over a bad header."""
    env = msgspec.msgpack.decode(data, type=Envelope)
    hdr = msgspec.msgpack.decode(env.hdr, type=Header)
    plain = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        env.ct, L_PAYLOAD + env.hdr, hdr.nonce, payload_key
    )
    new_hdr = encode(msgspec.structs.replace(hdr, **changes))
    ct = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, L_PAYLOAD + new_hdr, hdr.nonce, payload_key
    )
    return encode(Envelope(env.v, new_hdr, ct, signer.sign(signed_message(new_hdr, ct))))


def k_of(tf: TaskForce, data: bytes, epoch_key: bytes, sender: str = WRITER) -> bytes:
    hdr = msgspec.msgpack.decode(msgspec.msgpack.decode(data, type=Envelope).hdr, type=Header)
    return message_key(epoch_key, hdr.msg_id, tf.ids[sender].kid_sig)


# ---------------------------------------------------------------------------------------------
# Key deliveries that must not be believed


def test_key_delivery_signed_by_a_writer_is_not_authorized() -> None:
    """police writes "alerts" but is no key manager: its tf.epoch-key/1 envelope (direct
    mode, validly signed and encrypted) is refused after decryption, E_NOT_AUTHORIZED."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo", keys=[key()])
    forged = deliver(tf, sender=WRITER, epoch=2, key_bytes=EK_OTHER, starts_ms=S2)
    refusal = receive_refused(box, forged.data, RejectCode.E_NOT_AUTHORIZED)
    assert refusal.verified and refusal.sender == WRITER
    assert box.epochs.get("alerts", 2) is None


def test_key_delivery_from_a_member_that_neither_writes_nor_manages_keys() -> None:
    """ngo (reader of "alerts", no writer, no key manager) is stopped at check 4e."""
    tf = epoch_taskforce()
    box = receiver(tf, "labour")
    receive_refused(box, deliver(tf, sender="ngo").data, RejectCode.E_NOT_AUTHORIZED)


def test_key_delivery_sealed_in_epoch_mode_is_e_epoch() -> None:
    """A key manager's delivery of epoch 2 sealed under epoch 1 (mode 2): E_EPOCH (9d),
    even though every reader of epoch 1 could open it."""
    tf = epoch_taskforce()
    in_epoch_mode = epoch_message(
        tf,
        key(),
        sender=KM,
        schema=EPOCH_KEY_TYPE,
        body=delivery_body(epoch=2, key_bytes=EK2, starts_ms=S2, reason="members"),
        seed="delivery-in-mode-2",
    )
    box = receiver(tf, "ngo", keys=[key()])
    receive_refused(box, in_epoch_mode.data, RejectCode.E_EPOCH)
    assert box.epochs.get("alerts", 2) is None


def test_key_delivery_naming_another_channel_is_e_body() -> None:
    """A delivery on "alerts" whose body is the key of "tips": E_BODY (9d) -- else a key
    manager's envelope for one channel could plant a key in another."""
    tf = epoch_taskforce()
    box = receiver(tf, "police")
    receive_refused(box, deliver(tf, body=delivery_body(channel="tips")).data, RejectCode.E_BODY)
    assert box.epochs.get("tips", 1) is None


def test_key_delivery_for_a_channel_the_receiver_does_not_read() -> None:
    """labour does not read "tips"; a delivery for "tips" wrapped to it anyway is refused
    at 7a, E_NOT_RECIPIENT."""
    tf = epoch_taskforce()
    misdirected = deliver(tf, channel="tips", to=["police", "labour"])
    box = receiver(tf, "labour")
    receive_refused(box, misdirected.data, RejectCode.E_NOT_RECIPIENT)
    assert len(box.epochs) == 0
    # police, a reader of "tips", takes it.
    assert delivered(receiver(tf, "police").receive(misdirected.data)).new_epoch_key is not None


def test_key_delivery_older_than_the_epoch_held_is_e_epoch() -> None:
    """Holding epoch 2, a (new, validly signed) delivery of epoch 1: E_EPOCH (9e) -- a
    withheld old key must not roll the channel back."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo", keys=[key(2, EK2, S2)])
    receive_refused(box, deliver(tf).data, RejectCode.E_EPOCH)
    assert box.epochs.get("alerts", 1) is None


def test_second_different_key_for_a_held_epoch_is_e_epoch() -> None:
    """Same epoch, other key (an equivocating key manager): E_EPOCH; the first key stays."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo", keys=[key()])
    receive_refused(box, deliver(tf, key_bytes=EK_OTHER).data, RejectCode.E_EPOCH)
    held = box.epochs.get("alerts", 1)
    assert held is not None and held.key == EK1


def test_same_epoch_and_key_with_another_start_is_e_epoch() -> None:
    tf = epoch_taskforce()
    box = receiver(tf, "ngo", keys=[key()])
    receive_refused(box, deliver(tf, starts_ms=S1 + 1).data, RejectCode.E_EPOCH)


def test_replayed_key_delivery_is_duplicate() -> None:
    """The same delivery envelope again is DUPLICATE (check 6), not a second delivery."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo")
    data = deliver(tf).data
    delivered(box.receive(data))
    entries = dict(box.replay.entries)  # type: ignore[attr-defined]
    assert isinstance(box.receive(data), Duplicate)
    assert box.replay.entries == entries  # type: ignore[attr-defined]


def test_replayed_old_delivery_after_a_rotation_is_duplicate_not_e_epoch() -> None:
    """Epoch 1's delivery replayed after epoch 2 arrived: the replay store recognises it
    (DUPLICATE: acknowledge), although as a new delivery it would be older than held."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo")
    first = deliver(tf).data
    delivered(box.receive(first))
    delivered(box.receive(deliver(tf, seed="d2", seq=2, epoch=2, key_bytes=EK2, starts_ms=S2).data))
    assert isinstance(box.receive(first), Duplicate)
    assert [k.epoch for k in box.epochs] == [1, 2]


def test_delivery_with_the_same_msg_id_and_other_content_is_equivocation() -> None:
    """Same (sender_kid, msg_id), another key: E_EQUIVOCATION (same rng seed, other body)."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo")
    delivered(box.receive(deliver(tf).data))
    other = deliver(tf, epoch=2, key_bytes=EK2, starts_ms=S2).data  # same seed: same msg_id
    receive_refused(box, other, RejectCode.E_EQUIVOCATION)


# ---------------------------------------------------------------------------------------------
# Messages under epochs the receiver must not use


def test_message_under_a_future_epoch_is_e_epoch_and_marked_ahead() -> None:
    """Epoch 2 while only epoch 1 is held: E_EPOCH with epoch_ahead (its key may be behind
    it in the stream), and nothing recorded, so a redelivery can still open it."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo", keys=[key()])
    message = epoch_message(tf, key(2, EK2, S2))
    refusal = receive_refused(box, message.data, RejectCode.E_EPOCH)
    assert refusal.epoch_ahead is True
    assert refusal.verified is True
    # Its key arrives; the same envelope now opens.
    delivered(box.receive(deliver(tf, epoch=2, key_bytes=EK2, starts_ms=S2).data))
    assert delivered(box.receive(message.data)).message.epoch == 2


def test_message_under_an_unknown_epoch_with_no_key_at_all_is_ahead() -> None:
    tf = epoch_taskforce()
    refusal = receive_refused(
        receiver(tf, "ngo"), epoch_message(tf, key()).data, RejectCode.E_EPOCH
    )
    assert refusal.epoch_ahead is True


def test_message_under_a_deleted_older_epoch_is_e_epoch_not_ahead() -> None:
    """Epoch 1 when only epoch 2 is held (deleted after retention, or never delivered): not
    ahead -- waiting will not bring its key."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo", keys=[key(2, EK2, S2)])
    refusal = receive_refused(box, epoch_message(tf, key(), now_ms=S1).data, RejectCode.E_EPOCH)
    assert refusal.epoch_ahead is False


@pytest.mark.parametrize(
    ("offset", "accepted"), [(-1, True), (0, True), (1, False), (3_600_000, False)]
)
def test_superseded_epoch_is_refused_after_successor_start_plus_grace(
    offset: int, accepted: bool
) -> None:
    """Epoch 1 once epoch 2 started at S2: accepted up to ts_ms = S2 + 15 min inclusive,
    E_EPOCH one millisecond later (the receiver's clock equals ts_ms: in its window)."""
    tf = epoch_taskforce()
    ts = S2 + EPOCH_GRACE_MS + offset
    box = receiver(tf, "ngo", keys=[key(), key(2, EK2, S2)], now_ms=ts)
    data = epoch_message(tf, key(), now_ms=ts).data
    if accepted:
        assert delivered(box.receive(data)).message.epoch == 1
    else:
        refusal = receive_refused(box, data, RejectCode.E_EPOCH)
        assert refusal.epoch_ahead is False


def test_re_signed_epoch_number_gives_e_commit_or_e_epoch() -> None:
    """A writer re-signing a message with another epoch number gets E_EPOCH (the epoch is
    not held) or, for a held epoch, E_COMMIT: K depends on the epoch key named."""
    tf = epoch_taskforce()
    sealed = epoch_message(tf, key())
    k = k_of(tf, sealed.data, EK1)
    box = receiver(tf, "ngo", keys=[key(), key(2, EK2, S2)])
    receive_refused(box, resealed(sealed.data, tf.ids[WRITER], k, epoch=2), RejectCode.E_COMMIT)
    box = receiver(tf, "ngo", keys=[key()])
    refusal = receive_refused(
        box, resealed(sealed.data, tf.ids[WRITER], k, epoch=7), RejectCode.E_EPOCH
    )
    assert refusal.epoch_ahead is True


# ---------------------------------------------------------------------------------------------
# A removed member after the re-key


def test_removed_member_cannot_open_the_new_epoch() -> None:
    """ngo is removed (roster seq n+1) and the key manager re-keys the channel to the
    remaining readers. ngo still holds epoch 1. A message under epoch 2:
    - with the new roster, ngo is no reader: E_NOT_RECIPIENT (7a);
    - even with the old roster, where it still reads, it never got epoch 2: E_EPOCH;
    - the re-key's delivery itself is not addressed to it: E_NOT_RECIPIENT.
    The remaining readers open the message."""
    tf = epoch_taskforce()
    before, after = removal_rosters()
    roster_after = trusted(tf, after)
    assert "ngo" not in roster_after.active_readers("alerts")
    rekey = deliver(
        tf,
        roster=roster_after,
        epoch=2,
        key_bytes=EK2,
        starts_ms=S2,
        reason="members",
        seed="rekey",
        seq=2,
    )
    message = epoch_message(tf, key(2, EK2, S2), roster_seq=roster_after.seq, seed="after")

    # ngo under the new roster
    removed_now = receiver(tf, "ngo", keys=[key()], signed=after)
    receive_refused(removed_now, message.data, RejectCode.E_NOT_RECIPIENT)
    receive_refused(removed_now, rekey.data, RejectCode.E_NOT_RECIPIENT)
    # ngo still trusting the roster from before its removal
    stale = receiver(tf, "ngo", keys=[key()], signed=before)
    receive_refused(stale, rekey.data, RejectCode.E_NOT_RECIPIENT)  # no wrap for ngo
    refusal = receive_refused(stale, message.data, RejectCode.E_EPOCH)
    assert refusal.epoch_ahead is True
    assert [k.epoch for k in stale.epochs] == [1]

    # labour, who stayed, gets the key and reads the message
    labour = receiver(tf, "labour", keys=[key()], signed=after)
    assert delivered(labour.receive(rekey.data)).new_epoch_key == key(2, EK2, S2)
    assert delivered(labour.receive(message.data)).message.sender == WRITER


def test_removed_member_with_the_old_key_cannot_derive_the_new_message_key() -> None:
    """What ngo holds (EK1) gives a K that fails the new message's commitment."""
    tf = epoch_taskforce()
    message = epoch_message(tf, key(2, EK2, S2))
    hdr = claimed_header(message.data)
    assert key_commitment(message_key(EK1, hdr.msg_id, hdr.sender_kid), hdr.msg_id) != hdr.commit
    assert key_commitment(message_key(EK2, hdr.msg_id, hdr.sender_kid), hdr.msg_id) == hdr.commit


# ---------------------------------------------------------------------------------------------
# Malformed mode-2 headers and channel policy


@pytest.mark.parametrize(
    "changes",
    [
        {"eph_pk": bytes(range(32))},
        {"wraps": bytes(56)},
        {"epoch": 0},
        {"eph_pk": bytes(range(32)), "wraps": bytes(56), "epoch": 0},
    ],
    ids=["eph_pk", "wraps", "epoch_0", "all_three"],
)
def test_mode_2_header_with_mode_1_fields_is_malformed(changes: dict[str, Any]) -> None:
    """Check 2f: in mode 2, eph_pk and wraps are empty and epoch >= 1, else E_MALFORMED
    (validly signed, payload re-encrypted under the changed header)."""
    tf = epoch_taskforce()
    sealed = epoch_message(tf, key())
    bad = resealed(sealed.data, tf.ids[WRITER], k_of(tf, sealed.data, EK1), **changes)
    receive_refused(receiver(tf, "ngo", keys=[key()]), bad, RejectCode.E_MALFORMED)


def test_mode_1_header_claiming_an_epoch_is_malformed() -> None:
    """The converse: a direct-mode envelope with epoch 1: E_MALFORMED."""
    tf = epoch_taskforce()
    data = deliver(tf).data
    env = msgspec.msgpack.decode(data, type=Envelope)
    hdr = msgspec.msgpack.decode(env.hdr, type=Header)
    new_hdr = encode(msgspec.structs.replace(hdr, epoch=1))
    forged = encode(
        Envelope(env.v, new_hdr, env.ct, tf.ids[KM].sign(signed_message(new_hdr, env.ct)))
    )
    receive_refused(receiver(tf, "ngo"), forged, RejectCode.E_MALFORMED)


def test_direct_only_channel_refuses_a_mode_2_envelope_with_e_version() -> None:
    """mode_policy 1: a (valid) epoch-mode envelope is refused at 3c, E_VERSION."""
    tf = epoch_taskforce(1)
    box = receiver(tf, "ngo", keys=[key()])
    receive_refused(box, epoch_message(tf, key()).data, RejectCode.E_VERSION)


def test_epoch_only_channel_refuses_an_ordinary_direct_mode_message() -> None:
    """mode_policy 2: a direct-mode alert is refused at 3c, E_VERSION."""
    tf = epoch_taskforce(2)
    direct = seal_to(  # the construction itself: seal() would refuse (epoch mode only)
        identity=tf.ids[WRITER],
        taskforce="nl-north",
        channel="alerts",
        roster_seq=trusted(tf).seq,
        recipients=[Recipient("ngo", tf.ids["ngo"].enc_pk)],
        schema=ALERT,
        body=ALERT_BODY,
        seq=1,
        now_ms=tf.now_ms,
        rng=DeterministicRng("direct-on-epoch-only"),
    )
    receive_refused(receiver(tf, "ngo"), direct.data, RejectCode.E_VERSION)


# ---------------------------------------------------------------------------------------------
# Who may send what (9d)


def test_non_key_manager_writer_cannot_send_a_key_delivery_even_in_direct_mode() -> None:
    """labour (a writer) sends tf.epoch-key/1 in direct mode, to every reader: refused by
    each with E_NOT_AUTHORIZED, and no reader's keyring changes."""
    tf = epoch_taskforce()
    forged = deliver(tf, sender="labour", seed="labour-key")
    for agency in ("coord", "police", "ngo"):
        box = receiver(tf, agency)
        receive_refused(box, forged.data, RejectCode.E_NOT_AUTHORIZED)
        assert len(box.epochs) == 0


def test_key_manager_that_is_not_a_writer_cannot_send_an_alert() -> None:
    """keyman passes check 4e (key managers publish on every channel) but an ordinary
    alert from it is refused after decryption (9d), E_NOT_AUTHORIZED, in both modes."""
    tf = epoch_taskforce()
    assert KM not in trusted(tf).writers["alerts"]
    in_epoch = epoch_message(tf, key(), sender=KM, seed="km-alert")
    receive_refused(receiver(tf, "ngo", keys=[key()]), in_epoch.data, RejectCode.E_NOT_AUTHORIZED)
    roster = trusted(tf)
    alert = seal_to(
        identity=tf.ids[KM],
        taskforce="nl-north",
        channel="alerts",
        roster_seq=roster.seq,
        recipients=[Recipient("ngo", tf.ids["ngo"].enc_pk)],
        schema=ALERT,
        body=ALERT_BODY,
        seq=3,
        now_ms=tf.now_ms,
        rng=DeterministicRng("km-direct-alert"),
    )
    receive_refused(receiver(tf, "ngo"), alert.data, RejectCode.E_NOT_AUTHORIZED)


def test_delivery_schema_name_is_built_in() -> None:
    assert EPOCH_KEY_SCHEMA == "tf.epoch-key/1"
