"""Properties of epoch mode (envelope mode 2, issue 15).

- A mode-2 envelope mutated at random never opens: tampered bytes stop at checks 1-5 (no
  signature, no secret-key operation); header fields changed and RE-SIGNED by the real sender
  (its key stolen, or its software buggy) end in the code of the check that field meets.
- Any bytes as the body of a tf.epoch-key/1 delivery decode to a valid delivery or raise one
  of the documented decode errors; received, they are delivered or refused with E_BODY.
- The message key is a function of (epoch key, msg_id, sender_kid) alone, as PROTOCOL.md 8.3a
  writes it, and differs when any of them differs.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import msgspec
from hypothesis import example, given
from hypothesis import strategies as st
from nacl import bindings
from tfkit import NOW_MS, DeterministicRng, TaskForce, build_taskforce, example_record

from tfshare import roster as R
from tfshare.encoding import DECODE_ERRORS, MAX_UINT, encode
from tfshare.envelope import Envelope, Header
from tfshare.epochs import (
    EPOCH_KEY_TYPE,
    EpochKey,
    EpochKeyDelivery,
    EpochKeyring,
    decode_delivery,
    message_key,
)
from tfshare.errors import RejectCode
from tfshare.protocol import Delivered, Outcome, Receiver, Rejection
from tfshare.registry.schema import Schema
from tfshare.replay import MemoryReplayStore
from tfshare.seal import L_PAYLOAD, ReceivePolicy, Recipient, seal_to, seal_to_epoch, signed_message

KM: Final = "keyman"
SENDER: Final = "police"
READER: Final = "ngo"
EK1: Final = bytes(range(0x10, 0x30))
EK2: Final = bytes(range(0x30, 0x50))
S1: Final = NOW_MS - 2_000_000
S2: Final = NOW_MS - 600_000
READERS_DIGEST: Final = bytes(range(0x70, 0x90))
KEYS: Final = (EpochKey("alerts", 1, EK1, S1), EpochKey("alerts", 2, EK2, S2))


def _epoch_taskforce() -> TaskForce:
    """tfkit's task force plus a key manager; "alerts" allows both modes."""
    base = build_taskforce(members=("police", "ngo", "labour", KM))
    _, roster = R.decode_signed_roster(encode(base.signed))
    roster = msgspec.structs.replace(
        roster,
        members=[
            msgspec.structs.replace(m, roles=["member", "key-manager"]) if m.agency_id == KM else m
            for m in roster.members
        ],
        channels=[
            msgspec.structs.replace(c, mode_policy=3) if c.name == "alerts" else c
            for c in roster.channels
        ],
    )
    signed = R.sign(R.edit(base.signed, roster, now_ms=NOW_MS - 3_000_000), base.ids["coord"])
    return TaskForce(ids=base.ids, signed=signed, anchor=base.anchor, now_ms=base.now_ms)


TF: Final = _epoch_taskforce()
ROSTER: Final = TF.trusted()
_alert = TF.schemas.lookup("tf.alert/1")
assert isinstance(_alert, Schema)
ALERT: Final = _alert
# Epoch 2 is the current one; the message is sealed under it now.
ORIGINAL_DATA: Final = seal_to_epoch(
    identity=TF.ids[SENDER],
    taskforce="nl-north",
    channel="alerts",
    roster_seq=ROSTER.seq,
    epoch_key=KEYS[1],
    schema=ALERT,
    body=ALERT.to_body(example_record("tf.alert/1")),
    seq=1,
    now_ms=NOW_MS,
    rng=DeterministicRng("epoch-property"),
).data
ORIGINAL: Final = msgspec.msgpack.decode(ORIGINAL_DATA, type=Envelope)
HEADER: Final = msgspec.msgpack.decode(ORIGINAL.hdr, type=Header)
K: Final = message_key(EK2, HEADER.msg_id, TF.ids[SENDER].kid_sig)
PLAIN: Final = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
    ORIGINAL.ct, L_PAYLOAD + ORIGINAL.hdr, HEADER.nonce, K
)

# What tampering without the sender's key can reach: checks 1 to 5, nothing after them.
UNSIGNED_CODES: Final = frozenset(
    {
        RejectCode.E_TOO_LARGE,
        RejectCode.E_MALFORMED,
        RejectCode.E_NONCANONICAL,
        RejectCode.E_VERSION,
        RejectCode.E_CHANNEL,
        RejectCode.E_STALE,
        RejectCode.E_FUTURE,
        RejectCode.E_UNKNOWN_SENDER,
        RejectCode.E_REVOKED,
        RejectCode.E_NOT_AUTHORIZED,
        RejectCode.E_BAD_SIG,
    }
)


def _receiver(agency: str = READER) -> Receiver:
    return Receiver(
        identity=TF.ids[agency],
        roster=ROSTER,
        replay=MemoryReplayStore(),
        schemas=TF.schemas,
        clock=lambda: NOW_MS,
        policy=ReceivePolicy(),
        epochs=EpochKeyring(KEYS),
    )


def test_the_unmutated_envelope_opens() -> None:
    """The base of the mutations is a good message (so refusals below are the mutations')."""
    assert isinstance(_receiver().receive(ORIGINAL_DATA), Delivered)


@given(st.lists(st.tuples(st.integers(0, len(ORIGINAL_DATA) - 1), st.integers(1, 255)), min_size=1))
def test_flipped_bytes_never_open_and_stop_before_any_secret_is_used(
    flips: list[tuple[int, int]],
) -> None:
    data = bytearray(ORIGINAL_DATA)
    for position, mask in flips:
        data[position] ^= mask
    if bytes(data) == ORIGINAL_DATA:  # two flips of one byte undid each other
        return
    outcome = _receiver().receive(bytes(data))
    assert isinstance(outcome, Rejection)
    assert outcome.code in UNSIGNED_CODES, outcome


@given(st.integers(0, len(ORIGINAL_DATA) - 1), st.binary(min_size=1, max_size=64))
def test_truncated_or_extended_envelope_never_opens(cut: int, tail: bytes) -> None:
    for data in (ORIGINAL_DATA[:cut], ORIGINAL_DATA + tail):
        outcome = _receiver().receive(data)
        assert isinstance(outcome, Rejection)
        assert outcome.code in UNSIGNED_CODES, outcome


def _resealed(changes: dict[str, Any]) -> bytes:
    """The original's plaintext re-encrypted under K and a changed header, signed by the
    sender: a valid signature over whatever the header now says."""
    header = msgspec.structs.replace(HEADER, **changes)
    hdr = encode(header)
    ct = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        PLAIN, L_PAYLOAD + hdr, HEADER.nonce, K
    )
    return encode(Envelope(1, hdr, ct, TF.ids[SENDER].sign(signed_message(hdr, ct))))


# Each mutable header field, a strategy for another value, and the codes its check gives.
FIELDS: Final[dict[str, tuple[st.SearchStrategy[Any], frozenset[RejectCode]]]] = {
    "epoch": (
        st.integers(0, MAX_UINT),
        # 0: 2f; 1 (held): the commitment with EK1's K; other: not held
        frozenset({RejectCode.E_MALFORMED, RejectCode.E_COMMIT, RejectCode.E_EPOCH}),
    ),
    "eph_pk": (st.binary(min_size=1, max_size=40), frozenset({RejectCode.E_MALFORMED})),
    "wraps": (st.binary(min_size=1, max_size=120), frozenset({RejectCode.E_MALFORMED})),
    "mode": (st.integers(0, 255), frozenset({RejectCode.E_MALFORMED})),
    "msg_id": (st.binary(min_size=16, max_size=16), frozenset({RejectCode.E_COMMIT})),
    "commit": (st.binary(min_size=32, max_size=32), frozenset({RejectCode.E_COMMIT})),
    "nonce": (st.binary(min_size=24, max_size=24), frozenset({RejectCode.E_DECRYPT})),
    "sender_kid": (st.binary(min_size=8, max_size=8), frozenset({RejectCode.E_UNKNOWN_SENDER})),
    "channel": (
        st.sampled_from(["tips", "receipts", "nochannel", "alerts2"]),
        # "tips" exists (direct mode only): 3c; the others do not: 3a
        frozenset({RejectCode.E_VERSION, RejectCode.E_CHANNEL}),
    ),
}


@st.composite
def header_changes(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=3, unique=True))
    changes = {name: draw(FIELDS[name][0]) for name in names}
    return {k: v for k, v in changes.items() if v != getattr(HEADER, k)}


@given(header_changes())
def test_re_signed_mode_2_header_changes_end_in_their_documented_codes(
    changes: dict[str, Any],
) -> None:
    if not changes:
        return
    outcome: Outcome = _receiver().receive(_resealed(changes))
    assert isinstance(outcome, Rejection), changes
    allowed = frozenset().union(*(FIELDS[name][1] for name in changes))
    assert outcome.code in allowed, (changes, outcome)


# ---------------------------------------------------------------------------------------------
# Delivery bodies

msgpack_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.text(max_size=20),
        st.binary(max_size=40),
        st.sampled_from(["alerts", "initial", "resend", "members"]),
        st.just(EK1),
    ),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)

delivery_bodies = st.one_of(
    st.binary(max_size=120),
    msgpack_values.map(msgspec.msgpack.encode),
    # near misses: a valid shape with one element of any value
    st.tuples(st.integers(0, 5), msgpack_values).map(
        lambda p: msgspec.msgpack.encode(
            [
                p[1] if i == p[0] else v
                for i, v in enumerate(["alerts", 1, EK1, S1, "initial", READERS_DIGEST])
            ]
        )
    ),
)


@given(delivery_bodies)
def test_any_delivery_body_decodes_validly_or_raises_a_decode_error(body: bytes) -> None:
    try:
        delivery = decode_delivery(body)
    except DECODE_ERRORS:
        return
    assert isinstance(delivery, EpochKeyDelivery)
    assert encode(delivery) == body  # canonical: one encoding per delivery
    assert 1 <= delivery.epoch <= MAX_UINT and len(delivery.key) == 32
    assert delivery.reason in ("initial", "members", "period", "messages", "resend")


@given(delivery_bodies)
@example(encode(EpochKeyDelivery("tips", 1, EK1, S1, "initial", READERS_DIGEST)))  # another ch.
@example(encode(EpochKeyDelivery("alerts", 1, EK1, S1, "initial", READERS_DIGEST)))  # valid
@example(msgspec.msgpack.encode(["alerts", 1, EK1, S1, "initial"]))  # before readers_digest
def test_any_delivery_body_received_is_delivered_or_e_body(body: bytes) -> None:
    """Sealed by the key manager, any body is delivered (a valid delivery for "alerts") or
    refused with E_BODY; the keyring changes only for a delivered new key."""
    roster = ROSTER
    sealed = seal_to(
        identity=TF.ids[KM],
        taskforce="nl-north",
        channel="alerts",
        roster_seq=roster.seq,
        recipients=[Recipient(READER, TF.ids[READER].enc_pk)],
        schema=EPOCH_KEY_TYPE,
        body=body,
        seq=1,
        now_ms=NOW_MS,
        rng=DeterministicRng(body),
    )
    box = Receiver(
        identity=TF.ids[READER],
        roster=roster,
        replay=MemoryReplayStore(),
        schemas=TF.schemas,
        clock=lambda: NOW_MS,
        policy=ReceivePolicy(),
    )
    outcome = box.receive(sealed.data)
    if isinstance(outcome, Delivered):
        record = outcome.message.record
        assert isinstance(record, EpochKeyDelivery) and record.channel == "alerts"
        assert outcome.new_epoch_key == EpochKey.of(record)
        assert list(box.epochs) == [EpochKey.of(record)]
    else:
        assert isinstance(outcome, Rejection)
        assert outcome.code is RejectCode.E_BODY, outcome
        assert len(box.epochs) == 0


# ---------------------------------------------------------------------------------------------
# The message key

keys32 = st.binary(min_size=32, max_size=32)
ids16 = st.binary(min_size=16, max_size=16)
kids8 = st.binary(min_size=8, max_size=8)


@given(keys32, ids16, kids8)
def test_message_key_is_the_documented_keyed_blake2b(ek: bytes, msg_id: bytes, kid: bytes) -> None:
    expected = hashlib.blake2b(
        b"tfshare/v1/msgkey\x00" + msg_id + kid, digest_size=32, key=ek
    ).digest()
    assert message_key(ek, msg_id, kid) == expected == message_key(ek, msg_id, kid)


@given(keys32, ids16, ids16, kids8, kids8)
def test_message_key_differs_for_another_msg_id_or_sender_kid(
    ek: bytes, msg_id: bytes, other_id: bytes, kid: bytes, other_kid: bytes
) -> None:
    k = message_key(ek, msg_id, kid)
    assert k != ek
    if other_id != msg_id:
        assert message_key(ek, other_id, kid) != k
    if other_kid != kid:
        assert message_key(ek, msg_id, other_kid) != k


@given(keys32, keys32, ids16, kids8)
def test_message_key_differs_for_another_epoch_key(
    ek: bytes, other: bytes, msg_id: bytes, kid: bytes
) -> None:
    if other != ek:
        assert message_key(ek, msg_id, kid) != message_key(other, msg_id, kid)
