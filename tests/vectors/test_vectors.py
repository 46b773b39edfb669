"""The committed test vectors (v1.json) against the code, byte for byte, and against an
independent re-derivation that uses only hashlib, msgspec and raw libsodium calls (what a
second implementation would do from PROTOCOL.md)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from make_vectors import (
    SCHEMA_FP,
    build,
    fixed_identity,
    identities,
    roster_bytes,
    vector_schema,
)
from nacl import bindings

from tfshare import roster as R
from tfshare.encoding import encode
from tfshare.errors import RejectCode
from tfshare.keyfile import open_keyfile
from tfshare.protocol import Delivered, Receiver, Rejection
from tfshare.registry.schema import Schema
from tfshare.replay import MemoryReplayStore
from tfshare.seal import ReceivePolicy

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "v1.json").read_text())
ENV = VECTORS["envelope"]


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def L(label: str) -> bytes:
    return label.encode() + b"\x00"


def u32(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def blake(data: bytes, key: bytes = b"") -> bytes:
    return hashlib.blake2b(data, digest_size=32, key=key).digest()


class VectorSchemas:
    """A schema book holding tf.alert/1 with the vectors' opaque fingerprint."""

    def lookup(self, name: str) -> Schema | None:
        return vector_schema() if name == "tf.alert/1" else None


def test_regenerated_vectors_equal_the_committed_file() -> None:
    """Sealing with the fixed keys and randomness reproduces every committed byte."""
    assert build() == VECTORS


@pytest.mark.parametrize("entry", VECTORS["identities"], ids=lambda e: e["agency_id"])
def test_identity_derivations(entry: dict[str, Any]) -> None:
    """Public keys, key ids, fingerprint and card follow from the seeds as specified."""
    sign_pk, _ = bindings.crypto_sign_seed_keypair(h(entry["sign_seed"]))
    enc_pk = bindings.crypto_scalarmult_base(h(entry["enc_sk"]))
    assert sign_pk.hex() == entry["sign_pk"]
    assert enc_pk.hex() == entry["enc_pk"]
    assert blake(L("tfshare/v1/kid/sig") + sign_pk)[:8].hex() == entry["kid_sig"]
    assert blake(L("tfshare/v1/kid/enc") + enc_pk)[:8].hex() == entry["kid_enc"]
    fp = base64.b32encode(blake(L("tfshare/v1/fp") + sign_pk)[:20]).decode().lower()
    assert " ".join(fp[i : i + 4] for i in range(0, 32, 4)) == entry["fingerprint"]


def test_envelope_bytes_are_the_documented_composition() -> None:
    """envelope = msgpack [1, hdr, ct, sig]; sig over L(sig)||u32(hdr)||u32(ct) by police."""
    inter = ENV["intermediate"]
    env = msgspec.msgpack.decode(h(ENV["envelope"]))
    assert env == [1, h(inter["hdr"]), h(inter["ct"]), h(inter["sig"])]
    police = next(i for i in VECTORS["identities"] if i["agency_id"] == "police")
    message = L("tfshare/v1/sig") + u32(h(inter["hdr"])) + u32(h(inter["ct"]))
    assert message == h(inter["signed_message"])
    bindings.crypto_sign_open(h(inter["sig"]) + message, h(police["sign_pk"]))
    assert hashlib.sha256(h(ENV["envelope"])).hexdigest() == ENV["env_hash"]


def test_header_fields_decode_as_specified() -> None:
    """The header is the 17-element array of PROTOCOL.md with the inputs' values."""
    inter, inputs = ENV["intermediate"], ENV["inputs"]
    hdr = msgspec.msgpack.decode(h(inter["hdr"]))
    police = next(i for i in VECTORS["identities"] if i["agency_id"] == "police")
    wraps = b"".join(h(w["kid_enc"]) + h(w["wct"]) for w in inter["wraps"])
    assert hdr == [
        1, 1, h(inter["msg_id"]), inputs["ts_ms"], "police", h(police["kid_sig"]),
        "nl-north", "alerts", 7, 1, 1, 0, h(inter["eph_pk"]), wraps, h(inter["nonce"]),
        h(inter["commit"]), [],
    ]  # fmt: skip
    kids = [w["kid_enc"] for w in inter["wraps"]]
    assert kids == sorted(kids)


def test_wraps_and_commitment_rederived_from_raw_primitives() -> None:
    """Each wrap key, wrap ciphertext and the key commitment follow the recipe exactly."""
    inter = ENV["intermediate"]
    msg_id, key, eph_sk = h(inter["msg_id"]), h(inter["payload_key"]), h(inter["eph_sk"])
    eph_pk = bindings.crypto_scalarmult_base(eph_sk)
    assert eph_pk.hex() == inter["eph_pk"]
    police = next(i for i in VECTORS["identities"] if i["agency_id"] == "police")
    for wrap in inter["wraps"]:
        shared = bindings.crypto_scalarmult(eph_sk, h(wrap["enc_pk"]))
        assert shared.hex() == wrap["shared_secret"]
        wk = blake(
            L("tfshare/v1/wrap") + eph_pk + h(wrap["enc_pk"]) + msg_id + h(police["kid_sig"]),
            key=shared,
        )
        assert wk.hex() == wrap["wrap_key"]
        wct = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            key, L("tfshare/v1/wrap") + msg_id, bytes(24), wk
        )
        assert wct.hex() == wrap["wct"]
    assert blake(L("tfshare/v1/commit") + msg_id, key=key).hex() == inter["commit"]


def test_payload_decrypts_to_the_padded_plain() -> None:
    """ct = AEAD(K, nonce, aad=L(payload)||hdr, Plain); Plain pads to a size class."""
    inter, inputs = ENV["intermediate"], ENV["inputs"]
    plain = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        h(inter["ct"]),
        L("tfshare/v1/payload") + h(inter["hdr"]),
        h(inter["nonce"]),
        h(inter["payload_key"]),
    )
    assert plain.hex() == inter["plain"]
    schema, schema_fp, body, pad = msgspec.msgpack.decode(plain)
    assert (schema, schema_fp, body) == ("tf.alert/1", SCHEMA_FP, h(inputs["body"]))
    assert pad == bytes(inter["pad_length"])
    assert len(plain) in (256, 1024, 4096, 16384, 65536) or len(plain) % 65536 == 0
    alert = vector_schema()
    assert msgspec.to_builtins(alert.from_body(body)) == msgspec.to_builtins(
        alert.from_body(alert.to_body(alert.from_json(json.dumps(inputs["body_json"]).encode())))
    )


def test_roster_vector_is_reproduced_and_verifies() -> None:
    """The vector roster is rebuilt byte for byte and verifies against its own anchor."""
    data = h(VECTORS["roster"]["signed_roster"])
    assert roster_bytes(identities()) == data
    _, roster = R.decode_signed_roster(data)
    trusted, _ = R.verify_roster(
        data, anchor=R.anchor_of(roster), state=None, now_ms=ENV["open_at_ms"]
    )
    assert trusted.seq == roster.seq


def _receiver(agency: str) -> Receiver:
    data = h(VECTORS["roster"]["signed_roster"])
    _, roster = R.decode_signed_roster(data)
    trusted, _ = R.verify_roster(
        data, anchor=R.anchor_of(roster), state=None, now_ms=ENV["open_at_ms"]
    )
    number = [i["agency_id"] for i in VECTORS["identities"]].index(agency) + 1
    return Receiver(
        identity=fixed_identity(agency, number),
        roster=trusted,
        replay=MemoryReplayStore(),
        schemas=VectorSchemas(),
        clock=lambda: int(ENV["open_at_ms"]),
        policy=ReceivePolicy(),
    )


@pytest.mark.parametrize("agency", ENV["open_as"])
def test_vector_envelope_opens_for_each_recipient(agency: str) -> None:
    """Each recipient opens the vector envelope to the vector body and metadata."""
    outcome = _receiver(agency).receive(h(ENV["envelope"]))
    assert isinstance(outcome, Delivered)
    message = outcome.message
    assert (message.sender, message.channel, message.seq) == ("police", "alerts", 7)
    assert message.ts_ms == ENV["inputs"]["ts_ms"]
    assert message.env_hash.hex() == ENV["env_hash"]
    alert = vector_schema()
    expected = alert.from_body(h(ENV["inputs"]["body"]))
    assert msgspec.to_builtins(message.record) == msgspec.to_builtins(expected)
    assert msgspec.to_builtins(message.record)["title"] == ENV["inputs"]["body_json"]["title"]
    assert sorted(message.recipients) == sorted(ENV["inputs"]["recipients"])


def test_vector_envelope_refused_for_a_reader_outside_the_wraps() -> None:
    """A channel reader that is not among the recipients gets E_NOT_RECIPIENT."""
    outcome = _receiver(ENV["not_recipient"]).receive(h(ENV["envelope"]))
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_NOT_RECIPIENT


def test_keyfile_vector_opens_with_its_passphrase() -> None:
    """The vector key file opens with the vector passphrase to police's identity."""
    keyfile = VECTORS["keyfile"]
    identity = open_keyfile(h(keyfile["bytes"]), keyfile["passphrase"].encode())
    police = next(i for i in VECTORS["identities"] if i["agency_id"] == "police")
    assert identity.sign_pk.hex() == police["sign_pk"]
    assert identity.enc_pk.hex() == police["enc_pk"]
    assert encode(identity.card()).hex() == police["card"]


# --- Values PROTOCOL.md left open (issue 11, item 10) ---------------------------------------


def _crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM (polynomial 0x1021, initial value 0, no reflection), bit by bit."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


@pytest.mark.parametrize("entry", VECTORS["identities"], ids=lambda e: e["agency_id"])
def test_nats_user_is_the_nkey_of_the_nats_seed(entry: dict[str, Any]) -> None:
    """nats_user = base32(0xa0 || pk || crc16_le) without padding, pk = Ed25519(nats_seed)
    (PROTOCOL.md 6.1): the NATS user nkey, derived with raw primitives only."""
    pk, _ = bindings.crypto_sign_seed_keypair(h(entry["nats_seed"]))
    raw = bytes([20 << 3]) + pk
    raw += _crc16_xmodem(raw).to_bytes(2, "little")
    user = base64.b32encode(raw).decode("ascii").rstrip("=")
    assert user == entry["nats_user"]
    assert user.startswith("U") and len(user) == 56
    card = msgspec.msgpack.decode(h(entry["card"]))
    assert msgspec.msgpack.decode(card[1])[4] == user  # CardBody.nats_user


REFUSALS: list[dict[str, Any]] = VECTORS["refusals"]


@pytest.mark.parametrize("vector", REFUSALS, ids=lambda v: v["name"])
@pytest.mark.parametrize("agency", ENV["open_as"])
def test_refusal_vector_gets_its_code(vector: dict[str, Any], agency: str) -> None:
    """Each refusal vector (validly signed by police) is refused with exactly its code."""
    outcome = _receiver(agency).receive(h(vector["envelope"]))
    assert isinstance(outcome, Rejection), vector["name"]
    assert outcome.code is RejectCode(vector["code"])


def _refusal(name: str) -> bytes:
    return h(next(v["envelope"] for v in REFUSALS if v["name"] == name))


def _raw_plain(envelope: bytes) -> bytes:
    """Verify police's signature and decrypt with the vector K, raw primitives only."""
    _, hdr, ct, sig = msgspec.msgpack.decode(envelope)
    police = next(i for i in VECTORS["identities"] if i["agency_id"] == "police")
    bindings.crypto_sign_open(sig + L("tfshare/v1/sig") + u32(hdr) + u32(ct), h(police["sign_pk"]))
    inter = ENV["intermediate"]
    plain: bytes = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        ct, L("tfshare/v1/payload") + hdr, h(inter["nonce"]), h(inter["payload_key"])
    )
    return plain


def test_body_key_twice_vector_holds_a_repeated_key() -> None:
    """The body's map header counts one entry more than its distinct keys, the repeat being
    'severity'; a last-wins decoder would read 'low', a first-wins one 'critical'."""
    _, _, body, _ = msgspec.msgpack.decode(_raw_plain(_refusal("body_key_twice")))
    assert 0x80 <= body[0] <= 0x8F
    distinct = msgspec.msgpack.decode(body)
    assert body[0] & 0x0F == len(distinct) + 1
    assert distinct["severity"] == "low"
    assert h(ENV["inputs"]["body"])[1:] == body[1 : len(h(ENV["inputs"]["body"]))]


def test_trailing_byte_vectors_are_signed_and_end_in_one_zero_byte() -> None:
    """Trailing bytes are refused where they are found, under a valid signature: after the
    body and after Plain E_BODY, after the header and after the envelope E_MALFORMED."""
    good_plain = h(ENV["intermediate"]["plain"])
    assert _raw_plain(_refusal("trailing_after_plain")) == good_plain + b"\x00"
    _, _, body, _ = msgspec.msgpack.decode(_raw_plain(_refusal("trailing_after_body")))
    assert body == h(ENV["inputs"]["body"]) + b"\x00"
    _, hdr, _, _ = msgspec.msgpack.decode(_refusal("trailing_after_header"))
    assert hdr == h(ENV["intermediate"]["hdr"]) + b"\x00"
    _raw_plain(_refusal("trailing_after_header"))
    assert _refusal("trailing_after_envelope") == h(ENV["envelope"]) + b"\x00"


def test_mode_3_vector_differs_from_the_vector_header_only_in_mode() -> None:
    """mode 3 (neither 1 nor 2) in a validly signed header: E_MALFORMED, not E_VERSION."""
    _, hdr, _, _ = msgspec.msgpack.decode(_refusal("mode_3"))
    fields = msgspec.msgpack.decode(hdr)
    expected = msgspec.msgpack.decode(h(ENV["intermediate"]["hdr"]))
    assert fields[10] == 3
    assert fields[:10] + fields[11:] == expected[:10] + expected[11:]
    _raw_plain(_refusal("mode_3"))


def test_a_new_members_keys_are_valid_from_its_card_creation_time() -> None:
    """roster add: a member's signing and encryption key windows start at the card's
    created_ms, not at the time of the edit, and have no end (2^53 - 1); so in the vector
    roster (cards made at T0) every window is [T0, 2^53 - 1]."""
    ids = identities()
    signed, roster = R.decode_signed_roster(h(VECTORS["roster"]["signed_roster"]))
    for member in roster.members:
        created = ids[member.agency_id].created_ms
        windows = [(k.not_before_ms, k.not_after_ms) for k in [*member.sign_keys, member.enc_key]]
        assert windows == [(created, 2**53 - 1)] * 2
    later = R.add_member(
        signed,
        fixed_identity("harbour", 9).card_body(),
        role="member",
        now_ms=ids["coord"].created_ms + 86_400_000,
    )
    _, edited = R.decode_signed_roster(encode(later))
    added = next(m for m in edited.members if m.agency_id == "harbour")
    assert added.sign_keys[0].not_before_ms == ids["coord"].created_ms  # the card's time
    assert edited.issued_ms == ids["coord"].created_ms + 86_400_000  # the edit's time
