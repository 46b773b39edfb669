"""tests/vectors/witness-v1.json against the code and against an independent re-derivation
(hashlib and PyNaCl only, from AUDIT-LOG.md section 13), byte for byte."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import msgspec
from nacl.signing import SigningKey

from tfshare import roster as R
from tfshare.audit.witness import cosign, cosigned_message
from tfshare.keys import Identity

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "witness-v1.json").read_text()
)
COSIG = VECTORS["cosignature"]


def test_the_cosignature_is_rederived_from_the_spec_alone() -> None:
    seed = bytes.fromhex(COSIG["sign_seed"])
    key = SigningKey(seed)
    public_key = bytes(key.verify_key)
    assert public_key.hex() == COSIG["public_key"]
    name = "tfshare/nl-north/witness/ngo"
    assert COSIG["key_name"] == name
    key_id = hashlib.sha256(name.encode() + b"\n" + b"\x04" + public_key).digest()[:4]
    assert key_id.hex() == COSIG["key_id"]
    t = COSIG["timestamp"]
    message = b"cosignature/v1\ntime " + str(t).encode() + b"\n" + COSIG["checkpoint_text"].encode()
    assert message.hex() == COSIG["signed_message"]
    raw = key_id + struct.pack(">Q", t) + key.sign(message).signature
    assert raw.hex() == COSIG["line_raw"]
    assert COSIG["line"] == "\u2014 " + name + " " + base64.b64encode(raw).decode() + "\n"


def test_the_code_makes_the_vector_cosignature() -> None:
    ngo = Identity(
        agency_id="ngo",
        display_name="Ngo",
        sign_seed=bytes.fromhex(COSIG["sign_seed"]),
        enc_sk=bytes([0x43]) * 32,
        nats_seed=bytes([0x83]) * 32,
        created_ms=0,
    )
    text = COSIG["checkpoint_text"].encode()
    assert cosigned_message(text, COSIG["timestamp"]).hex() == COSIG["signed_message"]
    line = cosign(text, ngo, taskforce="nl-north", timestamp=COSIG["timestamp"])
    assert line.decode() == COSIG["line"]


def test_the_roster_with_a_witness_threshold_has_an_eleventh_element() -> None:
    vector = VECTORS["roster_witness_threshold"]
    data = bytes.fromhex(vector["signed_roster"])
    signed, roster = R.decode_signed_roster(data)
    generic = msgspec.msgpack.decode(signed.roster)
    assert len(generic) == 11 and generic[10] == vector["witness_threshold"] == 2
    assert roster.witness_threshold == 2
    _, _, approvals = R.self_verify(data)
    assert approvals == {"coord"}
