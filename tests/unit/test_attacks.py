"""The offline rows of attacks.md: each attack on the receiver, and the code it must produce.

Every rejection test checks four things (``assert_rejected``): the exact ``RejectCode``; that
nothing was delivered (``Receiver.receive`` returned a ``Rejection``); that the replay store is
exactly as it was before; and that the log event carries the code and no plaintext.

Malicious but validly signed envelopes are built from the construction's own parts
(``draft`` + ``finish``: the same steps as ``seal_to``, with one step changed), so each test
shows that one specific defence, not an earlier check, stops the attack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from nacl import bindings
from tfkit import (
    NOW_MS,
    SCHEMAS,
    DeterministicRng,
    TaskForce,
    build_taskforce,
    example_dict,
    example_record,
)
from tfkit import identity as kit_identity

from tfshare import roster as R
from tfshare.encoding import MAX_UINT, encode
from tfshare.envelope import (
    DEFAULT_MAX_AGE_MS,
    MAX_ENVELOPE,
    MAX_SKEW_MS,
    SUITE_1,
    VERSION,
    WRAP_SIZE,
    Envelope,
    Header,
    Mode,
    Plain,
    Ref,
    Relation,
    pack_wraps,
    pad_length,
    wrap_at,
)
from tfshare.errors import RejectCode, RosterRejected, TrustError
from tfshare.keyfile import KDF_PROFILES, open_keyfile, read_keyfile_header, seal_keyfile
from tfshare.keys import Identity
from tfshare.protocol import Delivered, Outcome, Receiver, Rejection, log_event
from tfshare.registry.schema import Schema
from tfshare.replay import MemoryReplayStore
from tfshare.seal import (
    L_PAYLOAD,
    L_WRAP,
    ZERO_NONCE,
    Duplicate,
    ReceivePolicy,
    Recipient,
    envelope_hash,
    expected_subject,
    key_commitment,
    resolve_recipients,
    seal_to,
    signed_message,
    wrap_key,
)

_encrypt = bindings.crypto_aead_xchacha20poly1305_ietf_encrypt


def _schema(name: str) -> Schema:
    found = SCHEMAS.lookup(name)
    assert found is not None
    return found


ALERT = _schema("tf.alert/1")
RED_FLAG = _schema("tf.red_flag/1")
ALERT_DICT = example_dict("tf.alert/1")
ALERT_BODY = ALERT.to_body(example_record("tf.alert/1"))
ENTITY_VALUE = "+31 6 1234 5678"
# What must never reach a log line: the alert's words and its encoded body.
PLAINTEXTS: tuple[str, ...] = (str(ALERT_DICT["title"]), str(ALERT_DICT["summary"]), ENTITY_VALUE)

OTHER_TITLE = "A different case entirely, same message id"
OTHER_BODY = ALERT.to_body(
    ALERT.from_json(msgspec.json.encode({**ALERT_DICT, "title": OTHER_TITLE}))
)

ALL_READERS = ("coord", "police", "ngo", "labour")


# ---------------------------------------------------------------------------------------------
# Receiving and asserting


@dataclass
class Inbox:
    """A receiver together with the replay store it writes (kept to inspect ``entries``)."""

    receiver: Receiver
    store: MemoryReplayStore


def inbox(
    tf: TaskForce, agency: str, *, now_ms: int | None = None, policy: ReceivePolicy | None = None
) -> Inbox:
    store = MemoryReplayStore()
    clock_value = tf.now_ms if now_ms is None else now_ms
    receiver = Receiver(
        identity=tf.ids[agency],
        roster=tf.trusted(),
        replay=store,
        schemas=tf.schemas,
        clock=lambda: clock_value,
        policy=policy if policy is not None else ReceivePolicy(),
    )
    return Inbox(receiver, store)


def receive(box: Inbox, data: bytes, subject: str | None = None) -> Outcome:
    """Receive, turning any exception into a test failure: the receiver must never raise."""
    try:
        return box.receiver.receive(data, subject)
    except Exception as exc:
        pytest.fail(
            f"Receiver.receive raised {type(exc).__module__}.{type(exc).__qualname__}({exc}) "
            "instead of returning a Rejection"
        )


def _no_plaintext(text: str, extra: Sequence[str] = ()) -> None:
    for secret in (*PLAINTEXTS, OTHER_TITLE, *extra):
        assert secret not in text
    for body in (ALERT_BODY, OTHER_BODY):
        assert body.hex() not in text
        assert repr(body)[2:42] not in text


def assert_rejected(
    box: Inbox,
    data: bytes,
    code: RejectCode | None,
    *,
    subject: str | None = None,
    extra_secrets: Sequence[str] = (),
) -> Rejection:
    """Receive ``data``; assert rejection with ``code`` (None: any code), store unchanged, log
    event with the code and no plaintext."""
    entries_before = dict(box.store.entries)
    seqs_before = dict(box.store.seqs)
    outcome = receive(box, data, subject)
    assert isinstance(outcome, Rejection), f"expected {code}, got {type(outcome).__name__}"
    if code is not None:
        assert outcome.code is code, f"expected {code}, got {outcome.code}: {outcome.reason}"
    assert box.store.entries == entries_before
    assert box.store.seqs == seqs_before
    assert outcome.env_hash == envelope_hash(data)
    name, fields = log_event(outcome)
    assert name == "envelope_rejected"
    assert fields["code"] == outcome.code.value
    _no_plaintext(repr(fields) + repr(outcome), extra_secrets)
    return outcome


def assert_delivered(box: Inbox, data: bytes, subject: str | None = None) -> Delivered:
    outcome = receive(box, data, subject)
    assert isinstance(outcome, Delivered), f"not delivered: {outcome!r}"
    _no_plaintext(repr(log_event(outcome)))
    return outcome


# ---------------------------------------------------------------------------------------------
# Building envelopes, honest and otherwise


def seal_at(
    tf: TaskForce,
    ts_ms: int,
    *,
    sender: str = "police",
    seed: str = "message",
    recipients: Sequence[Recipient] | None = None,
) -> bytes:
    """seal_to at an arbitrary timestamp (no sendability policy): for time-window edges."""
    roster = tf.trusted()
    return seal_to(
        identity=tf.ids[sender],
        taskforce=roster.taskforce,
        channel="alerts",
        roster_seq=roster.seq,
        recipients=recipients or resolve_recipients(roster, "alerts", None),
        schema=ALERT,
        body=ALERT_BODY,
        seq=1,
        now_ms=ts_ms,
        rng=DeterministicRng(seed),
    ).data


@dataclass(frozen=True)
class Draft:
    """The parts of an envelope before the payload is encrypted and the whole is signed."""

    header: Header
    payload_key: bytes
    plain: bytes


def plain_bytes(
    body: bytes = ALERT_BODY,
    *,
    schema: str = "tf.alert/1",
    schema_fp: bytes | None = None,
    pad: bytes | None = None,
) -> bytes:
    fp = schema_fp if schema_fp is not None else _schema(schema).fingerprint
    if pad is None:
        pad = bytes(pad_length(len(encode(Plain(schema, fp, body, b"")))))
    return encode(Plain(schema, fp, body, pad))


def draft(
    tf: TaskForce,
    sender: str = "police",
    *,
    to: Sequence[str] | None = None,
    channel: str = "alerts",
    seed: str = "forged",
    plain: bytes | None = None,
    wrap_keys: Mapping[str, bytes] | None = None,
) -> Draft:
    """Mode-1 parts exactly as ``seal_to`` makes them (same rng order), with hooks to lie:
    ``wrap_keys`` wraps another payload key for the named recipients."""
    roster = tf.trusted()
    me = tf.ids[sender]
    rng = DeterministicRng(seed)
    fresh = rng(104)  # one draw, split as seal_to splits it
    msg_id, nonce, payload_key, eph_sk = fresh[:16], fresh[16:40], fresh[40:72], fresh[72:]
    eph_pk = bindings.crypto_scalarmult_base(eph_sk)
    wraps = []
    for r in resolve_recipients(roster, channel, to):
        shared = bindings.crypto_scalarmult(eph_sk, r.enc_pk)
        wk = wrap_key(shared, eph_pk, r.enc_pk, msg_id, me.kid_sig)
        wrapped = (wrap_keys or {}).get(r.agency_id, payload_key)
        wraps.append((r.kid, _encrypt(wrapped, L_WRAP + msg_id, ZERO_NONCE, wk)))
    header = Header(
        v=VERSION,
        suite=SUITE_1,
        msg_id=msg_id,
        ts_ms=tf.now_ms,
        sender=sender,
        sender_kid=me.kid_sig,
        taskforce=roster.taskforce,
        channel=channel,
        seq=1,
        roster_seq=roster.seq,
        mode=Mode.DIRECT,
        epoch=0,
        eph_pk=eph_pk,
        wraps=pack_wraps(wraps),
        nonce=nonce,
        commit=key_commitment(payload_key, msg_id),
        refs=[],
    )
    return Draft(header, payload_key, plain if plain is not None else plain_bytes())


def finish(
    d: Draft,
    signer: Identity,
    *,
    header: Header | None = None,
    hdr_bytes: bytes | None = None,
    plain: bytes | None = None,
    env_v: int = VERSION,
) -> bytes:
    """Encrypt the payload under the (possibly altered) header and sign it all as ``signer``."""
    h = header if header is not None else d.header
    hdr = hdr_bytes if hdr_bytes is not None else encode(h)
    ct = _encrypt(plain if plain is not None else d.plain, L_PAYLOAD + hdr, h.nonce, d.payload_key)
    return encode(Envelope(env_v, hdr, ct, signer.sign(signed_message(hdr, ct))))


def records(wraps: bytes) -> list[tuple[bytes, bytes]]:
    """The (kid_enc, wct) records of a header's packed ``wraps``, in wire order."""
    return [wrap_at(wraps, i) for i in range(len(wraps) // WRAP_SIZE)]


def packed_as_is(wraps: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Records concatenated in the order given (pack_wraps would sort them)."""
    return b"".join(kid + wct for kid, wct in wraps)


def split(data: bytes) -> tuple[Envelope, Header]:
    env = msgspec.msgpack.decode(data, type=Envelope)
    return env, msgspec.msgpack.decode(env.hdr, type=Header)


def with_header(data: bytes, header: Header) -> bytes:
    """Swap in another header, keeping ct and sig (what someone without the keys can do)."""
    env, _ = split(data)
    return encode(Envelope(env.v, encode(header), env.ct, env.sig))


def resign(data: bytes, signer: Identity, **changes: Any) -> bytes:
    """Change header fields and sign again as ``signer``; ct is kept (its key is unknown)."""
    env, hdr = split(data)
    new_hdr = encode(msgspec.structs.replace(hdr, **changes))
    return encode(Envelope(env.v, new_hdr, env.ct, signer.sign(signed_message(new_hdr, env.ct))))


# A hand-written msgpack encoder for the header, so widths can be chosen (row 20) and fields
# replaced by the wrong type (row 19). With no options it must equal msgspec's canonical bytes.


def mp_uint(n: int, wide: bool = False) -> bytes:
    if wide or n > 0xFFFFFFFF:
        return b"\xcf" + n.to_bytes(8, "big")
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return b"\xcc" + bytes([n])
    if n <= 0xFFFF:
        return b"\xcd" + n.to_bytes(2, "big")
    return b"\xce" + n.to_bytes(4, "big")


def mp_bin(b: bytes, wide: bool = False) -> bytes:
    if wide or len(b) > 0xFFFF:
        return b"\xc6" + len(b).to_bytes(4, "big") + b
    if len(b) <= 0xFF:
        return b"\xc4" + bytes([len(b)]) + b
    return b"\xc5" + len(b).to_bytes(2, "big") + b


def mp_str(s: str, wide: bool = False) -> bytes:
    raw = s.encode()
    if wide:
        return b"\xda" + len(raw).to_bytes(2, "big") + raw
    if len(raw) < 32:
        return bytes([0xA0 | len(raw)]) + raw
    return b"\xd9" + bytes([len(raw)]) + raw


def mp_array(n: int, wide: bool = False) -> bytes:
    if wide:
        return b"\xdd" + n.to_bytes(4, "big")
    if n < 16:
        return bytes([0x90 | n])
    return b"\xdc" + n.to_bytes(2, "big")


def header_parts(h: Header, wide: str = "") -> list[tuple[str, bytes]]:
    """(field, encoded bytes) in wire order; ``wide`` names one field to encode too wide."""

    def w(name: str) -> bool:
        return wide == name

    refs = mp_array(len(h.refs), w("refs")) + b"".join(
        mp_array(3) + mp_uint(r.relation) + mp_bin(r.msg_id) + mp_bin(r.env_hash) for r in h.refs
    )
    return [
        ("v", mp_uint(h.v, w("v"))),
        ("suite", mp_uint(h.suite, w("suite"))),
        ("msg_id", mp_bin(h.msg_id, w("msg_id"))),
        ("ts_ms", mp_uint(h.ts_ms, w("ts_ms"))),
        ("sender", mp_str(h.sender, w("sender"))),
        ("sender_kid", mp_bin(h.sender_kid, w("sender_kid"))),
        ("taskforce", mp_str(h.taskforce, w("taskforce"))),
        ("channel", mp_str(h.channel, w("channel"))),
        ("seq", mp_uint(h.seq, w("seq"))),
        ("roster_seq", mp_uint(h.roster_seq, w("roster_seq"))),
        ("mode", mp_uint(h.mode, w("mode"))),
        ("epoch", mp_uint(h.epoch, w("epoch"))),
        ("eph_pk", mp_bin(h.eph_pk, w("eph_pk"))),
        ("wraps", mp_bin(h.wraps, w("wraps"))),
        ("nonce", mp_bin(h.nonce, w("nonce"))),
        ("commit", mp_bin(h.commit, w("commit"))),
        ("refs", refs),
    ]


def pack_header(h: Header, *, wide: str = "", replace: Mapping[str, bytes] | None = None) -> bytes:
    parts = [(name, (replace or {}).get(name, raw)) for name, raw in header_parts(h, wide)]
    return mp_array(len(parts), wide == "header") + b"".join(raw for _, raw in parts)


def header_offsets(h: Header) -> dict[str, int]:
    """Where each field's encoding starts inside the canonical header bytes."""
    offsets: dict[str, int] = {}
    position = len(mp_array(17))
    for name, raw in header_parts(h):
        offsets[name] = position
        position += len(raw)
    return offsets


def flip(data: bytes, index: int, mask: int) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def roster_of(signed: R.SignedRoster) -> R.Roster:
    return R.decode_signed_roster(encode(signed))[1]


def resigned(tf: TaskForce, signed: R.SignedRoster, *signers: str) -> TaskForce:
    """The same identities under another (re-signed) roster."""
    for name in signers:
        signed = R.sign(signed, tf.ids[name])
    return TaskForce(ids=tf.ids, signed=signed, anchor=tf.anchor, now_ms=tf.now_ms)


def taskforce_named(name: str) -> TaskForce:
    """The kit's task force, same agencies and keys, under another task-force name."""
    ids = {n: kit_identity(n) for n in ("coord", "police", "ngo", "labour", "outsider")}
    t = NOW_MS - 3_600_000
    signed = R.new_roster(name, [ids["coord"].card_body()], threshold=1, now_ms=t, valid_days=90)
    for member in ("police", "ngo", "labour"):
        signed = R.add_member(signed, ids[member].card_body(), role="member", now_ms=t)
    for agency in ALL_READERS:
        signed = R.grant(
            signed,
            agency,
            channel="alerts",
            read=True,
            write=agency in ("police", "labour"),
            now_ms=t,
        )
    signed = R.grant(signed, "ngo", channel="tips", read=False, write=True, now_ms=t)
    signed = R.grant(signed, "police", channel="tips", read=True, write=False, now_ms=t)
    signed = R.sign(signed, ids["coord"])
    return TaskForce(ids=ids, signed=signed, anchor=R.anchor_of(roster_of(signed)))


@pytest.fixture(scope="module")
def tf3() -> TaskForce:
    """A 2-of-3 task force: coordinators c1, c2, c3; its roster is signed by c1 and c2."""
    return build_taskforce(coordinators=("c1", "c2", "c3"), threshold=2)


# ---------------------------------------------------------------------------------------------
# The forging kit itself


def test_forge_reproduces_seal_byte_for_byte(taskforce: TaskForce) -> None:
    """draft + finish with no lie gives exactly seal's bytes: forgeries differ only as told."""
    sealed = taskforce.seal("police", rng_seed="forged")
    assert finish(draft(taskforce), taskforce.ids["police"]) == sealed.data


def test_hand_encoder_matches_canonical_header(taskforce: TaskForce) -> None:
    """The hand-written header encoder gives msgspec's canonical bytes when nothing is widened."""
    header = draft(taskforce).header
    assert pack_header(header) == encode(header)


# ---------------------------------------------------------------------------------------------
# Row 1: flip a bit in ct


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_row01_bit_flip_in_ct_is_bad_sig(taskforce: TaskForce, where: str) -> None:
    """A single flipped bit anywhere in ct (including the AEAD tag) fails the signature."""
    data = taskforce.seal("police").data
    env, _ = split(data)
    index = {"first": 0, "middle": len(env.ct) // 2, "last": len(env.ct) - 1}[where]
    tampered = encode(Envelope(env.v, env.hdr, flip(env.ct, index, 0x01), env.sig))
    assert_rejected(inbox(taskforce, "ngo"), tampered, RejectCode.E_BAD_SIG)


# ---------------------------------------------------------------------------------------------
# Row 2: flip a bit in hdr (the code depends on which check the flipped byte meets first)

ROW2_FLIPS = [
    # (field, byte offset within the field's encoding, xor mask, code)
    ("msg_id", 2, 0x01, RejectCode.E_BAD_SIG),  # inside the 16 id bytes
    ("ts_ms", 8, 0x01, RejectCode.E_BAD_SIG),  # lowest bit of the timestamp: 1 ms
    ("seq", 0, 0x02, RejectCode.E_BAD_SIG),  # seq 1 -> 3
    ("eph_pk", 2, 0x01, RejectCode.E_BAD_SIG),
    ("wraps", 15, 0x01, RejectCode.E_BAD_SIG),  # inside the first record's wct
    ("wraps", 9, 0x01, RejectCode.E_BAD_SIG),  # last bit of the first kid_enc: order kept
    ("nonce", 2, 0x80, RejectCode.E_BAD_SIG),
    ("commit", 33, 0x01, RejectCode.E_BAD_SIG),  # last commit byte
    ("header", 0, 0x01, RejectCode.E_MALFORMED),  # array16 0xdc -> array32 0xdd
    ("sender", 1, 0x20, RejectCode.E_MALFORMED),  # "police" -> "Police": not a valid name
    ("eph_pk", 1, 0x01, RejectCode.E_MALFORMED),  # bin length 32 -> 33
    ("mode", 0, 0x02, RejectCode.E_MALFORMED),  # mode 1 -> 3: unknown mode
    ("epoch", 0, 0x01, RejectCode.E_MALFORMED),  # direct mode with epoch 1
    ("v", 0, 0x02, RejectCode.E_VERSION),  # hdr.v 1 -> 3 != env.v
    ("suite", 0, 0x02, RejectCode.E_VERSION),  # suite 1 -> 3: unknown
    ("taskforce", 1, 0x01, RejectCode.E_CHANNEL),  # "nl-north" -> "ol-north"
    ("sender_kid", 2, 0x01, RejectCode.E_UNKNOWN_SENDER),
]


@pytest.mark.parametrize(
    ("field", "offset", "mask", "code"),
    ROW2_FLIPS,
    ids=[f"{f}+{o}^{m:#x}" for f, o, m, _ in ROW2_FLIPS],
)
def test_row02_bit_flip_in_hdr(
    taskforce: TaskForce, field: str, offset: int, mask: int, code: RejectCode
) -> None:
    """A flipped header bit is caught by the first check that reads that byte, with its code."""
    data = taskforce.seal("police").data
    env, hdr = split(data)
    start = 0 if field == "header" else header_offsets(hdr)[field]
    tampered = encode(Envelope(env.v, flip(env.hdr, start + offset, mask), env.ct, env.sig))
    assert_rejected(inbox(taskforce, "ngo"), tampered, code)


def test_row02_same_header_in_a_wider_encoding_is_noncanonical(taskforce: TaskForce) -> None:
    """hdr re-encoded with the same meaning (array16 -> array32) is E_NONCANONICAL."""
    # Caught at decode, before the signature is looked at: no key is needed for this.
    data = taskforce.seal("police").data
    env, hdr = split(data)
    rewritten = pack_header(hdr, wide="header")
    assert msgspec.msgpack.decode(rewritten, type=Header) == hdr
    tampered = encode(Envelope(env.v, rewritten, env.ct, env.sig))
    assert_rejected(inbox(taskforce, "ngo"), tampered, RejectCode.E_NONCANONICAL)


# ---------------------------------------------------------------------------------------------
# Row 3: a signature taken from another message of the same sender


def test_row03_signature_from_another_message_is_bad_sig(taskforce: TaskForce) -> None:
    """Police's valid signature on message 1 does not verify message 2."""
    first = taskforce.seal("police", rng_seed="first").data
    second = taskforce.seal("police", rng_seed="second").data
    env1, _ = split(first)
    env2, _ = split(second)
    spliced = encode(Envelope(env2.v, env2.hdr, env2.ct, env1.sig))
    assert_rejected(inbox(taskforce, "ngo"), spliced, RejectCode.E_BAD_SIG)


# ---------------------------------------------------------------------------------------------
# Row 4: a non-recipient re-signs A's envelope as itself


def test_row04_non_recipient_resigning_as_itself_is_wrap(taskforce: TaskForce) -> None:
    """Labour (writer, not a recipient) re-signs police's envelope as its own: ngo gets E_WRAP."""
    # The wrap key binds police's sender_kid; labour cannot re-encrypt ct (no K), nor rewrap.
    data = taskforce.seal("police", to=["ngo"]).data
    labour = taskforce.ids["labour"]
    forged = resign(data, labour, sender="labour", sender_kid=labour.kid_sig)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_WRAP)


def test_row04_recipient_resigning_as_itself_is_wrap(taskforce: TaskForce) -> None:
    """Labour as a co-recipient (it knows K) re-signs and re-encrypts as itself: ngo gets E_WRAP."""
    # ngo's wrap still binds police's sender_kid, so it does not open under labour's.
    d = draft(taskforce, to=["ngo", "labour"])
    labour = taskforce.ids["labour"]
    header = msgspec.structs.replace(d.header, sender="labour", sender_kid=labour.kid_sig)
    forged = finish(d, labour, header=header)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_WRAP)


# ---------------------------------------------------------------------------------------------
# Row 5: a valid signature by a key not in the roster for that sender


def test_row05_outsider_key_claiming_to_be_police_is_unknown_sender(taskforce: TaskForce) -> None:
    """An outsider signs, with its own valid key and kid, a header that says sender police."""
    outsider = taskforce.ids["outsider"]
    d = draft(taskforce)
    header = msgspec.structs.replace(d.header, sender_kid=outsider.kid_sig)
    forged = finish(d, outsider, header=header)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_UNKNOWN_SENDER)


def test_row05_another_members_key_claiming_to_be_police_is_unknown_sender(
    taskforce: TaskForce,
) -> None:
    """Labour signs as itself but names police as the sender: the kid is not police's."""
    labour = taskforce.ids["labour"]
    d = draft(taskforce)
    header = msgspec.structs.replace(d.header, sender_kid=labour.kid_sig)
    forged = finish(d, labour, header=header)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_UNKNOWN_SENDER)


def test_row05_police_key_before_its_validity_is_unknown_sender(taskforce: TaskForce) -> None:
    """A police message dated before police's key became valid (2 days ago) is E_UNKNOWN_SENDER."""
    data = seal_at(taskforce, NOW_MS - 2 * 86_400_000)
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_UNKNOWN_SENDER)


def test_row05_police_kid_signed_by_another_key_is_bad_sig(taskforce: TaskForce) -> None:
    """A header with police's real kid, signed by the outsider's key, fails the signature."""
    forged = finish(draft(taskforce), taskforce.ids["outsider"])
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_BAD_SIG)


# ---------------------------------------------------------------------------------------------
# Row 6: exact replay


def test_row06_exact_replay_is_duplicate_and_delivered_once(taskforce: TaskForce) -> None:
    """The same bytes twice: delivered once, then DUPLICATE with the store unchanged."""
    data = taskforce.seal("police").data
    box = inbox(taskforce, "ngo")
    first = assert_delivered(box, data)
    entries_after_first = dict(box.store.entries)
    assert list(entries_after_first) == [(first.message.sender_kid, first.message.msg_id)]
    outcomes = [receive(box, data) for _ in range(3)]
    assert all(isinstance(o, Duplicate) for o in outcomes)
    assert box.store.entries == entries_after_first
    assert sum(isinstance(o, Delivered) for o in [first, *outcomes]) == 1
    name, fields = log_event(outcomes[0])
    assert name == "envelope_duplicate"
    assert fields["code"] == "DUPLICATE"
    assert fields["msg_id"] == first.message.msg_id.hex()
    _no_plaintext(repr(fields) + repr(outcomes[0]))


# ---------------------------------------------------------------------------------------------
# Row 8: same msg_id, different signed content


def test_row08_same_msg_id_different_content_is_equivocation(taskforce: TaskForce) -> None:
    """Police re-seals with the same randomness but another body: same msg_id, other bytes."""
    original = taskforce.seal("police", rng_seed="equivocate")
    other = taskforce.seal("police", body=OTHER_BODY, rng_seed="equivocate")
    assert other.msg_id == original.msg_id
    assert other.env_hash != original.env_hash
    box = inbox(taskforce, "ngo")
    assert_delivered(box, original.data)
    assert_rejected(box, other.data, RejectCode.E_EQUIVOCATION)
    assert [e.env_hash for e in box.store.entries.values()] == [original.env_hash]


def test_row08_equivocating_envelope_alone_is_valid(taskforce: TaskForce) -> None:
    """Control for row 8: the second version alone is valid; only the replay store catches it."""
    other = taskforce.seal("police", body=OTHER_BODY, rng_seed="equivocate")
    assert_delivered(inbox(taskforce, "ngo"), other.data)


# ---------------------------------------------------------------------------------------------
# Row 9: capture older than MAX_AGE


def test_row09_capture_older_than_max_age_is_stale(taskforce: TaskForce) -> None:
    """An envelope received DEFAULT_MAX_AGE_MS + 1 ms after it was sealed is E_STALE."""
    data = taskforce.seal("police").data
    late = inbox(taskforce, "ngo", now_ms=NOW_MS + DEFAULT_MAX_AGE_MS + 1)
    assert_rejected(late, data, RejectCode.E_STALE)


def test_row09_capture_exactly_max_age_old_is_accepted(taskforce: TaskForce) -> None:
    """At exactly DEFAULT_MAX_AGE_MS old the envelope is still inside the window."""
    data = taskforce.seal("police").data
    assert_delivered(inbox(taskforce, "ngo", now_ms=NOW_MS + DEFAULT_MAX_AGE_MS), data)


# ---------------------------------------------------------------------------------------------
# Row 10: gaps or reordering in seq


def test_row10_seq_gap_is_delivered_and_noted(taskforce: TaskForce) -> None:
    """seq 1 then 3: both delivered, the second with seq_note "gap" in its log event."""
    box = inbox(taskforce, "ngo")
    one = assert_delivered(box, taskforce.seal("police", seq=1, rng_seed="s1").data)
    three = assert_delivered(box, taskforce.seal("police", seq=3, rng_seed="s3").data)
    assert one.seq_note is None
    assert three.seq_note == "gap"
    assert log_event(three)[1]["seq_anomaly"] == "gap"
    assert len(box.store.entries) == 2


def test_row10_seq_reorder_is_delivered_and_noted(taskforce: TaskForce) -> None:
    """seq 1, 3, then 2: the late one is delivered with seq_note "reorder"."""
    box = inbox(taskforce, "ngo")
    assert_delivered(box, taskforce.seal("police", seq=1, rng_seed="s1").data)
    assert_delivered(box, taskforce.seal("police", seq=3, rng_seed="s3").data)
    two = assert_delivered(box, taskforce.seal("police", seq=2, rng_seed="s2").data)
    assert two.seq_note == "reorder"
    assert log_event(two)[1]["seq_anomaly"] == "reorder"
    assert box.store.seqs[("police", "alerts")] == 3


# ---------------------------------------------------------------------------------------------
# Row 11: a recipient re-publishes to a non-recipient or another channel


def test_row11_forward_to_non_recipient_is_not_recipient(taskforce: TaskForce) -> None:
    """Ngo forwards police's message addressed only to ngo to labour: E_NOT_RECIPIENT."""
    data = taskforce.seal("police", to=["ngo"]).data
    assert_delivered(inbox(taskforce, "ngo"), data)
    assert_rejected(inbox(taskforce, "labour"), data, RejectCode.E_NOT_RECIPIENT)


def test_row11_wrap_for_a_non_reader_is_not_recipient(taskforce: TaskForce) -> None:
    """Ngo adds a wrap for labour, not a tips reader: labour gets E_NOT_RECIPIENT anyway."""
    roster = taskforce.trusted()
    ngo = taskforce.ids["ngo"]
    data = seal_to(
        identity=ngo,
        taskforce=roster.taskforce,
        channel="tips",
        roster_seq=roster.seq,
        recipients=[Recipient(name, taskforce.ids[name].enc_pk) for name in ("police", "labour")],
        schema=ALERT,
        body=ALERT_BODY,
        seq=1,
        now_ms=NOW_MS,
        rng=DeterministicRng("widened audience"),
    ).data
    assert_delivered(inbox(taskforce, "police"), data)
    assert_rejected(inbox(taskforce, "labour"), data, RejectCode.E_NOT_RECIPIENT)


def test_row11_republish_on_another_channel_subject_is_channel(taskforce: TaskForce) -> None:
    """Ngo re-publishes police's alert on its own tips subject: police gets E_CHANNEL."""
    data = taskforce.seal("police").data
    subject = expected_subject("nl-north", "tips", "ngo")
    assert_rejected(inbox(taskforce, "police"), data, RejectCode.E_CHANNEL, subject=subject)


def test_row11_republish_under_another_sender_subject_is_channel(taskforce: TaskForce) -> None:
    """Labour re-publishes police's alert on tf.nl-north.ch.alerts.labour: E_CHANNEL."""
    data = taskforce.seal("police").data
    subject = expected_subject("nl-north", "alerts", "labour")
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_CHANNEL, subject=subject)


def test_row11_expected_subject_is_accepted(taskforce: TaskForce) -> None:
    """Control for rows 11-12: on its own subject tf.nl-north.ch.alerts.police it is delivered."""
    data = taskforce.seal("police").data
    subject = expected_subject("nl-north", "alerts", "police")
    assert subject == "tf.nl-north.ch.alerts.police"
    assert_delivered(inbox(taskforce, "ngo"), data, subject)


# ---------------------------------------------------------------------------------------------
# Row 12: cross-channel or cross-taskforce replay


def test_row12_cross_taskforce_envelope_is_channel(taskforce: TaskForce) -> None:
    """An envelope of task force nl-south (same agencies, same keys) is E_CHANNEL in nl-north."""
    south = taskforce_named("nl-south")
    data = south.seal("police").data
    assert_delivered(inbox(south, "ngo"), data)
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_CHANNEL)


def test_row12_cross_taskforce_subject_is_channel(taskforce: TaskForce) -> None:
    """An nl-north envelope replayed on the nl-south subject is E_CHANNEL."""
    data = taskforce.seal("police").data
    subject = expected_subject("nl-south", "alerts", "police")
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_CHANNEL, subject=subject)


def test_row12_cross_channel_replay_is_channel(taskforce: TaskForce) -> None:
    """Ngo's tips message replayed onto the alerts subject is E_CHANNEL for police."""
    data = taskforce.seal("ngo", channel="tips").data
    subject = expected_subject("nl-north", "alerts", "ngo")
    assert_delivered(inbox(taskforce, "police"), data, expected_subject("nl-north", "tips", "ngo"))
    assert_rejected(inbox(taskforce, "police"), data, RejectCode.E_CHANNEL, subject=subject)


# ---------------------------------------------------------------------------------------------
# Row 13: the broker strips, adds or reorders a wrap (it cannot re-sign)


def test_row13_stripped_wrap_is_bad_sig(taskforce: TaskForce) -> None:
    """The broker drops ngo's wrap (the rest stay sorted): police gets E_BAD_SIG."""
    data = taskforce.seal("police").data
    _, hdr = split(data)
    ngo_kid = taskforce.ids["ngo"].kid_enc
    wraps = [w for w in records(hdr.wraps) if w[0] != ngo_kid]
    assert len(wraps) == len(records(hdr.wraps)) - 1
    tampered = with_header(data, msgspec.structs.replace(hdr, wraps=pack_wraps(wraps)))
    assert_rejected(inbox(taskforce, "police"), tampered, RejectCode.E_BAD_SIG)


def test_row13_added_wrap_is_bad_sig(taskforce: TaskForce) -> None:
    """The broker adds a wrap for the outsider, in sorted position: police gets E_BAD_SIG."""
    data = taskforce.seal("police").data
    _, hdr = split(data)
    extra = (taskforce.ids["outsider"].kid_enc, DeterministicRng("wct")(48))
    wraps = pack_wraps([*records(hdr.wraps), extra])
    tampered = with_header(data, msgspec.structs.replace(hdr, wraps=wraps))
    assert_rejected(inbox(taskforce, "police"), tampered, RejectCode.E_BAD_SIG)


def test_row13_reordered_wraps_are_malformed(taskforce: TaskForce) -> None:
    """Reordered wraps are E_MALFORMED (not E_BAD_SIG): strict kid order is checked at decode."""
    # The wraps must be strictly ascending by kid_enc; _decode_envelope checks that before the
    # signature, so a broker's reordering is reported as malformed rather than as a bad sig.
    data = taskforce.seal("police").data
    _, hdr = split(data)
    first, second, *rest = records(hdr.wraps)
    wraps = packed_as_is([second, first, *rest])
    tampered = with_header(data, msgspec.structs.replace(hdr, wraps=wraps))
    assert_rejected(inbox(taskforce, "police"), tampered, RejectCode.E_MALFORMED)


def test_row13_duplicated_wrap_is_malformed(taskforce: TaskForce) -> None:
    """A wrap listed twice breaks strict ascent too: E_MALFORMED."""
    data = taskforce.seal("police").data
    _, hdr = split(data)
    wraps = packed_as_is([records(hdr.wraps)[0], *records(hdr.wraps)])
    tampered = with_header(data, msgspec.structs.replace(hdr, wraps=wraps))
    assert_rejected(inbox(taskforce, "police"), tampered, RejectCode.E_MALFORMED)


# ---------------------------------------------------------------------------------------------
# Row 14: the sender transplants a wrap from message M1 into M2


def _transplanted(tf: TaskForce) -> bytes:
    """M2, signed by police, with ngo's wrap taken from M1 (police sealed both)."""
    m1 = draft(tf, seed="m1")
    m2 = draft(tf, seed="m2")
    ngo_kid = tf.ids["ngo"].kid_enc
    old = next(w for w in records(m1.header.wraps) if w[0] == ngo_kid)
    assert old not in records(m2.header.wraps)
    wraps = pack_wraps([old if w[0] == ngo_kid else w for w in records(m2.header.wraps)])
    return finish(m2, tf.ids["police"], header=msgspec.structs.replace(m2.header, wraps=wraps))


def test_row14_transplanted_wrap_is_wrap(taskforce: TaskForce) -> None:
    """Police moves ngo's wrap from M1 into M2 and signs M2: ngo gets E_WRAP."""
    # msg_id and eph_pk are inputs of the wrap key, so M1's wrap cannot open in M2.
    assert_rejected(inbox(taskforce, "ngo"), _transplanted(taskforce), RejectCode.E_WRAP)


def test_row14_other_recipients_of_transplant_still_open(taskforce: TaskForce) -> None:
    """Control for row 14: the untouched wraps of the forged M2 still open for labour."""
    assert_delivered(inbox(taskforce, "labour"), _transplanted(taskforce))


# ---------------------------------------------------------------------------------------------
# Row 15: the sender wraps a different K for one recipient


def test_row15_different_key_for_one_recipient_is_commit(taskforce: TaskForce) -> None:
    """Police wraps another K for ngo only: ngo's K fails the key commitment (E_COMMIT)."""
    d = draft(taskforce, wrap_keys={"ngo": DeterministicRng("other key")(32)})
    forged = finish(d, taskforce.ids["police"])
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_COMMIT)


@pytest.mark.parametrize("agency", ["coord", "police", "labour"])
def test_row15_other_recipients_still_open(taskforce: TaskForce, agency: str) -> None:
    """Control for row 15: the recipients that got the committed K open the same envelope."""
    d = draft(taskforce, wrap_keys={"ngo": DeterministicRng("other key")(32)})
    forged = finish(d, taskforce.ids["police"])
    assert_delivered(inbox(taskforce, agency), forged)


# ---------------------------------------------------------------------------------------------
# Row 16: downgrade


@pytest.mark.parametrize("v", [0, 2])
def test_row16_envelope_version_is_version(taskforce: TaskForce, v: int) -> None:
    """Envelope v = 0 or 2 (header v = 1, correctly signed) is E_VERSION."""
    forged = finish(draft(taskforce), taskforce.ids["police"], env_v=v)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_VERSION)


@pytest.mark.parametrize("v", [0, 2])
def test_row16_header_version_differs_from_envelope_is_version(
    taskforce: TaskForce, v: int
) -> None:
    """hdr.v != env.v (env.v = 1), correctly signed: E_VERSION."""
    d = draft(taskforce)
    forged = finish(d, taskforce.ids["police"], header=msgspec.structs.replace(d.header, v=v))
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_VERSION)


def test_row16_both_versions_two_is_version(taskforce: TaskForce) -> None:
    """env.v = hdr.v = 2, correctly signed: E_VERSION."""
    d = draft(taskforce)
    header = msgspec.structs.replace(d.header, v=2)
    forged = finish(d, taskforce.ids["police"], header=header, env_v=2)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_VERSION)


def test_row16_other_version_shape_is_version(taskforce: TaskForce) -> None:
    """An envelope of another version with another shape ([2, "x"]) is E_VERSION."""
    assert_rejected(inbox(taskforce, "ngo"), encode([2, "x"]), RejectCode.E_VERSION)


@pytest.mark.parametrize("suite", [0, 2, 255])
def test_row16_unknown_suite_is_version(taskforce: TaskForce, suite: int) -> None:
    """A correctly signed header naming an unknown suite is E_VERSION."""
    d = draft(taskforce)
    header = msgspec.structs.replace(d.header, suite=suite)
    forged = finish(d, taskforce.ids["police"], header=header)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_VERSION)


def test_row16_suite_below_channel_minimum_is_version(taskforce: TaskForce) -> None:
    """A suite-1 envelope on a channel whose roster entry demands min_suite 2 is E_VERSION."""
    roster = roster_of(taskforce.signed)
    channels = [
        msgspec.structs.replace(c, min_suite=2) if c.name == "alerts" else c
        for c in roster.channels
    ]
    raised = R.edit(
        taskforce.signed,
        msgspec.structs.replace(roster, channels=channels),
        now_ms=NOW_MS - 60_000,
    )
    strict = resigned(taskforce, raised, "coord")
    assert strict.trusted().channels["alerts"].min_suite == 2
    data = taskforce.seal("police").data
    assert_rejected(inbox(strict, "ngo"), data, RejectCode.E_VERSION)


# ---------------------------------------------------------------------------------------------
# Row 17: unknown schema, or a schema not allowed on the channel


def test_row17_unknown_schema_is_schema(taskforce: TaskForce) -> None:
    """A Plain naming tf.unknown/1 (well formed, correctly sealed) is E_SCHEMA."""
    plain = plain_bytes(schema="tf.unknown/1", schema_fp=bytes(32))
    forged = finish(draft(taskforce), taskforce.ids["police"], plain=plain)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_SCHEMA)


def test_row17_schema_fingerprint_mismatch_is_schema(taskforce: TaskForce) -> None:
    """tf.alert/1 with red_flag's fingerprint (a different schema version) is E_SCHEMA."""
    plain = plain_bytes(schema="tf.alert/1", schema_fp=RED_FLAG.fingerprint)
    forged = finish(draft(taskforce), taskforce.ids["police"], plain=plain)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_SCHEMA)


def test_row17_schema_not_allowed_on_channel_is_schema(taskforce: TaskForce) -> None:
    """An alert on a channel the roster restricts to tf.red_flag is E_SCHEMA."""
    restricted = R.set_channel_schemas(
        taskforce.signed, "alerts", ["tf.red_flag"], now_ms=NOW_MS - 60_000
    )
    strict = resigned(taskforce, restricted, "coord")
    assert strict.trusted().channels["alerts"].schemas == ["tf.red_flag"]
    data = taskforce.seal("police").data
    assert_rejected(inbox(strict, "ngo"), data, RejectCode.E_SCHEMA)


def test_row17_allowed_schema_on_restricted_channel_is_accepted(taskforce: TaskForce) -> None:
    """Control for row 17: a red flag on the tf.red_flag-only channel is delivered."""
    restricted = R.set_channel_schemas(
        taskforce.signed, "alerts", ["tf.red_flag"], now_ms=NOW_MS - 60_000
    )
    strict = resigned(taskforce, restricted, "coord")
    data = taskforce.seal("police", schema="tf.red_flag/1").data
    assert_delivered(inbox(strict, "ngo"), data)


# ---------------------------------------------------------------------------------------------
# Row 18: oversize


def test_row18_envelope_over_512_kib_is_too_large(taskforce: TaskForce) -> None:
    """A signed-looking envelope whose ct makes it > 512 KiB is E_TOO_LARGE."""
    env, _ = split(taskforce.seal("police").data)
    big = encode(Envelope(env.v, env.hdr, bytes(MAX_ENVELOPE), env.sig))
    assert len(big) > MAX_ENVELOPE
    assert_rejected(inbox(taskforce, "ngo"), big, RejectCode.E_TOO_LARGE)


def test_row18_size_gate_edge(taskforce: TaskForce) -> None:
    """Exactly MAX_ENVELOPE bytes pass the size gate (then fail decode); one more byte does not."""
    box = inbox(taskforce, "ngo")
    assert_rejected(box, b"\xc1" * MAX_ENVELOPE, RejectCode.E_MALFORMED)
    assert_rejected(box, b"\xc1" * (MAX_ENVELOPE + 1), RejectCode.E_TOO_LARGE)


def test_row18_one_mib_byte_string_is_too_large(taskforce: TaskForce) -> None:
    """A 1 MiB byte string as hdr makes the envelope E_TOO_LARGE before any decoding."""
    env, _ = split(taskforce.seal("police").data)
    huge = encode(Envelope(env.v, bytes(1 << 20), env.ct, env.sig))
    assert_rejected(inbox(taskforce, "ngo"), huge, RejectCode.E_TOO_LARGE)


def test_row18_declared_one_mib_byte_string_is_malformed(taskforce: TaskForce) -> None:
    """A small envelope whose hdr bin32 claims 1 MiB is E_MALFORMED (nothing allocated)."""
    data = b"\x94\x01\xc6" + (1 << 20).to_bytes(4, "big") + bytes(100)
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_MALFORMED)


def _fake_wraps(n: int) -> list[tuple[bytes, bytes]]:
    rng = DeterministicRng("fake wraps")
    return [(rng(8), rng(48)) for _ in range(n)]


def test_row18_257_wraps_is_malformed(taskforce: TaskForce) -> None:
    """A correctly signed header with 257 wraps (police's real one among them) is E_MALFORMED."""
    d = draft(taskforce, to=["police"])
    wraps = [*records(d.header.wraps), *_fake_wraps(256)]
    assert len({kid for kid, _ in wraps}) == 257
    header = msgspec.structs.replace(d.header, wraps=pack_wraps(wraps))
    forged = finish(d, taskforce.ids["police"], header=header)
    assert len(forged) < MAX_ENVELOPE
    assert_rejected(inbox(taskforce, "police"), forged, RejectCode.E_MALFORMED)


def test_row18_256_recipients_is_accepted(taskforce: TaskForce) -> None:
    """Control for row 18: the maximum of 256 wraps is accepted."""
    rng = DeterministicRng("fake recipients")
    fakes = [Recipient(f"fake{i}", bindings.crypto_scalarmult_base(rng(32))) for i in range(255)]
    police = Recipient("police", taskforce.ids["police"].enc_pk)
    data = seal_at(taskforce, NOW_MS, recipients=[police, *fakes])
    delivered = assert_delivered(inbox(taskforce, "police"), data)
    assert len(delivered.message.recipients) == 256


def test_row18_17_refs_is_malformed(taskforce: TaskForce) -> None:
    """More than 16 refs in a correctly signed header is E_MALFORMED."""
    d = draft(taskforce)
    rng = DeterministicRng("refs")
    refs = [Ref(int(Relation.RESHARE), rng(16), rng(32)) for _ in range(17)]
    forged = finish(d, taskforce.ids["police"], header=msgspec.structs.replace(d.header, refs=refs))
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_MALFORMED)


# ---------------------------------------------------------------------------------------------
# Row 19: truncated or garbage msgpack, a map for an array, trailing bytes, wrong types


def test_row19_every_truncation_is_malformed(taskforce: TaskForce) -> None:
    """Every proper prefix of a valid envelope (including empty) is E_MALFORMED."""
    data = taskforce.seal("police").data
    box = inbox(taskforce, "ngo")
    for length in range(len(data)):
        assert_rejected(box, data[:length], RejectCode.E_MALFORMED)


GARBAGE = [
    b"\xc1",  # the one byte msgpack never uses
    b"\xff" * 64,
    b"not msgpack, just words",
    bytes(100),
    b"\x94" + b"\xff" * 10,
    b"\x94\x01",
    b"\xde\xff\xff",  # map16 claiming 65535 entries
    b"\xdd\xff\xff\xff\xff",  # array32 claiming 4 billion elements
    b"\xdc" + b"\x91" * 10_000,  # deep nesting
]


@pytest.mark.parametrize("data", GARBAGE, ids=[g[:6].hex() for g in GARBAGE])
def test_row19_garbage_is_malformed(taskforce: TaskForce, data: bytes) -> None:
    """Garbage bytes are E_MALFORMED."""
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_MALFORMED)


def test_row19_random_garbage_is_malformed(taskforce: TaskForce) -> None:
    """200 random byte strings are each E_MALFORMED."""
    # A leading fixarray with a small integer reads as another version (E_VERSION): avoided.
    rng = DeterministicRng("garbage")
    box = inbox(taskforce, "ngo")
    for i in range(200):
        data = rng(1 + i * 7)
        if 0x90 <= data[0] <= 0x9F:
            data = b"\xdc" + data[1:]
        assert_rejected(box, data, RejectCode.E_MALFORMED)


def test_row19_envelope_as_map_is_malformed(taskforce: TaskForce) -> None:
    """The envelope as a msgpack map of its fields instead of an array is E_MALFORMED."""
    env, _ = split(taskforce.seal("police").data)
    as_map = encode(msgspec.structs.asdict(env))
    assert as_map[0] == 0x84
    assert_rejected(inbox(taskforce, "ngo"), as_map, RejectCode.E_MALFORMED)


def test_row19_header_as_map_is_malformed(taskforce: TaskForce) -> None:
    """A header encoded as a map (inside an array envelope) is E_MALFORMED."""
    data = taskforce.seal("police").data
    env, hdr = split(data)
    as_map = encode(msgspec.structs.asdict(hdr))
    tampered = encode(Envelope(env.v, as_map, env.ct, env.sig))
    assert_rejected(inbox(taskforce, "ngo"), tampered, RejectCode.E_MALFORMED)


def test_row19_trailing_bytes_after_envelope_are_malformed(taskforce: TaskForce) -> None:
    """One byte after a valid envelope is E_MALFORMED."""
    data = taskforce.seal("police").data
    assert_rejected(inbox(taskforce, "ngo"), data + b"\x00", RejectCode.E_MALFORMED)


def test_row19_trailing_bytes_inside_header_are_malformed(taskforce: TaskForce) -> None:
    """One byte after the header array inside hdr, correctly signed, is E_MALFORMED."""
    d = draft(taskforce)
    forged = finish(d, taskforce.ids["police"], hdr_bytes=encode(d.header) + b"\x00")
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_MALFORMED)


def _envelope_with(v: bytes, hdr: bytes, ct: bytes, sig: bytes, n: int = 4) -> bytes:
    return mp_array(n) + v + hdr + ct + sig


ENVELOPE_WRONG_TYPES: dict[str, Callable[[Envelope], bytes]] = {
    "v-str": lambda e: _envelope_with(mp_str("1"), mp_bin(e.hdr), mp_bin(e.ct), mp_bin(e.sig)),
    "v-float": lambda e: _envelope_with(
        msgspec.msgpack.encode(1.0), mp_bin(e.hdr), mp_bin(e.ct), mp_bin(e.sig)
    ),
    "v-nil": lambda e: _envelope_with(b"\xc0", mp_bin(e.hdr), mp_bin(e.ct), mp_bin(e.sig)),
    "v-negative": lambda e: _envelope_with(b"\xff", mp_bin(e.hdr), mp_bin(e.ct), mp_bin(e.sig)),
    "v-bool": lambda e: _envelope_with(b"\xc3", mp_bin(e.hdr), mp_bin(e.ct), mp_bin(e.sig)),
    "hdr-str": lambda e: _envelope_with(b"\x01", mp_str("x" * 40), mp_bin(e.ct), mp_bin(e.sig)),
    "ct-array": lambda e: _envelope_with(b"\x01", mp_bin(e.hdr), mp_array(0), mp_bin(e.sig)),
    "sig-63-bytes": lambda e: _envelope_with(
        b"\x01", mp_bin(e.hdr), mp_bin(e.ct), mp_bin(e.sig[:63])
    ),
    "sig-str": lambda e: _envelope_with(b"\x01", mp_bin(e.hdr), mp_bin(e.ct), mp_str("s" * 30)),
    "five-elements": lambda e: _envelope_with(
        b"\x01", mp_bin(e.hdr), mp_bin(e.ct), mp_bin(e.sig) + b"\x00", n=5
    ),
    "three-elements": lambda e: _envelope_with(b"\x01", mp_bin(e.hdr), mp_bin(e.ct), b"", n=3),
}


@pytest.mark.parametrize("case", sorted(ENVELOPE_WRONG_TYPES))
def test_row19_envelope_wrong_types_are_malformed(taskforce: TaskForce, case: str) -> None:
    """An envelope element of the wrong type, length or count is E_MALFORMED."""
    env, _ = split(taskforce.seal("police").data)
    data = ENVELOPE_WRONG_TYPES[case](env)
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_MALFORMED)


HEADER_WRONG_TYPES: dict[str, bytes] = {
    "ts_ms-str": mp_str("1795000000000"),
    "ts_ms-negative": b"\xd3" + (-1).to_bytes(8, "big", signed=True),
    "ts_ms-float": msgspec.msgpack.encode(1.795e12),
    "seq-nil": b"\xc0",
    "sender-bin": mp_bin(b"police"),
    "sender-bad-utf8": b"\xa2\xff\xfe",
    "sender_kid-7-bytes": mp_bin(b"\x00" * 7),
    "msg_id-str": mp_str("0123456789abcdef"),
    "wraps-map": b"\x80",
    "wraps-array": mp_array(0),
    "refs-str": mp_str("refs"),
    "nonce-23-bytes": mp_bin(b"\x00" * 23),
    "eph_pk-33-bytes": mp_bin(b"\x09" * 33),
}


@pytest.mark.parametrize("case", sorted(HEADER_WRONG_TYPES))
def test_row19_header_wrong_types_are_malformed(taskforce: TaskForce, case: str) -> None:
    """A correctly signed header with one field of the wrong type or length is E_MALFORMED."""
    d = draft(taskforce)
    field = case.split("-", 1)[0]
    hdr = pack_header(d.header, replace={field: HEADER_WRONG_TYPES[case]})
    forged = finish(d, taskforce.ids["police"], hdr_bytes=hdr)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_MALFORMED)


def test_row19_random_mutations_never_raise(taskforce: TaskForce) -> None:
    """Fuzz: 400 single-byte substitutions each give a Rejection, never an exception."""
    data = taskforce.seal("police").data
    box = inbox(taskforce, "ngo")
    rng = DeterministicRng("mutations")
    for _ in range(400):
        index = int.from_bytes(rng(4), "big") % len(data)
        value = (data[index] + 1 + rng(1)[0] % 255) % 256
        mutated = data[:index] + bytes([value]) + data[index + 1 :]
        assert_rejected(box, mutated, None)
    assert box.store.entries == {}


def _mutations(data: bytes, seed: str, count: int) -> list[bytes]:
    rng = DeterministicRng(seed)
    out = []
    for _ in range(count):
        index = int.from_bytes(rng(4), "big") % len(data)
        value = (data[index] + 1 + rng(1)[0] % 255) % 256
        out.append(data[:index] + bytes([value]) + data[index + 1 :])
    return out


def test_row19_resigned_header_mutations_never_raise(taskforce: TaskForce) -> None:
    """Fuzz: 300 mutated headers, re-signed by police, each give an outcome, never an exception."""
    # Signed by the real sender, the mutations reach the checks after the signature (wrap,
    # commit, decrypt); some are legitimate messages and may be delivered.
    d = draft(taskforce)
    box = inbox(taskforce, "ngo")
    for hdr in _mutations(encode(d.header), "header mutations", 300):
        outcome = receive(box, finish(d, taskforce.ids["police"], hdr_bytes=hdr))
        if isinstance(outcome, Rejection):
            _no_plaintext(repr(log_event(outcome)))


def test_row19_resealed_plain_mutations_never_raise(taskforce: TaskForce) -> None:
    """Fuzz: 300 mutated Plains, sealed by police, each give an outcome, never an exception."""
    d = draft(taskforce)
    box = inbox(taskforce, "ngo")
    for i, plain in enumerate(_mutations(d.plain, "plain mutations", 300)):
        header = msgspec.structs.replace(d.header, msg_id=i.to_bytes(16, "big"))
        outcome = receive(box, finish(d, taskforce.ids["police"], header=header, plain=plain))
        assert not isinstance(outcome, Duplicate)


@pytest.mark.parametrize("extra", [1, 55, 57])
def test_row19_wraps_not_whole_records_is_malformed(taskforce: TaskForce, extra: int) -> None:
    """Packed wraps whose length is not a multiple of 56 bytes, correctly signed: E_MALFORMED."""
    d = draft(taskforce)
    header = msgspec.structs.replace(d.header, wraps=d.header.wraps + bytes(extra))
    forged = finish(d, taskforce.ids["police"], header=header)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_MALFORMED)


def test_row19_direct_mode_without_wraps_is_malformed(taskforce: TaskForce) -> None:
    """A correctly signed direct-mode header with no wraps is E_MALFORMED."""
    d = draft(taskforce)
    forged = finish(d, taskforce.ids["police"], header=msgspec.structs.replace(d.header, wraps=b""))
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_MALFORMED)


def test_row19_direct_mode_without_eph_pk_is_malformed(taskforce: TaskForce) -> None:
    """A correctly signed direct-mode header with an empty eph_pk is E_MALFORMED."""
    d = draft(taskforce)
    forged = finish(
        d, taskforce.ids["police"], header=msgspec.structs.replace(d.header, eph_pk=b"")
    )
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_MALFORMED)


# ---------------------------------------------------------------------------------------------
# Row 20: non-canonical integer or length widths, correctly signed

WIDENED = [
    "header",  # array16 -> array32
    "v",  # fixint -> uint64
    "suite",
    "seq",
    "roster_seq",
    "mode",
    "epoch",
    "sender",  # fixstr -> str16
    "taskforce",
    "channel",
    "msg_id",  # bin8 -> bin32
    "sender_kid",
    "eph_pk",
    "nonce",
    "commit",
    "wraps",  # bin8 -> bin32
    "refs",
]


@pytest.mark.parametrize("wide", WIDENED)
def test_row20_wide_encoding_in_header_is_noncanonical(taskforce: TaskForce, wide: str) -> None:
    """A header field encoded wider than needed, correctly signed, is E_NONCANONICAL."""
    # ts_ms is already a uint64 at today's clock, so it cannot be widened; seq etc. stand in.
    d = draft(taskforce)
    hdr = pack_header(d.header, wide=wide)
    assert hdr != encode(d.header)
    assert msgspec.msgpack.decode(hdr, type=Header) == d.header
    forged = finish(d, taskforce.ids["police"], hdr_bytes=hdr)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_NONCANONICAL)


def pack_envelope(e: Envelope, wide: str = "") -> bytes:
    return (
        mp_array(4, wide == "array")
        + mp_uint(e.v, wide == "v")
        + mp_bin(e.hdr, wide == "hdr")
        + mp_bin(e.ct, wide == "ct")
        + mp_bin(e.sig, wide == "sig")
    )


@pytest.mark.parametrize("wide", ["array", "v", "hdr", "ct", "sig"])
def test_row20_wide_encoding_in_envelope_is_noncanonical(taskforce: TaskForce, wide: str) -> None:
    """The envelope framing encoded wider than needed (signature still valid) is E_NONCANONICAL."""
    original = taskforce.seal("police").data
    env, _ = split(original)
    assert pack_envelope(env) == original
    data = pack_envelope(env, wide)
    assert data != original
    assert msgspec.msgpack.decode(data, type=Envelope) == env
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_NONCANONICAL)


# ---------------------------------------------------------------------------------------------
# Row 21: revoked sender

REVOKED_AT = NOW_MS - 600_000


def revoked(tf: TaskForce, reason: R.Reason) -> TaskForce:
    """The kit's task force after labour's keys were revoked at REVOKED_AT."""
    signed = R.revoke(tf.signed, "labour", reason=reason, now_ms=REVOKED_AT)
    return resigned(tf, signed, "coord")


@pytest.mark.parametrize("after_ms", [1, 60_000])
def test_row21_retired_sender_after_at_ms_is_revoked(taskforce: TaskForce, after_ms: int) -> None:
    """A message from labour dated after its key was retired is E_REVOKED."""
    data = seal_at(taskforce, REVOKED_AT + after_ms, sender="labour")
    assert_rejected(inbox(revoked(taskforce, "retired"), "ngo"), data, RejectCode.E_REVOKED)


@pytest.mark.parametrize("before_ms", [0, 60_000])
def test_row21_retired_sender_before_at_ms_is_accepted(
    taskforce: TaskForce, before_ms: int
) -> None:
    """A message from labour dated at or before retirement still verifies and is delivered."""
    data = seal_at(taskforce, REVOKED_AT - before_ms, sender="labour")
    assert_delivered(inbox(revoked(taskforce, "retired"), "ngo"), data)


def test_row21_retired_key_message_received_after_grace_is_revoked(taskforce: TaskForce) -> None:
    """A pre-retirement message received after the retired-key grace period is E_REVOKED."""
    # The sender picks ts_ms: without this bound a retired agency could backdate new messages.
    data = seal_at(taskforce, REVOKED_AT - 60_000, sender="labour")
    grace = ReceivePolicy().retired_grace_ms
    box = inbox(revoked(taskforce, "retired"), "ngo", now_ms=REVOKED_AT + grace + 1)
    assert_rejected(box, data, RejectCode.E_REVOKED)


def test_row21_retired_key_message_received_at_end_of_grace_is_accepted(
    taskforce: TaskForce,
) -> None:
    """Control for row 21: at exactly at_ms + retired grace the earlier message is delivered."""
    data = seal_at(taskforce, REVOKED_AT - 60_000, sender="labour")
    grace = ReceivePolicy().retired_grace_ms
    assert_delivered(inbox(revoked(taskforce, "retired"), "ngo", now_ms=REVOKED_AT + grace), data)


@pytest.mark.parametrize("offset_ms", [-60_000, 0, 60_000])
def test_row21_compromised_sender_is_revoked_at_any_time(
    taskforce: TaskForce, offset_ms: int
) -> None:
    """A compromised key is rejected whatever the message's date (before, at, after at_ms)."""
    data = seal_at(taskforce, REVOKED_AT + offset_ms, sender="labour")
    assert_rejected(inbox(revoked(taskforce, "compromised"), "ngo"), data, RejectCode.E_REVOKED)


# ---------------------------------------------------------------------------------------------
# Row 23: an older roster replayed


def _accept(tf: TaskForce, signed: R.SignedRoster, state: R.RosterState | None) -> R.RosterState:
    _, new_state = R.verify_roster(encode(signed), anchor=tf.anchor, state=state, now_ms=NOW_MS)
    return new_state


def _seq2(tf: TaskForce, channel: str) -> R.SignedRoster:
    signed = R.grant(tf.signed, "ngo", channel=channel, read=True, write=False, now_ms=NOW_MS)
    return R.sign(signed, tf.ids["coord"])


def test_row23_older_roster_is_rollback_and_state_unchanged(taskforce: TaskForce) -> None:
    """With seq 2 persisted, the seq-1 roster is E_ROSTER_ROLLBACK and the state is unchanged."""
    newer = _seq2(taskforce, "cases")
    persisted = encode(_accept(taskforce, newer, _accept(taskforce, taskforce.signed, None)))
    state = R.decode_state(persisted)
    assert state.seq == 2
    with pytest.raises(RosterRejected) as caught:
        R.verify_roster(taskforce.roster_bytes, anchor=taskforce.anchor, state=state, now_ms=NOW_MS)
    assert caught.value.reject_code is RejectCode.E_ROSTER_ROLLBACK
    assert encode(state) == persisted
    assert R.decode_state(persisted).roster_hash == R.roster_hash(newer.roster)


def test_row23_same_seq_different_content_is_rollback(taskforce: TaskForce) -> None:
    """Two different seq-2 rosters: once one is accepted, the other is E_ROSTER_ROLLBACK."""
    first, second = _seq2(taskforce, "cases"), _seq2(taskforce, "intel")
    assert roster_of(first).seq == roster_of(second).seq == 2
    state = _accept(taskforce, first, _accept(taskforce, taskforce.signed, None))
    before = encode(state)
    with pytest.raises(RosterRejected) as caught:
        _accept(taskforce, second, state)
    assert caught.value.reject_code is RejectCode.E_ROSTER_ROLLBACK
    assert encode(state) == before


def test_row23_roster_older_than_anchor_is_rollback(taskforce: TaskForce) -> None:
    """A fresh agency pinned to the anchor of seq 2 refuses the seq-1 roster: E_ROSTER_ROLLBACK."""
    anchor = R.anchor_of(roster_of(_seq2(taskforce, "cases")))
    with pytest.raises(RosterRejected) as caught:
        R.verify_roster(taskforce.roster_bytes, anchor=anchor, state=None, now_ms=NOW_MS)
    assert caught.value.reject_code is RejectCode.E_ROSTER_ROLLBACK


def test_row23_same_roster_again_is_accepted(taskforce: TaskForce) -> None:
    """Control for row 23: re-reading the accepted roster (same seq, same bytes) is fine."""
    state = _accept(taskforce, taskforce.signed, None)
    assert _accept(taskforce, taskforce.signed, state) == state


# ---------------------------------------------------------------------------------------------
# Row 24: roster signatures and the threshold


def _verify(tf: TaskForce, signed: R.SignedRoster, state: R.RosterState | None = None) -> None:
    R.verify_roster(encode(signed), anchor=tf.anchor, state=state, now_ms=NOW_MS)


def _sigs(tf: TaskForce, roster: bytes, *signers: str) -> list[R.RosterSig]:
    signed = R.SignedRoster(roster=roster, sigs=[])
    return [R.sign(signed, tf.ids[name]).sigs[0] for name in signers]


def _expect_roster_sig(tf: TaskForce, signed: R.SignedRoster, state: R.RosterState | None) -> None:
    with pytest.raises(RosterRejected) as caught:
        _verify(tf, signed, state)
    assert caught.value.reject_code is RejectCode.E_ROSTER_SIG


def test_row24_fewer_than_k_signatures_is_roster_sig(tf3: TaskForce) -> None:
    """One signature where 2 of 3 are needed is E_ROSTER_SIG."""
    roster = tf3.signed.roster
    _expect_roster_sig(tf3, R.SignedRoster(roster, _sigs(tf3, roster, "c1")), None)


def test_row24_no_signatures_is_roster_sig(tf3: TaskForce) -> None:
    """An unsigned roster is E_ROSTER_SIG."""
    _expect_roster_sig(tf3, R.SignedRoster(tf3.signed.roster, []), None)


@pytest.mark.parametrize("stranger", ["outsider", "police"])
def test_row24_unknown_signer_does_not_count(tf3: TaskForce, stranger: str) -> None:
    """c1 plus a valid signature by a non-coordinator (outsider, police) is E_ROSTER_SIG."""
    roster = tf3.signed.roster
    _expect_roster_sig(tf3, R.SignedRoster(roster, _sigs(tf3, roster, "c1", stranger)), None)


def test_row24_one_signer_counted_twice_is_roster_sig(tf3: TaskForce) -> None:
    """c1's signature listed twice counts once: E_ROSTER_SIG."""
    roster = tf3.signed.roster
    _expect_roster_sig(tf3, R.SignedRoster(roster, _sigs(tf3, roster, "c1", "c1")), None)


def test_row24_one_agency_with_two_keys_counts_once(tf3: TaskForce) -> None:
    """c1 holding two roster signing keys and signing with both still counts once: E_ROSTER_SIG."""
    state = _accept(tf3, tf3.signed, None)
    second = kit_identity("c1-second-key")
    roster = roster_of(tf3.signed)
    members = [
        msgspec.structs.replace(
            m, sign_keys=[*m.sign_keys, R.KeyValidity(second.sign_pk, NOW_MS, MAX_UINT)]
        )
        if m.agency_id == "c1"
        else m
        for m in roster.members
    ]
    two_keys = R.edit(tf3.signed, msgspec.structs.replace(roster, members=members), now_ms=NOW_MS)
    two_keys = R.sign(R.sign(two_keys, tf3.ids["c1"]), tf3.ids["c2"])
    state = _accept(tf3, two_keys, state)
    assert [k.agency_id for k in state.anchor.coordinators].count("c1") == 2
    seq3 = R.grant(two_keys, "ngo", channel="cases", read=True, write=False, now_ms=NOW_MS)
    both = R.SignedRoster(
        seq3.roster, [*_sigs(tf3, seq3.roster, "c1"), R.sign(seq3, second).sigs[0]]
    )
    _expect_roster_sig(tf3, both, state)


def test_row24_bad_signature_does_not_count(tf3: TaskForce) -> None:
    """c1 plus c2's kid with a signature over other bytes is E_ROSTER_SIG."""
    roster = tf3.signed.roster
    good = _sigs(tf3, roster, "c1")
    wrong = _sigs(tf3, roster + b"\x00", "c2")
    _expect_roster_sig(tf3, R.SignedRoster(roster, [*good, *wrong]), None)


def test_row24_k_distinct_signatures_are_accepted(tf3: TaskForce) -> None:
    """Control for row 24: c1 and c3 (any two distinct coordinators) are enough."""
    roster = tf3.signed.roster
    _verify(tf3, R.SignedRoster(roster, _sigs(tf3, roster, "c3", "c1")))


def _coordinators_replaced(tf: TaskForce, *, coordinators: list[str], threshold: int) -> bytes:
    """Roster seq 2 of ``tf``: c4 and c5 join as coordinators, then the coordinator set and
    threshold become the given ones. Returns the roster bytes to sign."""
    signed = tf.signed
    for name in ("c4", "c5"):
        card = kit_identity(name).card_body()
        signed = R.add_member(signed, card, role="coordinator", now_ms=NOW_MS)
    roster = msgspec.structs.replace(
        roster_of(signed), coordinators=coordinators, threshold=threshold
    )
    return R.edit(signed, roster, now_ms=NOW_MS).roster


@pytest.fixture(scope="module")
def tf5(tf3: TaskForce) -> TaskForce:
    """tf3 with identities for the would-be coordinators c4 and c5."""
    ids = {**tf3.ids, "c4": kit_identity("c4"), "c5": kit_identity("c5")}
    return TaskForce(ids=ids, signed=tf3.signed, anchor=tf3.anchor, now_ms=tf3.now_ms)


def test_row24_coordinator_change_without_new_set_is_roster_sig(tf5: TaskForce) -> None:
    """Moving to coordinators {c4, c5} with only old-set signatures (c1, c2) is E_ROSTER_SIG."""
    state = _accept(tf5, tf5.signed, None)
    roster = _coordinators_replaced(tf5, coordinators=["c4", "c5"], threshold=2)
    _expect_roster_sig(tf5, R.SignedRoster(roster, _sigs(tf5, roster, "c1", "c2")), state)


def test_row24_coordinator_change_without_old_set_is_roster_sig(tf5: TaskForce) -> None:
    """Moving to coordinators {c4, c5} with only new-set signatures (c4, c5) is E_ROSTER_SIG."""
    state = _accept(tf5, tf5.signed, None)
    roster = _coordinators_replaced(tf5, coordinators=["c4", "c5"], threshold=2)
    _expect_roster_sig(tf5, R.SignedRoster(roster, _sigs(tf5, roster, "c4", "c5")), state)


def test_row24_coordinator_change_with_k_of_old_and_new_is_accepted(tf5: TaskForce) -> None:
    """k of the old set and k of the new set: accepted, and the anchor moves to {c4, c5}."""
    state = _accept(tf5, tf5.signed, None)
    roster = _coordinators_replaced(tf5, coordinators=["c4", "c5"], threshold=2)
    signed = R.SignedRoster(roster, _sigs(tf5, roster, "c1", "c2", "c4", "c5"))
    new_state = _accept(tf5, signed, state)
    assert {k.agency_id for k in new_state.anchor.coordinators} == {"c4", "c5"}
    assert new_state.seq == 2


def test_row24_threshold_raise_needs_k_of_new(tf5: TaskForce) -> None:
    """Raising k from 2 to 3 (same c1..c3 set) with 2 signatures is E_ROSTER_SIG; 3 pass."""
    state = _accept(tf5, tf5.signed, None)
    roster = _coordinators_replaced(tf5, coordinators=["c1", "c2", "c3"], threshold=3)
    _expect_roster_sig(tf5, R.SignedRoster(roster, _sigs(tf5, roster, "c1", "c2")), state)
    _accept(tf5, R.SignedRoster(roster, _sigs(tf5, roster, "c1", "c2", "c3")), state)


# ---------------------------------------------------------------------------------------------
# Row 25: expired roster


def _expires(tf: TaskForce) -> int:
    return tf.trusted().roster.expires_ms


def test_row25_sending_under_expired_roster_is_refused(taskforce: TaskForce) -> None:
    """seal one ms after the roster's expires_ms raises RosterRejected(E_ROSTER_EXPIRED)."""
    with pytest.raises(RosterRejected) as caught:
        taskforce.seal("police", now_ms=_expires(taskforce) + 1)
    assert caught.value.reject_code is RejectCode.E_ROSTER_EXPIRED


def test_row25_sending_at_expiry_is_allowed(taskforce: TaskForce) -> None:
    """Control for row 25: at exactly expires_ms sending still works."""
    sealed = taskforce.seal("police", now_ms=_expires(taskforce))
    assert sealed.ts_ms == _expires(taskforce)


def test_row25_receiving_within_grace_is_delivered_with_warning(taskforce: TaskForce) -> None:
    """At expires_ms + 7 days a message is still delivered, flagged roster_expired."""
    expires = _expires(taskforce)
    data = taskforce.seal("police", now_ms=expires - 1000).data
    box = inbox(taskforce, "ngo", now_ms=expires + R.RECEIVE_GRACE_MS)
    delivered = assert_delivered(box, data)
    assert delivered.roster_expired


def test_row25_receiving_beyond_grace_is_roster_expired(taskforce: TaskForce) -> None:
    """One ms past the 7-day grace the receiver refuses with E_ROSTER_EXPIRED."""
    expires = _expires(taskforce)
    data = taskforce.seal("police", now_ms=expires - 1000).data
    box = inbox(taskforce, "ngo", now_ms=expires + R.RECEIVE_GRACE_MS + 1)
    assert_rejected(box, data, RejectCode.E_ROSTER_EXPIRED)


def test_row25_verifying_roster_beyond_grace_is_roster_expired(taskforce: TaskForce) -> None:
    """verify_roster itself refuses a roster past its grace period."""
    late = _expires(taskforce) + R.RECEIVE_GRACE_MS + 1
    with pytest.raises(RosterRejected) as caught:
        R.verify_roster(taskforce.roster_bytes, anchor=taskforce.anchor, state=None, now_ms=late)
    assert caught.value.reject_code is RejectCode.E_ROSTER_EXPIRED


# ---------------------------------------------------------------------------------------------
# Row 27: time-window edges with an injected clock

SHORT_AGE = ReceivePolicy(max_age_ms=3_600_000)


def test_row27_timestamp_zero_is_stale(taskforce: TaskForce) -> None:
    """ts_ms = 0 is E_STALE."""
    assert_rejected(inbox(taskforce, "ngo"), seal_at(taskforce, 0), RejectCode.E_STALE)


def test_row27_timestamp_max_uint_is_future(taskforce: TaskForce) -> None:
    """ts_ms = 2**53 - 1 is E_FUTURE."""
    data = seal_at(taskforce, 2**53 - 1)
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_FUTURE)


def test_row27_timestamp_beyond_max_uint_is_malformed(taskforce: TaskForce) -> None:
    """ts_ms = 2**53 is outside the protocol's integers: E_MALFORMED."""
    assert_rejected(inbox(taskforce, "ngo"), seal_at(taskforce, 2**53), RejectCode.E_MALFORMED)


def test_row27_timestamp_at_max_skew_is_accepted(taskforce: TaskForce) -> None:
    """ts_ms = now + MAX_SKEW_MS exactly is accepted."""
    assert_delivered(inbox(taskforce, "ngo"), seal_at(taskforce, NOW_MS + MAX_SKEW_MS))


def test_row27_timestamp_past_max_skew_is_future(taskforce: TaskForce) -> None:
    """ts_ms = now + MAX_SKEW_MS + 1 is E_FUTURE."""
    data = seal_at(taskforce, NOW_MS + MAX_SKEW_MS + 1)
    assert_rejected(inbox(taskforce, "ngo"), data, RejectCode.E_FUTURE)


def test_row27_timestamp_at_max_age_is_accepted(taskforce: TaskForce) -> None:
    """ts_ms = now - max_age exactly is accepted (policy max_age 1 h)."""
    data = seal_at(taskforce, NOW_MS - SHORT_AGE.max_age_ms)
    assert_delivered(inbox(taskforce, "ngo", policy=SHORT_AGE), data)


def test_row27_timestamp_past_max_age_is_stale(taskforce: TaskForce) -> None:
    """ts_ms = now - max_age - 1 is E_STALE (policy max_age 1 h)."""
    data = seal_at(taskforce, NOW_MS - SHORT_AGE.max_age_ms - 1)
    assert_rejected(inbox(taskforce, "ngo", policy=SHORT_AGE), data, RejectCode.E_STALE)


# ---------------------------------------------------------------------------------------------
# Row 28: low-order or all-zero eph_pk

LOW_ORDER_POINTS = {
    "zero": bytes(32),
    "one": b"\x01" + bytes(31),
    "order-8-a": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "order-8-b": bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    "p-minus-1": bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    "p": bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    "p-plus-1": bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
}


@pytest.mark.parametrize("point", sorted(LOW_ORDER_POINTS))
def test_row28_low_order_eph_pk_is_wrap(taskforce: TaskForce, point: str) -> None:
    """The sender puts a low-order (or all-zero) eph_pk in a correctly signed header: E_WRAP."""
    d = draft(taskforce)
    header = msgspec.structs.replace(d.header, eph_pk=LOW_ORDER_POINTS[point])
    forged = finish(d, taskforce.ids["police"], header=header)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_WRAP)


# ---------------------------------------------------------------------------------------------
# Row 29: non-zero padding, or a body that does not match its schema


def test_row29_non_zero_padding_is_body(taskforce: TaskForce) -> None:
    """A pad of the right length ending in 0x01 is E_BODY."""
    n = pad_length(len(encode(Plain(ALERT.name, ALERT.fingerprint, ALERT_BODY, b""))))
    assert n > 0
    plain = plain_bytes(pad=bytes(n - 1) + b"\x01")
    forged = finish(draft(taskforce), taskforce.ids["police"], plain=plain)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_BODY)


BAD_BODIES = {
    "missing-fields": msgspec.msgpack.encode({"title": "only a title"}),
    "red-flag-as-alert": RED_FLAG.to_body(example_record("tf.red_flag/1")),
    "wrong-enum": msgspec.msgpack.encode({**ALERT_DICT, "severity": "apocalyptic"}),
    "not-msgpack": b"\xc1\xc1",
    "array-not-map": msgspec.msgpack.encode([1, 2, 3]),
    "bad-utf8": b"\x81\xa5title\xa2\xff\xfe",
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_row29_body_not_matching_schema_is_body(taskforce: TaskForce, case: str) -> None:
    """A tf.alert/1 body that does not decode as an alert is E_BODY, with no body in the log."""
    body = BAD_BODIES[case]
    forged = finish(draft(taskforce), taskforce.ids["police"], plain=plain_bytes(body))
    assert_rejected(
        inbox(taskforce, "ngo"),
        forged,
        RejectCode.E_BODY,
        extra_secrets=["apocalyptic", "only a title", "maria_lopez_address"],
    )


def test_row29_unknown_field_from_a_newer_producer_is_ignored(taskforce: TaskForce) -> None:
    """A body with a field this receiver does not know is delivered without it (consumers are
    tolerant, so a newer producer's optional additions do not break older agencies)."""
    body = msgspec.msgpack.encode({**ALERT_DICT, "added_in_a_later_version": "x"})
    forged = finish(draft(taskforce), taskforce.ids["police"], plain=plain_bytes(body))
    outcome = receive(inbox(taskforce, "ngo"), forged, None)
    assert isinstance(outcome, Delivered)
    delivered = msgspec.to_builtins(outcome.message.record)
    assert "added_in_a_later_version" not in delivered
    assert delivered["title"] == ALERT_DICT["title"]


def test_row29_plain_not_a_plain_is_body(taskforce: TaskForce) -> None:
    """A decrypted payload that is not a Plain structure at all is E_BODY."""
    forged = finish(draft(taskforce), taskforce.ids["police"], plain=encode(["x", 1]))
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_BODY)


def test_row29_non_canonical_plain_is_body(taskforce: TaskForce) -> None:
    """A Plain whose body length is encoded wider than needed (bin32) is E_BODY."""
    pad = bytes(pad_length(len(encode(Plain(ALERT.name, ALERT.fingerprint, ALERT_BODY, b"")))))
    widened = (
        mp_array(4)
        + mp_str(ALERT.name)
        + mp_bin(ALERT.fingerprint)
        + mp_bin(ALERT_BODY, True)
        + mp_bin(pad)
    )
    assert msgspec.msgpack.decode(widened, type=Plain) == Plain(
        ALERT.name, ALERT.fingerprint, ALERT_BODY, pad
    )
    forged = finish(draft(taskforce), taskforce.ids["police"], plain=widened)
    assert_rejected(inbox(taskforce, "ngo"), forged, RejectCode.E_BODY)


# ---------------------------------------------------------------------------------------------
# Row 32: key files with a wrong passphrase, or tampered

PASSPHRASE = b"correct horse battery staple"


@pytest.fixture(scope="module")
def keyfile() -> tuple[Identity, bytes]:
    me = kit_identity("police")
    data = seal_keyfile(
        me, PASSPHRASE, limits=KDF_PROFILES["insecure-test"], rng=DeterministicRng("keyfile")
    )
    return me, data


def _secret_strings(me: Identity) -> list[str]:
    texts = [PASSPHRASE.decode()]
    for secret in me.secret_material():
        texts += [secret.hex(), repr(secret)[2:-1]]
    texts.append(me.nats_seed_encoded().decode())
    return texts


def _expect_trust_error(me: Identity, data: bytes, passphrase: bytes = PASSPHRASE) -> None:
    with pytest.raises(TrustError) as caught:
        open_keyfile(data, passphrase)
    error = caught.value
    text = f"{error!s} {error!r} {error.hint} {error.message}"
    for secret in [*_secret_strings(me), passphrase.decode()]:
        assert secret not in text


def test_row32_keyfile_opens_with_right_passphrase(keyfile: tuple[Identity, bytes]) -> None:
    """Control for row 32: the untouched file opens to the same keys."""
    me, data = keyfile
    opened = open_keyfile(data, PASSPHRASE)
    assert (opened.sign_pk, opened.enc_pk) == (me.sign_pk, me.enc_pk)


def test_row32_wrong_passphrase_is_trust_error(keyfile: tuple[Identity, bytes]) -> None:
    """A wrong passphrase is a TrustError naming neither passphrase nor any secret."""
    me, data = keyfile
    _expect_trust_error(me, data, b"incorrect horse battery staple")


def _tampered(data: bytes, field: str) -> bytes:
    kf = read_keyfile_header(data)
    other = kit_identity("ngo")
    table: dict[str, dict[str, Any]] = {
        "agency_id": {"agency_id": "ngo"},
        "sign_pk": {"sign_pk": other.sign_pk},
        "enc_pk": {"enc_pk": other.enc_pk},
        "opslimit": {"opslimit": kf.opslimit + 1},
        "memlimit": {"memlimit": kf.memlimit * 2},
        "salt": {"salt": flip(kf.salt, 0, 0x01)},
        "nonce": {"nonce": flip(kf.nonce, 23, 0x80)},
        "ct": {"ct": flip(kf.ct, len(kf.ct) // 2, 0x01)},
        "ct-tag": {"ct": flip(kf.ct, len(kf.ct) - 1, 0x01)},
        "kdf": {"kdf": "scrypt"},
        "opslimit-huge": {"opslimit": 2**40},
        "memlimit-huge": {"memlimit": 2**50},
    }
    return encode(msgspec.structs.replace(kf, **table[field]))


KEYFILE_FIELDS = [
    "agency_id",
    "sign_pk",
    "enc_pk",
    "opslimit",
    "memlimit",
    "salt",
    "nonce",
    "ct",
    "ct-tag",
    "kdf",
    "opslimit-huge",
    "memlimit-huge",
]


@pytest.mark.parametrize("field", KEYFILE_FIELDS)
def test_row32_tampered_keyfile_field_is_trust_error(
    keyfile: tuple[Identity, bytes], field: str
) -> None:
    """Each tampered header field (all are AAD) fails with a TrustError naming no secret."""
    me, data = keyfile
    tampered = _tampered(data, field)
    assert tampered != data
    _expect_trust_error(me, tampered)


@pytest.mark.parametrize("cut", [0, 1, 20, -1])
def test_row32_truncated_keyfile_is_trust_error(keyfile: tuple[Identity, bytes], cut: int) -> None:
    """A truncated key file is a TrustError, not a crash."""
    me, data = keyfile
    _expect_trust_error(me, data[:cut])
