"""What PROTOCOL.md now says about the gaps an independent implementation found (issue 11,
item 10), checked against the code beyond the single values of the vectors."""

from __future__ import annotations

import base64

import msgspec
import pytest
from nacl import bindings
from tfkit import build_taskforce

from tfshare.encoding import encode
from tfshare.envelope import Header
from tfshare.errors import RejectCode
from tfshare.protocol import Rejection
from tfshare.seal import signed_message


def _crc16_xmodem(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _nkey(prefix: bytes, payload: bytes) -> str:
    raw = prefix + payload
    return base64.b32encode(raw + _crc16_xmodem(raw).to_bytes(2, "little")).decode().rstrip("=")


@pytest.mark.parametrize("agency", ["police", "ngo"])
def test_nats_user_and_seed_text_follow_protocol_6_1(agency: str) -> None:
    """nats_user = base32(0xa0 || pk || crc16), seed text = base32(0x95 0x00 || seed || crc16)."""
    identity = build_taskforce().ids[agency]
    seed = identity.secret_material()[2]
    pk, _ = bindings.crypto_sign_seed_keypair(seed)
    assert identity.nats_user == _nkey(b"\xa0", pk)
    text = _nkey(b"\x95\x00", seed)
    assert text.startswith("SU") and len(text) == 58
    assert identity.nats_seed_encoded() == text.encode()


@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", b"\x91\x01", bytes(64)])
def test_bytes_after_a_valid_envelope_are_E_MALFORMED(extra: bytes) -> None:
    tf = build_taskforce()
    outcome = tf.receiver("ngo").receive(tf.seal("police").data + extra)
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_MALFORMED


@pytest.mark.parametrize("mode", [0, 3, 4, 127, 2**32])
def test_a_signed_header_with_a_mode_other_than_1_and_2_is_E_MALFORMED(mode: int) -> None:
    """Not E_VERSION (that is for a mode the channel does not allow) and not E_EPOCH."""
    tf = build_taskforce()
    _, hdr, ct, _ = msgspec.msgpack.decode(tf.seal("police").data)
    header = msgspec.structs.replace(msgspec.msgpack.decode(hdr, type=Header), mode=mode)
    new_hdr = encode(header)
    sig = tf.ids["police"].sign(signed_message(new_hdr, ct))
    outcome = tf.receiver("ngo").receive(encode([1, new_hdr, ct, sig]))
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_MALFORMED
