"""Every input to every receive and verify function ends in one outcome with a code (issue 11).

A member's key can be stolen or its software buggy, so the envelopes here are not tampered
bytes (those fail the signature): they are arbitrary header fields and ciphertexts RE-SIGNED
with a real member's key, so they reach the key agreement, the AEAD and the plaintext decoder.
``Receiver.receive`` must give a Delivered, a Duplicate or a Rejection; ``verify_envelope``,
``payload_key_of`` and ``open_with_key`` must return or raise ``Rejected``. Nothing else may
escape, and nothing may end in ``E_INTERNAL`` (the last-resort code): every such input has a
check of its own.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tfkit import build_taskforce

from tfshare import primitives
from tfshare.encoding import MAX_UINT
from tfshare.envelope import Envelope, Header, Plain
from tfshare.errors import RejectCode, Rejected
from tfshare.protocol import Delivered, Rejection
from tfshare.seal import (
    L_PAYLOAD,
    Duplicate,
    ReceivePolicy,
    open_with_key,
    payload_key_of,
    signed_message,
    verify_envelope,
)

TF: Final = build_taskforce()
ROSTER: Final = TF.trusted()
POLICY: Final = ReceivePolicy()
SENDER: Final = "police"
READER: Final = "ngo"
ORIGINAL: Final = msgspec.msgpack.decode(TF.seal(SENDER).data, type=Envelope)
HEADER: Final = msgspec.msgpack.decode(ORIGINAL.hdr, type=Header)
# The real payload key of the original header: lets a generated plaintext be encrypted so
# that it decrypts, which takes the plaintext decoder and the schema checks into the search.
KEY: Final = payload_key_of(
    TF.seal(SENDER).data, identity=TF.ids[READER], roster=ROSTER, now_ms=TF.now_ms, policy=POLICY
)

small_bytes = st.binary(max_size=80)

# Each header field: its real value (so later checks are reached), or anything of any length.
header_fields: dict[str, st.SearchStrategy[Any]] = {
    "msg_id": st.one_of(st.just(HEADER.msg_id), st.binary(min_size=16, max_size=16)),
    "ts_ms": st.one_of(st.just(HEADER.ts_ms), st.integers(0, MAX_UINT)),
    "mode": st.one_of(st.just(HEADER.mode), st.integers(0, 4)),
    "epoch": st.one_of(st.just(HEADER.epoch), st.integers(0, 3)),
    "eph_pk": st.one_of(
        st.just(HEADER.eph_pk),
        st.binary(max_size=32),
        st.sampled_from([bytes(32), b"\x01" + bytes(31), b"\xff" * 32]),
    ),
    "wraps": st.one_of(
        st.just(HEADER.wraps),
        small_bytes,
        # The real key ids with arbitrary wrap ciphertexts (kept at the record size).
        st.binary(min_size=48, max_size=48).map(
            lambda wct: b"".join(
                HEADER.wraps[i : i + 8] + wct for i in range(0, len(HEADER.wraps), 56)
            )
        ),
    ),
    "nonce": st.one_of(st.just(HEADER.nonce), st.binary(min_size=24, max_size=24)),
    "commit": st.one_of(st.just(HEADER.commit), st.binary(min_size=32, max_size=32)),
    "seq": st.one_of(st.just(HEADER.seq), st.integers(0, MAX_UINT)),
}


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """A header: a mix of real and arbitrary fields, canonically encoded, or arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(small_bytes)
    changes = {name: draw(strategy) for name, strategy in header_fields.items()}
    return msgspec.msgpack.encode(msgspec.structs.replace(HEADER, **changes))


@st.composite
def plaintexts(draw: st.DrawFn) -> bytes:
    """A plaintext: arbitrary bytes, or a Plain of arbitrary fields (a real schema or not)."""
    if draw(st.booleans()):
        return draw(small_bytes)
    schema = draw(st.sampled_from(["tf.alert/1", "tf.receipt/1", "x/1"]))
    known = TF.schemas.lookup(schema)
    fp = known.fingerprint if known is not None and draw(st.booleans()) else draw(st.binary())
    pad = draw(st.sampled_from([b"", bytes(3), b"\x01"]))
    return msgspec.msgpack.encode(Plain(schema, fp, draw(small_bytes), pad))


@st.composite
def ciphertexts(draw: st.DrawFn, hdr: bytes) -> bytes:
    """Short (below the tag), arbitrary, or a real encryption of an arbitrary plaintext."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return draw(st.binary(max_size=15))
    if kind == 1:
        return draw(small_bytes)
    return primitives.aead_encrypt(draw(plaintexts()), L_PAYLOAD + hdr, HEADER.nonce, KEY)


@st.composite
def resigned_envelopes(draw: st.DrawFn) -> bytes:
    """Header and ciphertext as above, signed by the sender's real key."""
    hdr = draw(headers())
    ct = draw(ciphertexts(hdr))
    sig = TF.ids[SENDER].sign(signed_message(hdr, ct))
    return msgspec.msgpack.encode(Envelope(ORIGINAL.v, hdr, ct, sig))


def _refused_with_a_code(call: Any) -> None:
    try:
        call()
    except Rejected as exc:
        assert exc.reject_code in RejectCode
        assert exc.reject_code is not RejectCode.E_INTERNAL


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(resigned_envelopes())
def test_receive_of_any_resigned_envelope_is_one_outcome_with_a_code(data: bytes) -> None:
    outcome = TF.receiver(READER).receive(data, None)
    assert isinstance(outcome, Delivered | Duplicate | Rejection)
    if isinstance(outcome, Rejection):
        assert outcome.code in RejectCode
        assert outcome.code is not RejectCode.E_INTERNAL


@PROPERTY
@given(resigned_envelopes())
def test_verify_envelope_of_any_resigned_envelope_returns_or_is_rejected(data: bytes) -> None:
    _refused_with_a_code(
        lambda: verify_envelope(data, roster=ROSTER, now_ms=TF.now_ms, subject=None, policy=POLICY)
    )


@PROPERTY
@given(resigned_envelopes())
def test_payload_key_of_any_resigned_envelope_returns_or_is_rejected(data: bytes) -> None:
    _refused_with_a_code(
        lambda: payload_key_of(
            data, identity=TF.ids[READER], roster=ROSTER, now_ms=TF.now_ms, policy=POLICY
        )
    )


@PROPERTY
@given(resigned_envelopes(), st.one_of(st.just(KEY), st.binary(max_size=40)))
def test_open_with_key_of_any_resigned_envelope_returns_or_is_rejected(
    data: bytes, key: bytes
) -> None:
    _refused_with_a_code(
        lambda: open_with_key(
            data, key, roster=ROSTER, schemas=TF.schemas, now_ms=TF.now_ms, policy=POLICY
        )
    )
