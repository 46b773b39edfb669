"""Write tests/vectors/epoch-v1.json: deterministic test vectors for epoch mode (envelope mode 2,
PROTOCOL.md 8.3a, 8.4 checks 7d/9d/9e, 8.6).

The identities of v1.json (make_vectors.py) plus a key manager, "keyman" (seeds 05/45/85),
two signed rosters (before and after ngo's removal), fixed epoch keys, fixed randomness and a
fixed clock go in; exact bytes come out: the key delivery of epoch 1 (naming the digest of the
reader set it was made for, with that digest's preimage) (direct mode, built-in
schema tf.epoch-key/1), a message under epoch 1, the re-key after the removal (the delivery of
epoch 2 to the remaining readers) and a message under epoch 2, each with every intermediate
value, then refusals with their codes. Run it only when the wire format changes on purpose:
`python tests/vectors/make_epoch_vectors.py`; test_epoch_vectors.py checks the committed file
byte for byte against the current code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from nacl import bindings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from make_vectors import T0, body_bytes, fixed_identity, vector_schema  # noqa: E402
from tfkit import DeterministicRng  # noqa: E402

from tfshare import roster as R  # noqa: E402
from tfshare.encoding import encode, label, u32  # noqa: E402
from tfshare.envelope import Header  # noqa: E402
from tfshare.epochs import (  # noqa: E402
    EPOCH_GRACE_MS,
    EPOCH_KEY_SCHEMA,
    EPOCH_KEY_TYPE,
    DeliveryReason,
    EpochKey,
    EpochKeyDelivery,
    message_key,
    readers_digest,
)
from tfshare.keys import Identity, fingerprint  # noqa: E402
from tfshare.messages import MessageType  # noqa: E402
from tfshare.seal import (  # noqa: E402
    L_PAYLOAD,
    Recipient,
    Sealed,
    key_commitment,
    seal_to,
    seal_to_epoch,
    signed_message,
)

AGENCIES = ("coord", "police", "ngo", "labour", "keyman")
KEY_MANAGER = "keyman"
CHANNEL = "alerts"
# The clock: epoch 1 starts a minute after T0; ngo is removed an hour after T0 and the key
# manager re-keys at once; every vector is opened at OPEN_AT (inside every receive window).
STARTS_1 = T0 + 60_000
T_REMOVAL = T0 + 3_600_000
STARTS_2 = T_REMOVAL
OPEN_AT = T_REMOVAL + EPOCH_GRACE_MS + 60_000
EK = {
    1: DeterministicRng("tfshare/v1/epoch-vector/key-1")(32),
    2: DeterministicRng("tfshare/v1/epoch-vector/key-2")(32),
}
STARTS = {1: STARTS_1, 2: STARTS_2}
# Who each epoch is made for: the active readers of "alerts" before and after ngo's removal.
READERS = {1: ("coord", "police", "ngo", "labour"), 2: ("coord", "police", "labour")}


def readers_preimage(ids: dict[str, Identity], readers: Sequence[str]) -> bytes:
    """What ``readers_digest`` hashes, spelled out (PROTOCOL.md 8.6) for the vector file."""
    data = label("tfshare/v1/epoch-readers")
    for agency in sorted(readers, key=str.encode):
        data += u32(agency.encode()) + ids[agency].enc_pk
    return data


def made_for(ids: dict[str, Identity], epoch: int) -> bytes:
    return readers_digest((a, ids[a].enc_pk) for a in READERS[epoch])


def identities() -> dict[str, Identity]:
    return {agency: fixed_identity(agency, i + 1) for i, agency in enumerate(AGENCIES)}


def rosters(ids: dict[str, Identity]) -> dict[str, bytes]:
    """ "before": coord, police, ngo, labour read "alerts" (police writes), keyman holds the
    role key-manager and reads nothing; "alerts" allows both modes (mode_policy 3). "after":
    the same with ngo revoked ("retired") at T_REMOVAL, seq 2."""
    signed = R.new_roster(
        "nl-north", [ids["coord"].card_body()], threshold=1, now_ms=T0, valid_days=3650
    )
    for agency in ("police", "ngo", "labour", KEY_MANAGER):
        signed = R.add_member(signed, ids[agency].card_body(), role="member", now_ms=T0)
    for agency in ("coord", "police", "ngo", "labour"):
        signed = R.grant(
            signed, agency, channel=CHANNEL, read=True, write=agency == "police", now_ms=T0
        )
    _, roster = R.decode_signed_roster(encode(signed))
    roster = msgspec.structs.replace(
        roster,
        members=[
            msgspec.structs.replace(m, roles=["member", "key-manager"])
            if m.agency_id == KEY_MANAGER
            else m
            for m in roster.members
        ],
        channels=[
            msgspec.structs.replace(c, mode_policy=3) if c.name == CHANNEL else c
            for c in roster.channels
        ],
    )
    before = R.sign(R.edit(signed, roster, now_ms=T0), ids["coord"])
    after = R.sign(R.revoke(before, "ngo", reason="retired", now_ms=T_REMOVAL), ids["coord"])
    return {"before": encode(before), "after": encode(after)}


def _seq_of(roster_bytes: bytes) -> int:
    return R.decode_signed_roster(roster_bytes)[1].seq


def _hdr_ct(data: bytes) -> tuple[bytes, bytes, bytes, Header]:
    _, hdr, ct, sig = msgspec.msgpack.decode(data)
    return hdr, ct, sig, msgspec.msgpack.decode(hdr, type=Header)


def _plain(hdr: bytes, ct: bytes, nonce: bytes, payload_key: bytes) -> bytes:
    plain: bytes = bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        ct, L_PAYLOAD + hdr, nonce, payload_key
    )
    return plain


def delivery(
    ids: dict[str, Identity],
    *,
    name: str,
    roster_bytes: bytes,
    sender: str,
    recipients: Sequence[str],
    epoch: int,
    key: bytes,
    starts_ms: int,
    reason: DeliveryReason,
    seq: int,
    ts_ms: int,
) -> tuple[Sealed, dict[str, Any]]:
    """A tf.epoch-key/1 envelope (direct mode) and its vector entry."""
    randomness = DeterministicRng(f"tfshare/v1/epoch-vector/{name}")(104)
    # Made for the readers it is delivered to (a key manager's delivery of a whole epoch).
    digest = readers_digest((a, ids[a].enc_pk) for a in recipients)
    record = EpochKeyDelivery(CHANNEL, epoch, key, starts_ms, reason, digest)
    body = encode(record)
    sealed = seal_to(
        identity=ids[sender],
        taskforce="nl-north",
        channel=CHANNEL,
        roster_seq=_seq_of(roster_bytes),
        recipients=[Recipient(a, ids[a].enc_pk) for a in recipients],
        schema=EPOCH_KEY_TYPE,
        body=body,
        seq=seq,
        now_ms=ts_ms,
        rng=lambda n: randomness[:n],
    )
    hdr, ct, sig, header = _hdr_ct(sealed.data)
    msg_id, nonce, payload_key = randomness[:16], randomness[16:40], randomness[40:72]
    entry = {
        "name": name,
        "inputs": {
            "sender": sender,
            "recipients": list(recipients),
            "channel": CHANNEL,
            "seq": seq,
            "roster_seq": _seq_of(roster_bytes),
            "ts_ms": ts_ms,
            "randomness": randomness.hex(),
            "schema": EPOCH_KEY_SCHEMA,
            "schema_fp": EPOCH_KEY_TYPE.fingerprint.hex(),
        },
        "plaintext": {
            "channel": record.channel,
            "epoch": record.epoch,
            "key": record.key.hex(),
            "starts_ms": record.starts_ms,
            "reason": record.reason,
            "readers_digest": record.readers_digest.hex(),
        },
        "body": body.hex(),
        "intermediate": {
            "readers": sorted(recipients, key=str.encode),
            "readers_digest_preimage": readers_preimage(ids, recipients).hex(),
            "msg_id": msg_id.hex(),
            "nonce": nonce.hex(),
            "payload_key": payload_key.hex(),
            "eph_pk": header.eph_pk.hex(),
            "commit": key_commitment(payload_key, msg_id).hex(),
            "hdr": hdr.hex(),
            "plain": _plain(hdr, ct, nonce, payload_key).hex(),
            "ct": ct.hex(),
            "signed_message": signed_message(hdr, ct).hex(),
            "sig": sig.hex(),
        },
        "envelope": sealed.data.hex(),
        "env_hash": sealed.env_hash.hex(),
    }
    return sealed, entry


def message(
    ids: dict[str, Identity],
    *,
    name: str,
    roster_bytes: bytes,
    epoch: int,
    ts_ms: int,
    seq: int,
    schema: MessageType | None = None,
    body: bytes | None = None,
) -> tuple[Sealed, dict[str, Any]]:
    """A mode-2 message from police under epoch ``epoch``, and its vector entry."""
    randomness = DeterministicRng(f"tfshare/v1/epoch-vector/{name}")(40)
    schema = schema if schema is not None else vector_schema()
    body = body if body is not None else body_bytes()
    sender = ids["police"]
    sealed = seal_to_epoch(
        identity=sender,
        taskforce="nl-north",
        channel=CHANNEL,
        roster_seq=_seq_of(roster_bytes),
        epoch_key=EpochKey(CHANNEL, epoch, EK[epoch], STARTS[epoch], made_for(ids, epoch)),
        schema=schema,
        body=body,
        seq=seq,
        now_ms=ts_ms,
        rng=lambda n: randomness[:n],
    )
    hdr, ct, sig, _ = _hdr_ct(sealed.data)
    msg_id, nonce = randomness[:16], randomness[16:40]
    k = message_key(EK[epoch], msg_id, sender.kid_sig)
    entry = {
        "name": name,
        "inputs": {
            "sender": "police",
            "channel": CHANNEL,
            "epoch": epoch,
            "epoch_key": EK[epoch].hex(),
            "seq": seq,
            "roster_seq": _seq_of(roster_bytes),
            "ts_ms": ts_ms,
            "randomness": randomness.hex(),
            "schema": schema.name,
            "schema_fp": schema.fingerprint.hex(),
            "body": body.hex(),
        },
        "intermediate": {
            "msg_id": msg_id.hex(),
            "nonce": nonce.hex(),
            "message_key": k.hex(),
            "commit": key_commitment(k, msg_id).hex(),
            "hdr": hdr.hex(),
            "plain": _plain(hdr, ct, nonce, k).hex(),
            "ct": ct.hex(),
            "signed_message": signed_message(hdr, ct).hex(),
            "sig": sig.hex(),
        },
        "envelope": sealed.data.hex(),
        "env_hash": sealed.env_hash.hex(),
    }
    return sealed, entry


def build() -> dict[str, Any]:
    ids = identities()
    signed = rosters(ids)
    before, after = signed["before"], signed["after"]
    _, d1 = delivery(
        ids,
        name="delivery_epoch_1",
        roster_bytes=before,
        sender=KEY_MANAGER,
        recipients=("coord", "police", "ngo", "labour"),
        epoch=1,
        key=EK[1],
        starts_ms=STARTS_1,
        reason="initial",
        seq=1,
        ts_ms=STARTS_1,
    )
    d1.update(roster="before", open_as=["coord", "police", "ngo", "labour"], keys_held=[])
    _, m1 = message(
        ids, name="message_epoch_1", roster_bytes=before, epoch=1, ts_ms=T0 + 120_000, seq=1
    )
    m1.update(roster="before", open_as=["coord", "police", "ngo", "labour"], keys_held=[1])
    _, d2 = delivery(
        ids,
        name="delivery_epoch_2",
        roster_bytes=after,
        sender=KEY_MANAGER,
        recipients=("coord", "police", "labour"),
        epoch=2,
        key=EK[2],
        starts_ms=STARTS_2,
        reason="members",
        seq=2,
        ts_ms=STARTS_2,
    )
    d2.update(roster="after", open_as=["coord", "police", "labour"], keys_held=[1])
    _, m2 = message(
        ids, name="message_epoch_2", roster_bytes=after, epoch=2, ts_ms=T_REMOVAL + 60_000, seq=2
    )
    m2.update(roster="after", open_as=["coord", "police", "labour"], keys_held=[1, 2])

    late, late_entry = message(
        ids,
        name="old_epoch_after_grace",
        roster_bytes=after,
        epoch=1,
        ts_ms=STARTS_2 + EPOCH_GRACE_MS + 1,
        seq=3,
    )
    forged, forged_entry = delivery(
        ids,
        name="delivery_from_non_key_manager",
        roster_bytes=before,
        sender="police",
        recipients=("coord", "police", "ngo", "labour"),
        epoch=2,
        key=DeterministicRng("tfshare/v1/epoch-vector/forged-key")(32),
        starts_ms=STARTS_1 + 60_000,
        reason="members",
        seq=9,
        ts_ms=STARTS_1 + 60_000,
    )
    refusals = [
        {
            "name": "old_epoch_after_grace",
            "what": "police seals under epoch 1 at ts_ms = starts_ms(epoch 2) + EPOCH_GRACE + 1 "
            "ms; labour holds epochs 1 and 2 (check 7d)",
            "roster": "after",
            "open_as": "labour",
            "keys_held": [1, 2],
            "received_before": [],
            "envelope": late.data.hex(),
            "intermediate": late_entry["intermediate"],
            "code": "E_EPOCH",
        },
        {
            "name": "delivery_from_non_key_manager",
            "what": "police (a writer, not a key manager) sends a tf.epoch-key/1 for epoch 2 in "
            "direct mode, validly signed and wrapped to every reader (check 9d)",
            "roster": "before",
            "open_as": "labour",
            "keys_held": [1],
            "received_before": [],
            "envelope": forged.data.hex(),
            "intermediate": forged_entry["intermediate"],
            "code": "E_NOT_AUTHORIZED",
        },
        {
            "name": "replayed_key_delivery",
            "what": "the delivery of epoch 1 again, after labour received it and the re-key to "
            "epoch 2 (check 6: the replay store, before 9e would call it an older epoch)",
            "roster": "after",
            "open_as": "labour",
            "keys_held": [],
            "received_before": ["delivery_epoch_1", "delivery_epoch_2"],
            "envelope": d1["envelope"],
            "code": "DUPLICATE",
        },
        {
            "name": "removed_member_after_rotation",
            "what": "ngo, removed in the 'after' roster and still holding epoch 1, receives the "
            "message under epoch 2 (check 7a: no longer a reader)",
            "roster": "after",
            "open_as": "ngo",
            "keys_held": [1],
            "received_before": [],
            "envelope": m2["envelope"],
            "code": "E_NOT_RECIPIENT",
        },
        {
            "name": "removed_member_with_the_old_roster",
            "what": "the same message, ngo still trusting the 'before' roster (where it reads): "
            "it never got epoch 2's key (check 7d; the epoch is ahead of any it holds)",
            "roster": "before",
            "open_as": "ngo",
            "keys_held": [1],
            "received_before": [],
            "envelope": m2["envelope"],
            "code": "E_EPOCH",
        },
        {
            "name": "rekey_not_addressed_to_removed_member",
            "what": "the delivery of epoch 2 at ngo under the 'before' roster: no wrap for it "
            "(check 7b)",
            "roster": "before",
            "open_as": "ngo",
            "keys_held": [1],
            "received_before": [],
            "envelope": d2["envelope"],
            "code": "E_NOT_RECIPIENT",
        },
    ]
    return {
        "description": "tfshare epoch-mode (envelope mode 2) test vectors (PROTOCOL.md 8.3a, "
        "8.4, 8.6). All byte strings are lowercase hex. The identities are those of v1.json "
        "plus the key manager 'keyman' (seeds 05.., 45.., 85..). A key delivery is a direct-mode "
        "envelope (randomness: one 104-byte draw, msg_id(16) || nonce(24) || K(32) || "
        "eph_sk(32)); a mode-2 message draws 40 bytes, msg_id(16) || nonce(24), and its K is "
        "H(L('tfshare/v1/msgkey') || msg_id || sender_kid, key=EK). To check a vector: verify "
        "the roster named, load the epoch keys of keys_held into the receiver's keyring, "
        "receive the envelopes of received_before in order (each is delivered), then the "
        "envelope at open_at_ms.",
        "identities": [
            {
                "agency_id": i.agency_id,
                "sign_seed": i.secret_material()[0].hex(),
                "enc_sk": i.secret_material()[1].hex(),
                "nats_seed": i.secret_material()[2].hex(),
                "created_ms": i.created_ms,
                "sign_pk": i.sign_pk.hex(),
                "enc_pk": i.enc_pk.hex(),
                "kid_sig": i.kid_sig.hex(),
                "kid_enc": i.kid_enc.hex(),
                "fingerprint": fingerprint(i.sign_pk),
            }
            for i in ids.values()
        ],
        "rosters": {
            "note": "coord is the only coordinator (k=1); coord, police, ngo and labour read "
            "'alerts', police writes, keyman has the roles member and key-manager; 'alerts' "
            "has mode_policy 3 (direct and epoch). 'after' is 'before' with ngo revoked "
            "(retired) at t_removal_ms, re-signed.",
            "before": before.hex(),
            "after": after.hex(),
            "t_removal_ms": T_REMOVAL,
        },
        "builtin_schema": {
            "name": EPOCH_KEY_SCHEMA,
            "schema_fp": EPOCH_KEY_TYPE.fingerprint.hex(),
        },
        "epochs": [
            {
                "channel": CHANNEL,
                "epoch": e,
                "key": EK[e].hex(),
                "starts_ms": STARTS[e],
                "readers_digest": made_for(ids, e).hex(),
            }
            for e in (1, 2)
        ],
        "epoch_grace_ms": EPOCH_GRACE_MS,
        "open_at_ms": OPEN_AT,
        "deliveries": [d1, d2],
        "messages": [m1, m2],
        "refusals": refusals,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    (HERE / "epoch-v1.json").write_text(render())
    print(f"wrote {HERE / 'epoch-v1.json'}")
