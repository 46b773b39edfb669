"""The committed epoch-mode vectors (epoch-v1.json) against the code, both ways: re-generating
them gives the committed bytes, and the library opens each vector or refuses it with its code.
Every derived value is also re-derived with hashlib, msgspec and raw libsodium calls only
(what a second implementation would do from PROTOCOL.md 8.3a and 8.6)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from make_epoch_vectors import build, identities, render, rosters
from make_vectors import vector_schema
from nacl import bindings

from tfshare import roster as R
from tfshare.epochs import EpochKey, EpochKeyDelivery, EpochKeyring, channel_readers_digest
from tfshare.errors import RejectCode
from tfshare.messages import MessageType
from tfshare.protocol import Delivered, Outcome, Receiver, Rejection
from tfshare.replay import MemoryReplayStore
from tfshare.seal import Duplicate, ReceivePolicy

FILE = Path(__file__).parent / "epoch-v1.json"
VECTORS: dict[str, Any] = json.loads(FILE.read_text())
DELIVERIES: list[dict[str, Any]] = VECTORS["deliveries"]
MESSAGES: list[dict[str, Any]] = VECTORS["messages"]
REFUSALS: list[dict[str, Any]] = VECTORS["refusals"]
BY_NAME: dict[str, dict[str, Any]] = {v["name"]: v for v in DELIVERIES + MESSAGES}


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def L(label: str) -> bytes:
    return label.encode() + b"\x00"


def u32(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def blake(data: bytes, key: bytes = b"") -> bytes:
    return hashlib.blake2b(data, digest_size=32, key=key).digest()


def identity_entry(agency: str) -> dict[str, Any]:
    return next(i for i in VECTORS["identities"] if i["agency_id"] == agency)


class VectorSchemas:
    """tf.alert/1 with the vectors' opaque fingerprint (the delivery schema is built in)."""

    def lookup(self, name: str) -> MessageType | None:
        return vector_schema() if name == "tf.alert/1" else None


def receiver(vector: dict[str, Any], agency: str) -> Receiver:
    """A receiver as the vector says: its roster, its keys held, the envelopes it received
    before (each must be delivered), at open_at_ms."""
    data = h(VECTORS["rosters"][vector["roster"]])
    _, roster = R.decode_signed_roster(data)
    trusted, _ = R.verify_roster(
        data, anchor=R.anchor_of(roster), state=None, now_ms=VECTORS["open_at_ms"]
    )
    held = [
        EpochKey(e["channel"], e["epoch"], h(e["key"]), e["starts_ms"], h(e["readers_digest"]))
        for e in VECTORS["epochs"]
        if e["epoch"] in vector["keys_held"]
    ]
    box = Receiver(
        identity=identities()[agency],
        roster=trusted,
        replay=MemoryReplayStore(),
        schemas=VectorSchemas(),
        clock=lambda: int(VECTORS["open_at_ms"]),
        policy=ReceivePolicy(),
        epochs=EpochKeyring(held),
    )
    for name in vector.get("received_before", []):
        earlier = box.receive(h(BY_NAME[name]["envelope"]))
        assert isinstance(earlier, Delivered), (name, earlier)
    return box


# ---------------------------------------------------------------------------------------------
# The code reproduces the file


def test_regenerated_epoch_vectors_are_the_committed_bytes() -> None:
    """Sealing with the fixed keys, randomness and clock reproduces the file byte for byte."""
    assert render() == FILE.read_text()
    assert build() == VECTORS


def test_rosters_are_reproduced_and_verify() -> None:
    """Both rosters rebuild byte for byte; 'after' is seq+1 with ngo removed and out of the
    channel's active readers."""
    rebuilt = rosters(identities())
    assert {k: v.hex() for k, v in rebuilt.items()} == {
        "before": VECTORS["rosters"]["before"],
        "after": VECTORS["rosters"]["after"],
    }
    _, before = R.decode_signed_roster(rebuilt["before"])
    trusted = {}
    for name, data in rebuilt.items():
        trusted[name], _ = R.verify_roster(
            data, anchor=R.anchor_of(before), state=None, now_ms=VECTORS["open_at_ms"]
        )
    assert trusted["after"].seq == trusted["before"].seq + 1
    assert trusted["before"].channels["alerts"].mode_policy == 3
    assert trusted["before"].members["keyman"].roles == ["member", "key-manager"]
    assert "ngo" in trusted["before"].active_readers("alerts")
    assert "ngo" not in trusted["after"].active_readers("alerts")


# ---------------------------------------------------------------------------------------------
# Re-derivation with raw primitives


def test_builtin_schema_fingerprint() -> None:
    schema = VECTORS["builtin_schema"]
    assert schema["name"] == "tf.epoch-key/1"
    assert blake(L("tfshare/v1/builtin-schema") + b"tf.epoch-key/1").hex() == schema["schema_fp"]


def _verify_and_decrypt(vector: dict[str, Any], payload_key: bytes) -> list[Any]:
    """Signature by the sender over L(sig)||u32(hdr)||u32(ct), commitment, payload: Plain."""
    inter = vector["intermediate"]
    env = msgspec.msgpack.decode(h(vector["envelope"]))
    assert env == [1, h(inter["hdr"]), h(inter["ct"]), h(inter["sig"])]
    message = L("tfshare/v1/sig") + u32(h(inter["hdr"])) + u32(h(inter["ct"]))
    assert message.hex() == inter["signed_message"]
    sender = identity_entry(vector["inputs"]["sender"])
    bindings.crypto_sign_open(h(inter["sig"]) + message, h(sender["sign_pk"]))
    assert hashlib.sha256(h(vector["envelope"])).hexdigest() == vector["env_hash"]
    msg_id = h(inter["msg_id"])
    assert blake(L("tfshare/v1/commit") + msg_id, key=payload_key).hex() == inter["commit"]
    plain = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        h(inter["ct"]), L("tfshare/v1/payload") + h(inter["hdr"]), h(inter["nonce"]), payload_key
    )
    assert plain.hex() == inter["plain"]
    decoded: list[Any] = msgspec.msgpack.decode(plain)
    return decoded


@pytest.mark.parametrize("vector", DELIVERIES, ids=lambda v: v["name"])
def test_delivery_rederived_from_raw_primitives(vector: dict[str, Any]) -> None:
    """A key delivery: a direct-mode header from the key manager, its K wrapped to each
    recipient, and a Plain whose body is [channel, epoch, key, starts_ms, reason,
    readers_digest]."""
    inter, inputs = vector["intermediate"], vector["inputs"]
    hdr = msgspec.msgpack.decode(h(inter["hdr"]))
    assert hdr[4] == "keyman" == inputs["sender"]
    assert (hdr[10], hdr[11]) == (1, 0)  # mode 1, epoch 0
    assert hdr[12] == h(inter["eph_pk"])
    # every recipient unwraps the same K: X25519, wrap key, AEAD of the wrap
    payload_key = h(inter["payload_key"])
    wraps = hdr[13]
    kids = {wraps[i : i + 8]: wraps[i + 8 : i + 56] for i in range(0, len(wraps), 56)}
    assert len(kids) == len(inputs["recipients"])
    kid_sig = h(identity_entry("keyman")["kid_sig"])
    for agency in inputs["recipients"]:
        me = identity_entry(agency)
        shared = bindings.crypto_scalarmult(h(me["enc_sk"]), hdr[12])
        wk = blake(L("tfshare/v1/wrap") + hdr[12] + h(me["enc_pk"]) + hdr[2] + kid_sig, key=shared)
        wct = kids[h(me["kid_enc"])]
        unwrapped = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            wct, L("tfshare/v1/wrap") + hdr[2], bytes(24), wk
        )
        assert unwrapped == payload_key
    schema, schema_fp, body, pad = _verify_and_decrypt(vector, payload_key)
    assert (schema, schema_fp.hex()) == ("tf.epoch-key/1", VECTORS["builtin_schema"]["schema_fp"])
    assert body.hex() == vector["body"] and pad == bytes(len(pad))
    fields = vector["plaintext"]
    assert msgspec.msgpack.decode(body) == [
        fields["channel"],
        fields["epoch"],
        h(fields["key"]),
        fields["starts_ms"],
        fields["reason"],
        h(fields["readers_digest"]),
    ]
    epoch = next(e for e in VECTORS["epochs"] if e["epoch"] == fields["epoch"])
    assert (fields["key"], fields["starts_ms"]) == (epoch["key"], epoch["starts_ms"])
    # readers_digest = H(L(epoch-readers) || for each reader, by agency id: u32(id) || enc_pk)
    # over the readers it is delivered to
    assert inter["readers"] == sorted(inputs["recipients"])
    preimage = L("tfshare/v1/epoch-readers") + b"".join(
        u32(a.encode()) + h(identity_entry(a)["enc_pk"]) for a in inter["readers"]
    )
    assert preimage.hex() == inter["readers_digest_preimage"]
    assert blake(preimage).hex() == fields["readers_digest"]


def test_each_epochs_readers_digest_is_its_rosters_channel_readers() -> None:
    """Epoch 1 is made for the readers of "alerts" in the roster before ngo's removal,
    epoch 2 for those after: what a sender holding that roster compares the key with."""
    by_epoch = {e["epoch"]: e for e in VECTORS["epochs"]}
    digests = {}
    for name in ("before", "after"):
        data = h(VECTORS["rosters"][name])
        _, roster = R.decode_signed_roster(data)
        trusted, _ = R.verify_roster(
            data, anchor=R.anchor_of(roster), state=None, now_ms=VECTORS["open_at_ms"]
        )
        digests[name] = channel_readers_digest(trusted, "alerts").hex()
    assert (
        digests["before"]
        == by_epoch[1]["readers_digest"]
        == BY_NAME["delivery_epoch_1"]["plaintext"]["readers_digest"]
    )
    assert (
        digests["after"]
        == by_epoch[2]["readers_digest"]
        == BY_NAME["delivery_epoch_2"]["plaintext"]["readers_digest"]
    )
    assert digests["before"] != digests["after"]


@pytest.mark.parametrize("vector", MESSAGES, ids=lambda v: v["name"])
def test_message_rederived_from_raw_primitives(vector: dict[str, Any]) -> None:
    """A mode-2 message: header mode 2 with its epoch, empty eph_pk and wraps; K =
    H(L(msgkey) || msg_id || sender_kid, key=EK); the Plain holds the vector body."""
    inter, inputs = vector["intermediate"], vector["inputs"]
    epoch = next(e for e in VECTORS["epochs"] if e["epoch"] == inputs["epoch"])
    assert inputs["epoch_key"] == epoch["key"]
    police = identity_entry("police")
    msg_id = h(inter["msg_id"])
    assert inputs["randomness"] == inter["msg_id"] + inter["nonce"]
    k = blake(L("tfshare/v1/msgkey") + msg_id + h(police["kid_sig"]), key=h(epoch["key"]))
    assert k.hex() == inter["message_key"]
    hdr = msgspec.msgpack.decode(h(inter["hdr"]))
    assert hdr == [
        1, 1, msg_id, inputs["ts_ms"], "police", h(police["kid_sig"]), "nl-north", "alerts",
        inputs["seq"], inputs["roster_seq"], 2, inputs["epoch"], b"", b"", h(inter["nonce"]),
        h(inter["commit"]), [],
    ]  # fmt: skip
    schema, schema_fp, body, _ = _verify_and_decrypt(vector, k)
    assert (schema, schema_fp.hex(), body.hex()) == (
        inputs["schema"],
        inputs["schema_fp"],
        inputs["body"],
    )


# ---------------------------------------------------------------------------------------------
# The library opens each vector, and refuses each refusal with its code


@pytest.mark.parametrize(
    ("vector", "agency"),
    [(v, a) for v in DELIVERIES for a in v["open_as"]],
    ids=lambda x: x["name"] if isinstance(x, dict) else x,
)
def test_delivery_vector_is_accepted_and_adds_its_key(vector: dict[str, Any], agency: str) -> None:
    box = receiver(vector, agency)
    outcome = box.receive(h(vector["envelope"]))
    assert isinstance(outcome, Delivered), outcome
    record = outcome.message.record
    assert isinstance(record, EpochKeyDelivery)
    fields = vector["plaintext"]
    assert (
        record.channel,
        record.epoch,
        record.key.hex(),
        record.starts_ms,
        record.reason,
        record.readers_digest.hex(),
    ) == (
        fields["channel"],
        fields["epoch"],
        fields["key"],
        fields["starts_ms"],
        fields["reason"],
        fields["readers_digest"],
    )
    assert outcome.new_epoch_key == EpochKey.of(record)
    assert box.epochs.get("alerts", fields["epoch"]) == EpochKey.of(record)


@pytest.mark.parametrize(
    ("vector", "agency"),
    [(v, a) for v in MESSAGES for a in v["open_as"]],
    ids=lambda x: x["name"] if isinstance(x, dict) else x,
)
def test_message_vector_opens_for_each_reader(vector: dict[str, Any], agency: str) -> None:
    outcome = receiver(vector, agency).receive(h(vector["envelope"]))
    assert isinstance(outcome, Delivered), outcome
    message = outcome.message
    assert (message.sender, message.epoch, message.seq) == (
        "police",
        vector["inputs"]["epoch"],
        vector["inputs"]["seq"],
    )
    assert message.env_hash.hex() == vector["env_hash"]
    alert = vector_schema()
    assert msgspec.to_builtins(message.record) == msgspec.to_builtins(
        alert.from_body(h(vector["inputs"]["body"]))
    )


@pytest.mark.parametrize("vector", REFUSALS, ids=lambda v: v["name"])
def test_refusal_vector_gets_its_code(vector: dict[str, Any]) -> None:
    box = receiver(vector, vector["open_as"])
    held = list(box.epochs)
    outcome: Outcome = box.receive(h(vector["envelope"]))
    if vector["code"] == "DUPLICATE":
        assert isinstance(outcome, Duplicate), outcome
    else:
        assert isinstance(outcome, Rejection), outcome
        assert outcome.code is RejectCode(vector["code"]), outcome.reason
    assert list(box.epochs) == held


def test_old_epoch_vector_is_one_millisecond_past_the_grace() -> None:
    """The late message's ts_ms is exactly starts_ms(epoch 2) + grace + 1, and it is sealed
    under epoch 1 with the K the recipe gives."""
    vector = next(v for v in REFUSALS if v["name"] == "old_epoch_after_grace")
    hdr = msgspec.msgpack.decode(msgspec.msgpack.decode(h(vector["envelope"]))[1])
    epoch_2 = next(e for e in VECTORS["epochs"] if e["epoch"] == 2)
    assert hdr[3] == epoch_2["starts_ms"] + VECTORS["epoch_grace_ms"] + 1
    assert (hdr[10], hdr[11]) == (2, 1)
    epoch_1 = next(e for e in VECTORS["epochs"] if e["epoch"] == 1)
    k = blake(
        L("tfshare/v1/msgkey") + hdr[2] + h(identity_entry("police")["kid_sig"]),
        key=h(epoch_1["key"]),
    )
    assert blake(L("tfshare/v1/commit") + hdr[2], key=k) == hdr[15]


def test_removed_member_is_not_among_the_rekey_wraps() -> None:
    """The delivery of epoch 2 has no wrap for ngo's encryption key: it never gets the key."""
    rekey = next(v for v in DELIVERIES if v["name"] == "delivery_epoch_2")
    wraps = msgspec.msgpack.decode(h(rekey["intermediate"]["hdr"]))[13]
    kids = {wraps[i : i + 8] for i in range(0, len(wraps), 56)}
    assert h(identity_entry("ngo")["kid_enc"]) not in kids
    assert {h(identity_entry(a)["kid_enc"]) for a in ("coord", "police", "labour")} == kids
