"""Epoch mode (envelope mode 2) in the pure core: the kit the epoch tests share, and the
honest paths.

A task force whose channel "alerts" allows epoch mode (``mode_policy`` 2 or 3) and which has a
key manager ("keyman", roles member and key-manager, a reader of "alerts" but no writer). The
key manager delivers epoch keys as direct-mode ``tf.epoch-key/1`` envelopes (``deliver``);
writers seal under an epoch key (``epoch_message``); receivers hold an ``EpochKeyring``.
Everything is real (keys, signatures, encryption); randomness and clock are fixed.

The refusals (attacks.md's rows for epoch mode) are in test_epoch_mode_attacks.py.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import msgspec
import pytest
from nacl import bindings
from tfkit import NOW_MS, SCHEMAS, DeterministicRng, TaskForce, build_taskforce, example_record

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.envelope import Envelope, Header, Mode
from tfshare.epochs import (
    DIRECT_AUDIENCE_MAX,
    EPOCH_GRACE_MS,
    EPOCH_KEY_RETENTION_MS,
    EPOCH_KEY_SCHEMA,
    EPOCH_KEY_TYPE,
    DeliveryReason,
    EpochKey,
    EpochKeyDelivery,
    EpochKeyring,
    channel_readers_digest,
    choose_mode,
    message_key,
)
from tfshare.errors import RejectCode, Rejected, TrustError
from tfshare.messages import MessageType
from tfshare.protocol import Delivered, Outcome, Receiver, Rejection, log_event
from tfshare.registry.schema import Schema
from tfshare.replay import MemoryReplayStore
from tfshare.seal import (
    L_PAYLOAD,
    Duplicate,
    ReceivePolicy,
    Recipient,
    Sealed,
    claimed_header,
    key_commitment,
    open_with_key,
    payload_key_of,
    reopen_stored,
    seal,
    seal_to,
    seal_to_epoch,
    signed_message,
)

# ---------------------------------------------------------------------------------------------
# The kit

KM = "keyman"
WRITER = "police"
EK1 = bytes(range(0x10, 0x30))  # fixed epoch keys: recognisable in a leak check
EK2 = bytes(range(0x30, 0x50))
EK_OTHER = bytes(range(0x50, 0x70))
T_EDIT = NOW_MS - 3_000_000  # when the epoch roster was made (after build_taskforce's edits)
S1 = NOW_MS - 2_000_000  # epoch 1 starts
S2 = NOW_MS - 600_000  # epoch 2 starts (a re-key 10 minutes ago)


def _schema(name: str) -> Schema:
    found = SCHEMAS.lookup(name)
    assert found is not None
    return found


ALERT = _schema("tf.alert/1")
ALERT_BODY = ALERT.to_body(example_record("tf.alert/1"))
ALERT_RECORD = msgspec.to_builtins(ALERT.from_body(ALERT_BODY))


@functools.cache
def epoch_taskforce(mode_policy: int = 3, schemas: tuple[str, ...] = ()) -> TaskForce:
    """build_taskforce's task force plus "keyman" (member + key-manager, reads "alerts",
    writes nothing), with "alerts" at ``mode_policy`` (and restricted to ``schemas`` if any).
    The channel is changed with msgspec.structs.replace before signing, as coordinators'
    tools would (grant makes mode_policy 1)."""
    base = build_taskforce(members=("police", "ngo", "labour", KM))
    _, roster = R.decode_signed_roster(encode(base.signed))
    members = [
        msgspec.structs.replace(m, roles=["member", "key-manager"]) if m.agency_id == KM else m
        for m in roster.members
    ]
    channels = [
        msgspec.structs.replace(c, mode_policy=mode_policy, schemas=sorted(schemas))
        if c.name == "alerts"
        else c
        for c in roster.channels
    ]
    roster = msgspec.structs.replace(roster, members=members, channels=channels)
    signed = R.sign(R.edit(base.signed, roster, now_ms=T_EDIT), base.ids["coord"])
    return TaskForce(ids=base.ids, signed=signed, anchor=base.anchor, now_ms=base.now_ms)


def trusted(tf: TaskForce, signed: R.SignedRoster | None = None) -> R.TrustedRoster:
    data = encode(signed if signed is not None else tf.signed)
    roster, _ = R.verify_roster(data, anchor=tf.anchor, state=None, now_ms=tf.now_ms)
    return roster


@functools.cache
def removal_rosters() -> tuple[R.SignedRoster, R.SignedRoster]:
    """The epoch task force's roster before and after ngo's removal (revoked, retired, at
    S2: the re-key that follows starts epoch 2)."""
    tf = epoch_taskforce()
    after = R.sign(R.revoke(tf.signed, "ngo", reason="retired", now_ms=S2), tf.ids["coord"])
    return tf.signed, after


@functools.cache
def alerts_readers() -> bytes:
    """The reader-set digest of "alerts" in ``epoch_taskforce`` (any mode policy: the
    readers are the same): what the kit's keys and deliveries name by default."""
    return channel_readers_digest(trusted(epoch_taskforce()), "alerts")


def key(
    epoch: int = 1, key_bytes: bytes = EK1, starts_ms: int = S1, readers: bytes | None = None
) -> EpochKey:
    """An "alerts" key as a delivery gives it: made for ``readers`` (default: the epoch
    task force's readers of "alerts")."""
    made_for = alerts_readers() if readers is None else readers
    return EpochKey("alerts", epoch, key_bytes, starts_ms, made_for)


def keyring(*keys: EpochKey) -> EpochKeyring:
    return EpochKeyring(keys)


def delivery_body(
    *,
    channel: str = "alerts",
    epoch: int = 1,
    key_bytes: bytes = EK1,
    starts_ms: int = S1,
    reason: DeliveryReason = "initial",
    readers: bytes | None = None,
) -> bytes:
    made_for = alerts_readers() if readers is None else readers
    return encode(EpochKeyDelivery(channel, epoch, key_bytes, starts_ms, reason, made_for))


def deliver(
    tf: TaskForce,
    *,
    to: Sequence[str] | None = None,
    sender: str = KM,
    channel: str = "alerts",
    body: bytes | None = None,
    roster: R.TrustedRoster | None = None,
    seed: str = "delivery",
    seq: int = 1,
    now_ms: int | None = None,
    epoch: int = 1,
    key_bytes: bytes = EK1,
    starts_ms: int = S1,
    reason: DeliveryReason = "initial",
    made_for: bytes | None = None,
) -> Sealed:
    """A key delivery as the key manager makes it: direct mode, tf.epoch-key/1, to ``to``
    (default: the channel's active readers), naming the reader set ``made_for`` (default:
    ``alerts_readers()``)."""
    roster = roster if roster is not None else trusted(tf)
    readers = list(to) if to is not None else roster.active_readers(channel)
    return seal_to(
        identity=tf.ids[sender],
        taskforce=roster.taskforce,
        channel=channel,
        roster_seq=roster.seq,
        recipients=[Recipient(a, tf.ids[a].enc_pk) for a in readers],
        schema=EPOCH_KEY_TYPE,
        body=body
        if body is not None
        else delivery_body(
            channel=channel,
            epoch=epoch,
            key_bytes=key_bytes,
            starts_ms=starts_ms,
            reason=reason,
            readers=made_for,
        ),
        seq=seq,
        now_ms=tf.now_ms if now_ms is None else now_ms,
        rng=DeterministicRng(seed),
    )


def epoch_message(
    tf: TaskForce,
    epoch_key: EpochKey,
    *,
    sender: str = WRITER,
    schema: MessageType = ALERT,
    body: bytes = ALERT_BODY,
    seed: str = "epoch-message",
    seq: int = 1,
    now_ms: int | None = None,
    roster_seq: int | None = None,
) -> Sealed:
    """A mode-2 message from ``sender`` under ``epoch_key``."""
    return seal_to_epoch(
        identity=tf.ids[sender],
        taskforce="nl-north",
        channel=epoch_key.channel,
        roster_seq=trusted(tf).seq if roster_seq is None else roster_seq,
        epoch_key=epoch_key,
        schema=schema,
        body=body,
        seq=seq,
        now_ms=tf.now_ms if now_ms is None else now_ms,
        rng=DeterministicRng(seed),
    )


def receiver(
    tf: TaskForce,
    agency: str,
    *,
    keys: Iterable[EpochKey] = (),
    now_ms: int | None = None,
    signed: R.SignedRoster | None = None,
    replay: MemoryReplayStore | None = None,
) -> Receiver:
    clock_value = tf.now_ms if now_ms is None else now_ms
    return Receiver(
        identity=tf.ids[agency],
        roster=trusted(tf, signed),
        replay=replay if replay is not None else MemoryReplayStore(),
        schemas=tf.schemas,
        clock=lambda: clock_value,
        policy=ReceivePolicy(),
        epochs=EpochKeyring(keys),
    )


def rejected(outcome: Outcome, code: RejectCode) -> Rejection:
    """``outcome`` is a rejection with exactly ``code``; its log event carries the code."""
    assert isinstance(outcome, Rejection), f"expected {code}, got {outcome!r}"
    assert outcome.code is code, f"expected {code}, got {outcome.code}: {outcome.reason}"
    assert log_event(outcome)[1]["code"] == code.value
    return outcome


def delivered(outcome: Outcome) -> Delivered:
    assert isinstance(outcome, Delivered), f"not delivered: {outcome!r}"
    return outcome


def plain_of(data: bytes, payload_key: bytes) -> list[object]:
    """Decrypt an envelope's payload with ``payload_key`` (raw libsodium): [schema, fp,
    body, pad]."""
    env = msgspec.msgpack.decode(data, type=Envelope)
    hdr = msgspec.msgpack.decode(env.hdr, type=Header)
    plain = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        env.ct, L_PAYLOAD + env.hdr, hdr.nonce, payload_key
    )
    decoded: list[object] = msgspec.msgpack.decode(plain)
    return decoded


# ---------------------------------------------------------------------------------------------
# Seal and open in epoch mode


@pytest.mark.parametrize("mode_policy", [2, 3])
def test_epoch_message_opens_for_every_reader_holding_the_key(mode_policy: int) -> None:
    """A mode-2 message under epoch 1 opens for each reader that holds EK1, to the alert."""
    tf = epoch_taskforce(mode_policy)
    sealed = epoch_message(tf, key())
    for agency in ("coord", "police", "ngo", "labour", KM):
        message = delivered(receiver(tf, agency, keys=[key()]).receive(sealed.data)).message
        assert (message.sender, message.channel, message.epoch) == (WRITER, "alerts", 1)
        assert message.schema == "tf.alert/1"
        assert msgspec.to_builtins(message.record) == ALERT_RECORD
        assert message.recipients == ()  # no wraps: every reader of the epoch


def test_epoch_header_carries_no_wraps_and_k_is_derived_from_the_epoch_key() -> None:
    """Header: mode 2, epoch 1, empty eph_pk and wraps; commit binds K = H(msgkey..., EK)."""
    tf = epoch_taskforce()
    sealed = epoch_message(tf, key())
    hdr = claimed_header(sealed.data)
    assert (hdr.mode, hdr.epoch, hdr.eph_pk, hdr.wraps) == (Mode.EPOCH, 1, b"", b"")
    assert (sealed.epoch, sealed.recipients) == (1, ())
    k = message_key(EK1, hdr.msg_id, tf.ids[WRITER].kid_sig)
    assert hdr.commit == key_commitment(k, hdr.msg_id)
    schema, _, body, _ = plain_of(sealed.data, k)
    assert (schema, body) == ("tf.alert/1", ALERT_BODY)


def test_sealing_under_a_key_for_another_channel_is_refused() -> None:
    """seal_to_epoch will not seal "alerts" with a key of "tips"."""
    tf = epoch_taskforce()
    with pytest.raises(ValueError):
        seal_to_epoch(
            identity=tf.ids[WRITER],
            taskforce="nl-north",
            channel="alerts",
            roster_seq=trusted(tf).seq,
            epoch_key=EpochKey("tips", 1, EK1, S1),
            schema=ALERT,
            body=ALERT_BODY,
            seq=1,
            now_ms=tf.now_ms,
            rng=DeterministicRng("x"),
        )


# ---------------------------------------------------------------------------------------------
# The sender's choice


def _choose(mode_policy: int, readers: int, *, to: bool = False, held: bool = True) -> Mode:
    return choose_mode(
        channel="alerts",
        mode_policy=mode_policy,
        active_readers=readers,
        named_recipients=to,
        current=key() if held else None,
    ).mode


def test_named_recipients_are_always_direct() -> None:
    assert _choose(3, 10_000, to=True) is Mode.DIRECT
    assert _choose(1, 5, to=True) is Mode.DIRECT


def test_both_modes_allowed_switches_to_epoch_above_64_readers() -> None:
    """Both allowed: direct up to DIRECT_AUDIENCE_MAX readers, epoch above (with a key)."""
    assert DIRECT_AUDIENCE_MAX == 64
    assert _choose(3, 64) is Mode.DIRECT
    assert _choose(3, 65) is Mode.EPOCH
    assert _choose(3, 20_000) is Mode.EPOCH
    # No key held yet: direct while direct can carry it, then a refusal.
    assert _choose(3, 200, held=False) is Mode.DIRECT
    with pytest.raises(TrustError, match="no epoch key"):
        _choose(3, 257, held=False)


def test_epoch_only_channel_is_epoch_at_any_size_and_refuses_without_a_key() -> None:
    assert _choose(2, 1) is Mode.EPOCH
    with pytest.raises(TrustError, match="no epoch key for channel 'alerts' yet") as raised:
        _choose(2, 1, held=False)
    assert raised.value.exit_code == 6


def test_epoch_only_channel_refuses_named_recipients() -> None:
    with pytest.raises(TrustError, match="epoch mode only") as raised:
        _choose(2, 10, to=True)
    assert raised.value.exit_code == 6


def test_direct_only_channel_refuses_more_than_256_readers() -> None:
    assert _choose(1, 256) is Mode.DIRECT
    with pytest.raises(TrustError, match="direct mode takes at most 256") as raised:
        _choose(1, 257)
    assert raised.value.exit_code == 6


def _seal(tf: TaskForce, *, to: Sequence[str] | None = None, held: bool = True) -> Sealed:
    return seal(
        identity=tf.ids[WRITER],
        roster=trusted(tf),
        channel="alerts",
        to=to,
        schema=ALERT,
        body=ALERT_BODY,
        seq=1,
        now_ms=tf.now_ms,
        rng=DeterministicRng("seal"),
        epochs=keyring(key(), key(2, EK2, S2)) if held else None,
    )


def test_seal_on_an_epoch_only_channel_uses_the_current_epoch() -> None:
    """seal() on a mode_policy 2 channel: mode 2 under the highest started epoch held."""
    tf = epoch_taskforce(2)
    sealed = _seal(tf)
    hdr = claimed_header(sealed.data)
    assert (hdr.mode, hdr.epoch) == (Mode.EPOCH, 2)
    delivered(receiver(tf, "ngo", keys=[key(), key(2, EK2, S2)]).receive(sealed.data))


def test_seal_on_an_epoch_only_channel_without_a_key_or_with_to_is_a_trust_error() -> None:
    tf = epoch_taskforce(2)
    with pytest.raises(TrustError, match="no epoch key"):
        _seal(tf, held=False)
    with pytest.raises(TrustError, match="epoch mode only"):
        _seal(tf, to=["ngo"])


def test_seal_with_both_modes_and_a_small_audience_stays_direct() -> None:
    """Five active readers (<= 64): direct mode, wraps to each, even with a key held."""
    tf = epoch_taskforce(3)
    hdr = claimed_header(_seal(tf).data)
    assert (hdr.mode, hdr.epoch) == (Mode.DIRECT, 0)
    assert len(hdr.wraps) // 56 == 5


def test_current_epoch_is_the_highest_started_one() -> None:
    ring = keyring(key(), key(2, EK2, S2), key(3, EK_OTHER, NOW_MS + 60_000))
    current = ring.current("alerts", NOW_MS)
    assert current is not None and current.epoch == 2
    later = ring.current("alerts", NOW_MS + 60_000)
    assert later is not None and later.epoch == 3
    assert ring.current("alerts", S1 - 1) is None
    assert ring.current("tips", NOW_MS) is None


# ---------------------------------------------------------------------------------------------
# Key delivery


def test_key_delivery_from_the_key_manager_adds_the_key() -> None:
    """A tf.epoch-key/1 envelope from keyman is delivered; the key goes into
    Receiver.epochs and is handed to the caller as Delivered.new_epoch_key."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo")
    outcome = delivered(box.receive(deliver(tf).data))
    assert outcome.message.schema == EPOCH_KEY_SCHEMA
    assert outcome.message.sender == KM
    assert outcome.new_epoch_key == key()
    assert box.epochs.get("alerts", 1) == key()
    assert isinstance(outcome.message.record, EpochKeyDelivery)
    # With it, a message under epoch 1 opens.
    delivered(box.receive(epoch_message(tf, key()).data))


def test_key_delivery_works_on_an_epoch_only_channel() -> None:
    """On a channel that takes epoch mode only (mode_policy 2) the key deliveries are still
    direct mode (design: an ordinary direct-mode envelope on the channel concerned), so
    check 3c must not refuse them with E_VERSION: without its keys such a channel carries
    nothing at all."""
    tf = epoch_taskforce(2)
    box = receiver(tf, "labour")
    outcome = delivered(box.receive(deliver(tf).data))
    assert outcome.new_epoch_key == key()


def test_key_delivery_on_a_channel_restricted_to_some_schemas_is_accepted() -> None:
    """A channel whose schema list is ["tf.alert"] still takes its key deliveries: the
    built-in tf.epoch-key/1 is not a registry schema a coordinator can list, and without it
    the channel could never be used in epoch mode."""
    tf = epoch_taskforce(3, ("tf.alert",))
    box = receiver(tf, "labour")
    outcome = delivered(box.receive(deliver(tf).data))
    assert outcome.new_epoch_key == key()


def test_resent_key_is_delivered_and_changes_nothing() -> None:
    """Same epoch, same key, a new envelope (a resend): delivered, new_epoch_key None."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo")
    delivered(box.receive(deliver(tf).data))
    again = delivered(box.receive(deliver(tf, seed="resend", seq=2, reason="resend").data))
    assert again.new_epoch_key is None
    assert list(box.epochs) == [key()]


def test_newer_epoch_is_added_beside_the_old_one() -> None:
    tf = epoch_taskforce()
    box = receiver(tf, "ngo")
    delivered(box.receive(deliver(tf).data))
    outcome = delivered(
        box.receive(
            deliver(
                tf, seed="d2", seq=2, epoch=2, key_bytes=EK2, starts_ms=S2, reason="members"
            ).data
        )
    )
    assert outcome.new_epoch_key == key(2, EK2, S2)
    assert [k.epoch for k in box.epochs] == [1, 2]
    assert box.epochs.successor_start("alerts", 1) == S2
    assert box.epochs.successor_start("alerts", 2) is None


def test_rejected_delivery_adds_no_key() -> None:
    """A key delivery refused (here: sent by a writer) leaves the keyring as it was."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo")
    rejected(box.receive(deliver(tf, sender=WRITER).data), RejectCode.E_NOT_AUTHORIZED)
    assert len(box.epochs) == 0


# ---------------------------------------------------------------------------------------------
# Stored messages and disclosure


def test_reopen_stored_opens_a_mode_2_message_with_the_epoch_key_held() -> None:
    """reopen_stored: a stored epoch message opens again while its key is held, even past
    the grace (it was accepted when it came); without the key, E_EPOCH."""
    tf = epoch_taskforce()
    sealed = epoch_message(tf, key(), now_ms=S2 - 1)
    held = keyring(key(), key(2, EK2, S2))
    opened = reopen_stored(
        sealed.data, identity=tf.ids["ngo"], roster=trusted(tf), schemas=tf.schemas, epochs=held
    )
    assert (opened.epoch, opened.schema, opened.sender) == (1, "tf.alert/1", WRITER)
    with pytest.raises(Rejected) as raised:
        reopen_stored(
            sealed.data,
            identity=tf.ids["ngo"],
            roster=trusted(tf),
            schemas=tf.schemas,
            epochs=keyring(key(2, EK2, S2)),
        )
    assert raised.value.reject_code is RejectCode.E_EPOCH
    with pytest.raises(Rejected) as raised:
        reopen_stored(sealed.data, identity=tf.ids["ngo"], roster=trusted(tf), schemas=tf.schemas)
    assert raised.value.reject_code is RejectCode.E_EPOCH


def test_disclosed_message_key_opens_that_message_only_and_is_not_the_epoch_key() -> None:
    """payload_key_of in mode 2 gives K = message_key(EK, msg_id, sender_kid) != EK;
    open_with_key opens the message with it, and the same K does not open another message
    of the same epoch (E_COMMIT)."""
    tf = epoch_taskforce()
    roster = trusted(tf)
    first = epoch_message(tf, key(), seed="first")
    second = epoch_message(tf, key(), seed="second", seq=2)
    k = payload_key_of(
        first.data,
        identity=tf.ids["ngo"],
        roster=roster,
        now_ms=tf.now_ms,
        policy=ReceivePolicy(),
        epochs=keyring(key()),
    )
    assert k == message_key(EK1, first.msg_id, tf.ids[WRITER].kid_sig)
    assert k != EK1
    verified, schema, record = open_with_key(
        first.data, k, roster=roster, schemas=tf.schemas, now_ms=tf.now_ms, policy=ReceivePolicy()
    )
    assert (verified.header.epoch, schema) == (1, "tf.alert/1")
    assert msgspec.to_builtins(record) == ALERT_RECORD
    with pytest.raises(Rejected) as raised:
        open_with_key(
            second.data,
            k,
            roster=roster,
            schemas=tf.schemas,
            now_ms=tf.now_ms,
            policy=ReceivePolicy(),
        )
    assert raised.value.reject_code is RejectCode.E_COMMIT


def test_payload_key_of_without_the_epoch_key_is_e_epoch() -> None:
    tf = epoch_taskforce()
    with pytest.raises(Rejected) as raised:
        payload_key_of(
            epoch_message(tf, key()).data,
            identity=tf.ids["ngo"],
            roster=trusted(tf),
            now_ms=tf.now_ms,
            policy=ReceivePolicy(),
            epochs=keyring(key(2, EK2, S2)),
        )
    assert raised.value.reject_code is RejectCode.E_EPOCH


# ---------------------------------------------------------------------------------------------
# The keyring


def test_superseded_key_expires_after_its_successor_start_plus_retention() -> None:
    """expired(): a key whose successor started more than EPOCH_KEY_RETENTION_MS ago; the
    edge itself is kept; the newest key never expires."""
    ring = keyring(key(), key(2, EK2, S2))
    assert ring.expired(S2 + EPOCH_KEY_RETENTION_MS) == []
    assert ring.expired(S2 + EPOCH_KEY_RETENTION_MS + 1) == [key()]
    assert ring.expired(S2 + 100 * EPOCH_KEY_RETENTION_MS) == [key()]
    ring.remove(ring.expired(S2 + EPOCH_KEY_RETENTION_MS + 1))
    assert list(ring) == [key(2, EK2, S2)]
    assert ring.expired(2**53 - 1) == []  # alone, the newest key is never expired
    assert EPOCH_KEY_RETENTION_MS == 44 * 24 * 3600 * 1000


def test_expiry_is_per_channel() -> None:
    tips = EpochKey("tips", 1, EK_OTHER, S1)
    ring = keyring(key(), key(2, EK2, S2), tips)
    assert ring.expired(S2 + EPOCH_KEY_RETENTION_MS + 1) == [key()]
    assert ring.channels() == ["alerts", "tips"]


def test_grace_is_fifteen_minutes_by_the_senders_clock() -> None:
    ring = keyring(key(), key(2, EK2, S2))
    assert EPOCH_GRACE_MS == 15 * 60 * 1000
    assert ring.key_for_message("alerts", 1, S2 + EPOCH_GRACE_MS) == EK1
    with pytest.raises(Rejected) as raised:
        ring.key_for_message("alerts", 1, S2 + EPOCH_GRACE_MS + 1)
    assert raised.value.reject_code is RejectCode.E_EPOCH
    assert raised.value.epoch_ahead is False


# ---------------------------------------------------------------------------------------------
# Secrets stay out of reprs


def _assert_no_key(text: str, *keys: bytes) -> None:
    for secret in keys:
        assert secret.hex() not in text
        assert secret.hex().upper() not in text
        assert repr(secret) not in text
        assert repr(secret)[2:-1] not in text  # the raw bytes' escaped form


def test_delivery_and_key_reprs_hide_the_key() -> None:
    delivery = EpochKeyDelivery("alerts", 1, EK1, S1, "initial", alerts_readers())
    held = key()
    ring = keyring(held)
    for text in (repr(delivery), str(delivery), repr(held), str(held), repr(ring)):
        _assert_no_key(text, EK1)
    assert "alerts" in repr(delivery) and "alerts" in repr(held)
    # What a delivery looks like for display never includes the key either.
    _assert_no_key(repr(EPOCH_KEY_TYPE.to_builtins(delivery)), EK1)


def test_delivered_outcome_repr_hides_the_key() -> None:
    """The outcome of a key delivery (what an agent might log by accident) has no key."""
    tf = epoch_taskforce()
    outcome = delivered(receiver(tf, "ngo").receive(deliver(tf).data))
    _assert_no_key(repr(outcome) + repr(log_event(outcome)), EK1)


def test_replayed_delivery_is_a_duplicate() -> None:
    """The same delivery envelope again: DUPLICATE, the keyring unchanged."""
    tf = epoch_taskforce()
    box = receiver(tf, "ngo")
    data = deliver(tf).data
    delivered(box.receive(data))
    assert isinstance(box.receive(data), Duplicate)
    assert list(box.epochs) == [key()]


def test_signed_message_is_the_same_construction_as_mode_1() -> None:
    """Mode 2 changes K's origin only: the signature is over L(sig)||u32(hdr)||u32(ct)."""
    tf = epoch_taskforce()
    env = msgspec.msgpack.decode(epoch_message(tf, key()).data, type=Envelope)
    bindings.crypto_sign_open(env.sig + signed_message(env.hdr, env.ct), tf.ids[WRITER].sign_pk)
