"""Write tests/vectors/v1.json: deterministic test vectors for PROTOCOL.md.

Fixed keys and fixed randomness go in; exact bytes (and every intermediate value an
implementer needs to debug their own code) come out. Run it only when the wire format changes
on purpose: `python tests/vectors/make_vectors.py`; test_vectors.py checks the committed file
byte for byte against the current code.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import msgspec
from nacl import bindings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tfkit import DeterministicRng  # noqa: E402

from tfshare import roster as R  # noqa: E402
from tfshare.encoding import encode  # noqa: E402
from tfshare.envelope import Header, Plain, wrap_at  # noqa: E402
from tfshare.keyfile import KDF_PROFILES, seal_keyfile  # noqa: E402
from tfshare.keys import Identity, fingerprint  # noqa: E402
from tfshare.registry.book import shipped  # noqa: E402
from tfshare.registry.schema import Schema  # noqa: E402
from tfshare.seal import (  # noqa: E402
    L_PAYLOAD,
    Recipient,
    key_commitment,
    seal_to,
    signed_message,
    wrap_key,
)

T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z
SCHEMA_FP = bytes.fromhex("a1" * 32)  # an opaque 32-byte fingerprint for the vectors
AGENCIES = ("coord", "police", "ngo", "labour")


def fixed_identity(agency: str, n: int) -> Identity:
    return Identity(
        agency_id=agency,
        display_name=agency.title(),
        sign_seed=bytes([n]) * 32,
        enc_sk=bytes([0x40 + n]) * 32,
        nats_seed=bytes([0x80 + n]) * 32,
        created_ms=T0,
    )


def identities() -> dict[str, Identity]:
    return {agency: fixed_identity(agency, i + 1) for i, agency in enumerate(AGENCIES)}


def vector_schema() -> Schema:
    """tf.alert/1 as shipped, but with the vectors' opaque fingerprint (the vectors must not
    change when a schema's text is edited)."""
    alert = shipped().lookup("tf.alert/1")
    assert alert is not None
    return dataclasses.replace(alert, fingerprint=SCHEMA_FP)


def roster_bytes(ids: dict[str, Identity]) -> bytes:
    signed = R.new_roster(
        "nl-north", [ids["coord"].card_body()], threshold=1, now_ms=T0, valid_days=3650
    )
    for agency in ("police", "ngo", "labour"):
        signed = R.add_member(signed, ids[agency].card_body(), role="member", now_ms=T0)
    for agency in AGENCIES:
        signed = R.grant(
            signed, agency, channel="alerts", read=True, write=agency == "police", now_ms=T0
        )
    return encode(R.sign(signed, ids["coord"]))


def body_bytes() -> bytes:
    schema = vector_schema()
    example = (HERE.parent.parent / "examples/alert.json").read_bytes()
    return schema.to_body(schema.from_json(example))


def build() -> dict[str, Any]:
    ids = identities()
    sender = ids["police"]
    recipients = [Recipient(a, ids[a].enc_pk) for a in ("ngo", "labour")]
    randomness = DeterministicRng("tfshare/v1/test-vector").__call__(104)
    body = body_bytes()
    ts = T0 + 60_000
    sealed = seal_to(
        identity=sender,
        taskforce="nl-north",
        channel="alerts",
        roster_seq=1,
        recipients=recipients,
        schema=vector_schema(),
        body=body,
        seq=7,
        now_ms=ts,
        rng=lambda n: randomness[:n],
    )
    envelope = msgspec.msgpack.decode(sealed.data)
    hdr_bytes, ct = envelope[1], envelope[2]
    header = msgspec.msgpack.decode(hdr_bytes, type=Header)
    msg_id, nonce, payload_key, eph_sk = (
        randomness[:16],
        randomness[16:40],
        randomness[40:72],
        randomness[72:],
    )
    plain = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        ct, L_PAYLOAD + hdr_bytes, nonce, payload_key
    )
    wraps = []
    for i, recipient in enumerate(sorted(recipients, key=lambda r: r.kid)):
        shared = bindings.crypto_scalarmult(eph_sk, recipient.enc_pk)
        kid, wct = wrap_at(header.wraps, i)
        wraps.append(
            {
                "recipient": recipient.agency_id,
                "enc_pk": recipient.enc_pk.hex(),
                "shared_secret": shared.hex(),
                "wrap_key": wrap_key(
                    shared, header.eph_pk, recipient.enc_pk, msg_id, sender.kid_sig
                ).hex(),
                "kid_enc": kid.hex(),
                "wct": wct.hex(),
            }
        )
    decoded_plain = msgspec.msgpack.decode(plain, type=Plain)
    return {
        "description": "tfshare envelope v1 test vectors (PROTOCOL.md). All byte strings are "
        "lowercase hex. Randomness for a seal is one 104-byte draw split as "
        "msg_id(16) || nonce(24) || K(32) || eph_sk(32).",
        "identities": [
            {
                "agency_id": i.agency_id,
                "display_name": i.display_name,
                "sign_seed": i.secret_material()[0].hex(),
                "enc_sk": i.secret_material()[1].hex(),
                "nats_seed": i.secret_material()[2].hex(),
                "created_ms": i.created_ms,
                "sign_pk": i.sign_pk.hex(),
                "enc_pk": i.enc_pk.hex(),
                "kid_sig": i.kid_sig.hex(),
                "kid_enc": i.kid_enc.hex(),
                "fingerprint": fingerprint(i.sign_pk),
                "nats_user": i.nats_user,
                "card": encode(i.card()).hex(),
            }
            for i in ids.values()
        ],
        "roster": {
            "note": "coord is the only coordinator (k=1); everyone reads 'alerts', police "
            "writes; issued and valid from created_ms for 3650 days",
            "signed_roster": roster_bytes(ids).hex(),
        },
        "envelope": {
            "inputs": {
                "sender": "police",
                "recipients": ["ngo", "labour"],
                "taskforce": "nl-north",
                "channel": "alerts",
                "seq": 7,
                "roster_seq": 1,
                "ts_ms": ts,
                "randomness": randomness.hex(),
                "schema": "tf.alert/1",
                "schema_fp": SCHEMA_FP.hex(),
                "body": body.hex(),
                "body_json": msgspec.json.decode(
                    (HERE.parent.parent / "examples/alert.json").read_bytes()
                ),
            },
            "intermediate": {
                "msg_id": msg_id.hex(),
                "nonce": nonce.hex(),
                "payload_key": payload_key.hex(),
                "eph_sk": eph_sk.hex(),
                "eph_pk": header.eph_pk.hex(),
                "wraps": wraps,
                "commit": key_commitment(payload_key, msg_id).hex(),
                "hdr": hdr_bytes.hex(),
                "pad_length": len(decoded_plain.pad),
                "plain": plain.hex(),
                "ct": ct.hex(),
                "signed_message": signed_message(hdr_bytes, ct).hex(),
                "sig": envelope[3].hex(),
            },
            "envelope": sealed.data.hex(),
            "env_hash": sealed.env_hash.hex(),
            "open_as": ["ngo", "labour"],
            "not_recipient": "coord",
            "open_at_ms": ts + 1_000,
        },
        "refusals": refusals(sender, body, randomness, ts),
        "keyfile": {
            "note": "police's key file, Argon2id opslimit 1 memlimit 8192 (test limits only), "
            "salt and nonce from the randomness below (16 then 24 bytes)",
            "passphrase": "correct horse battery staple",
            "randomness": DeterministicRng("tfshare/v1/keyfile")(40).hex(),
            "bytes": _keyfile(ids["police"]).hex(),
        },
    }


def _map_with(body: bytes, key: str, value: object) -> bytes:
    """The body map with one more entry ``key: value`` at its end (a repeat if key is in it)."""
    entries = msgspec.msgpack.decode(body)
    count = len(entries) + 1
    assert count < 16  # a fixmap header, as in the vector body
    return (
        bytes([0x80 | count])
        + body[1:]
        + msgspec.msgpack.encode(key)
        + msgspec.msgpack.encode(value)
    )


def refusals(sender: Identity, body: bytes, randomness: bytes, ts: int) -> list[dict[str, Any]]:
    """Envelopes from police to ngo and labour, each validly signed, that a receiver must
    refuse with the given code (PROTOCOL.md 4, 8.4, 9). Opened at ``open_at_ms`` by ngo or
    labour with a fresh replay store, under the vector roster and schema."""
    good = bytes.fromhex(build_base_envelope(sender, body, randomness, ts))
    _, hdr, ct, _ = msgspec.msgpack.decode(good)
    header = msgspec.msgpack.decode(hdr, type=Header)
    payload_key, nonce = randomness[40:72], randomness[16:40]
    plain = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        ct, L_PAYLOAD + hdr, nonce, payload_key
    )

    def signed(hdr_bytes: bytes, plain_bytes: bytes) -> str:
        """Encrypt ``plain_bytes`` under ``hdr_bytes`` with the vector K and nonce, sign."""
        ct2 = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            plain_bytes, L_PAYLOAD + hdr_bytes, nonce, payload_key
        )
        sig = sender.sign(signed_message(hdr_bytes, ct2))
        return encode([1, hdr_bytes, ct2, sig]).hex()

    def sealed_with(body_bytes: bytes) -> str:
        return build_base_envelope(sender, body_bytes, randomness, ts)

    mode3 = encode(msgspec.structs.replace(header, mode=3))
    return [
        {
            "name": "body_key_twice",
            "what": "the body map has the key 'severity' twice (first 'critical', then "
            "'low'); msgpack decoders differ on which wins, so no receiver may pick one",
            "envelope": sealed_with(_map_with(body, "severity", "low")),
            "code": "E_BODY",
        },
        {
            "name": "trailing_after_body",
            "what": "one zero byte after the body map, inside Plain.body",
            "envelope": sealed_with(body + b"\x00"),
            "code": "E_BODY",
        },
        {
            "name": "trailing_after_plain",
            "what": "one zero byte after the Plain array, inside the ciphertext",
            "envelope": signed(hdr, plain + b"\x00"),
            "code": "E_BODY",
        },
        {
            "name": "trailing_after_header",
            "what": "one zero byte after the Header array, inside hdr (signed)",
            "envelope": signed(hdr + b"\x00", plain),
            "code": "E_MALFORMED",
        },
        {
            "name": "trailing_after_envelope",
            "what": "one zero byte after the vector envelope",
            "envelope": (good + b"\x00").hex(),
            "code": "E_MALFORMED",
        },
        {
            "name": "mode_3",
            "what": "the vector header with mode 3 (neither direct nor epoch), signed",
            "envelope": signed(mode3, plain),
            "code": "E_MALFORMED",
        },
    ]


def build_base_envelope(sender: Identity, body: bytes, randomness: bytes, ts: int) -> str:
    """The vector envelope (hex) with another body: same sender, recipients and randomness."""
    ids = identities()
    sealed = seal_to(
        identity=sender,
        taskforce="nl-north",
        channel="alerts",
        roster_seq=1,
        recipients=[Recipient(a, ids[a].enc_pk) for a in ("ngo", "labour")],
        schema=vector_schema(),
        body=body,
        seq=7,
        now_ms=ts,
        rng=lambda n: randomness[:n],
    )
    return sealed.data.hex()


def _keyfile(identity: Identity) -> bytes:
    randomness = DeterministicRng("tfshare/v1/keyfile")(40)
    chunks = iter([randomness[:16], randomness[16:]])
    return seal_keyfile(
        identity,
        b"correct horse battery staple",
        limits=KDF_PROFILES["insecure-test"],
        rng=lambda n: next(chunks),
    )


if __name__ == "__main__":
    (HERE / "v1.json").write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {HERE / 'v1.json'}")
