"""Check 7 after a key rotation: the receiver finds its wrap under any encryption key it holds.

An agency that rotated its encryption key keeps the old secret until the grace period ends
(``Identity.enc_kids``: current first, then retired). Until then a sender whose roster still
lists the old key wraps to it, and the inbox re-opens what was received before the rotation;
once the old secret is destroyed, nothing wrapped to it opens (E_NOT_RECIPIENT).
"""

from __future__ import annotations

import msgspec
import pytest
from tfkit import DeterministicRng, TaskForce, build_taskforce, example_json

from tfshare.envelope import WRAP_SIZE, Envelope, Header, pack_wraps
from tfshare.errors import RejectCode, Rejected
from tfshare.keys import Identity
from tfshare.protocol import Delivered, Receiver, Rejection
from tfshare.replay import MemoryReplayStore
from tfshare.seal import (
    ReceivePolicy,
    Recipient,
    Sealed,
    reopen_stored,
    seal_to,
    signed_message,
)

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def tf() -> TaskForce:
    return build_taskforce()


def _rotate(ident: Identity, tag: str, now_ms: int) -> Identity:
    return ident.rotated(rng=DeterministicRng(tag), now_ms=now_ms, grace_ms=7 * DAY_MS)


def _without_retired(ident: Identity) -> Identity:
    """The same agency after its grace period: the retired secrets destroyed."""
    sign_seed, enc_sk, nats_seed = ident.secret_material()
    return Identity(
        agency_id=ident.agency_id,
        display_name=ident.display_name,
        sign_seed=sign_seed,
        enc_sk=enc_sk,
        nats_seed=nats_seed,
        created_ms=ident.created_ms,
        state_key=ident.state_key,
    )


def _sealed_to(tf: TaskForce, enc_pks: list[bytes], tag: str) -> Sealed:
    """An alert from police on "alerts", wrapped to ngo under each of ``enc_pks`` (as a sender
    whose roster lists one of them would; several: ngo and police under one key each)."""
    schema = tf.schemas.lookup("tf.alert/1")
    assert schema is not None
    recipients = [Recipient("ngo", pk) for pk in enc_pks]
    recipients.append(Recipient("police", tf.ids["police"].enc_pk))
    return seal_to(
        identity=tf.ids["police"],
        taskforce="nl-north",
        channel="alerts",
        roster_seq=tf.trusted().seq,
        recipients=recipients,
        schema=schema,
        body=schema.to_body(schema.from_json(example_json("tf.alert/1"))),
        seq=1,
        now_ms=tf.now_ms,
        rng=DeterministicRng(tag),
    )


def _receiver(tf: TaskForce, ident: Identity) -> Receiver:
    return Receiver(
        identity=ident,
        roster=tf.trusted(),
        replay=MemoryReplayStore(),
        schemas=tf.schemas,
        clock=lambda: tf.now_ms,
        policy=ReceivePolicy(),
    )


def test_an_envelope_wrapped_to_the_agencys_retired_key_opens(tf: TaskForce) -> None:
    old = tf.ids["ngo"]
    rotated = _rotate(old, "ngo-rotation", tf.now_ms)
    assert rotated.enc_pk != old.enc_pk and len(rotated.enc_kids) == 2
    sealed = _sealed_to(tf, [old.enc_pk], "to-retired")
    outcome = _receiver(tf, rotated).receive(sealed.data)
    assert isinstance(outcome, Delivered)
    assert outcome.message.msg_id == sealed.msg_id


def test_an_envelope_wrapped_to_the_new_key_opens(tf: TaskForce) -> None:
    rotated = _rotate(tf.ids["ngo"], "ngo-rotation", tf.now_ms)
    sealed = _sealed_to(tf, [rotated.enc_pk], "to-current")
    assert isinstance(_receiver(tf, rotated).receive(sealed.data), Delivered)


def test_a_key_retired_two_rotations_ago_still_opens_within_its_grace(tf: TaskForce) -> None:
    first = tf.ids["ngo"]
    twice = _rotate(_rotate(first, "once", tf.now_ms - DAY_MS), "twice", tf.now_ms)
    assert len(twice.enc_kids) == 3
    sealed = _sealed_to(tf, [first.enc_pk], "two-ago")
    assert isinstance(_receiver(tf, twice).receive(sealed.data), Delivered)


def test_an_envelope_wrapped_to_neither_key_is_not_for_this_agency(tf: TaskForce) -> None:
    rotated = _rotate(tf.ids["ngo"], "ngo-rotation", tf.now_ms)
    stranger = tf.ids["outsider"]
    sealed = _sealed_to(tf, [stranger.enc_pk], "to-neither")
    outcome = _receiver(tf, rotated).receive(sealed.data)
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_NOT_RECIPIENT


def test_once_the_retired_secret_is_destroyed_the_old_wrap_no_longer_opens(
    tf: TaskForce,
) -> None:
    old = tf.ids["ngo"]
    after_grace = _without_retired(_rotate(old, "ngo-rotation", tf.now_ms))
    assert after_grace.enc_kids == (after_grace.kid_enc,)
    sealed = _sealed_to(tf, [old.enc_pk], "to-destroyed")
    # The roster still names the old key as ngo's: whether that is said as "not for this
    # agency" (E_NOT_RECIPIENT, 7b) or as "for this agency, under a key no longer held"
    # (E_WRAP, so that it is quarantined rather than acknowledged away) is check 7's wording;
    # either way nothing opens and nothing is delivered.
    refused = {RejectCode.E_NOT_RECIPIENT, RejectCode.E_WRAP}
    outcome = _receiver(tf, after_grace).receive(sealed.data)
    assert isinstance(outcome, Rejection)
    assert outcome.code in refused
    with pytest.raises(Rejected) as caught:
        reopen_stored(sealed.data, identity=after_grace, roster=tf.trusted(), schemas=tf.schemas)
    assert caught.value.reject_code in refused


def test_the_inbox_reopens_what_was_received_before_the_rotation(tf: TaskForce) -> None:
    old = tf.ids["ngo"]
    sealed = _sealed_to(tf, [old.enc_pk], "before-rotation")
    assert isinstance(_receiver(tf, old).receive(sealed.data), Delivered)
    rotated = _rotate(old, "ngo-rotation", tf.now_ms)
    opened = reopen_stored(sealed.data, identity=rotated, roster=tf.trusted(), schemas=tf.schemas)
    assert opened.msg_id == sealed.msg_id and opened.sender == "police"


def test_a_wrap_under_the_retired_kid_that_does_not_open_is_a_wrap_error(tf: TaskForce) -> None:
    """The retired kid is found, and its own secret and public key are used: a record under
    that kid holding another key's wrap fails to open (E_WRAP), it is not skipped over."""
    old = tf.ids["ngo"]
    rotated = _rotate(old, "ngo-rotation", tf.now_ms)
    # Wrapped to the new key, then relabelled with the old key's kid (re-signed by police,
    # as a confused sender would): the old key's secret cannot open it.
    sealed = _sealed_to(tf, [rotated.enc_pk], "relabelled")
    tampered = _relabel(tf, sealed.data, rotated.kid_enc, old.kid_enc)
    outcome = _receiver(tf, rotated).receive(tampered)
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_WRAP


def _relabel(tf: TaskForce, data: bytes, kid_from: bytes, kid_to: bytes) -> bytes:
    """The envelope with one wrap's kid replaced (wraps kept sorted), re-signed by police."""
    env = msgspec.msgpack.decode(data, type=Envelope)
    hdr = msgspec.msgpack.decode(env.hdr, type=Header)
    records = [
        (hdr.wraps[i : i + 8], hdr.wraps[i + 8 : i + WRAP_SIZE])
        for i in range(0, len(hdr.wraps), WRAP_SIZE)
    ]
    relabelled = [(kid_to if kid == kid_from else kid, wct) for kid, wct in records]
    new_hdr = msgspec.msgpack.encode(msgspec.structs.replace(hdr, wraps=pack_wraps(relabelled)))
    sig = tf.ids["police"].sign(signed_message(new_hdr, env.ct))
    return msgspec.msgpack.encode(Envelope(env.v, new_hdr, env.ct, sig))
