"""Sealing and opening one envelope: the recipe layer of PROTOCOL.md.

Owns: ``seal`` (sign and encrypt: to 1..256 recipients in direct mode, or under the channel's
epoch key in epoch mode, ``tfshare.epochs``) and ``open_envelope``
(the receiver's ordered checks, each with its stable ``RejectCode``). Callers never choose
nonces, labels or keys; clock and randomness are arguments so every check is testable at its
exact edge and test vectors are reproducible.

Invariants:
- nothing secret-keyed happens before the signature verifies (check 5 precedes 7 and 8);
- nothing is returned unless every check passed; a rejection carries a code and no plaintext;
- ``open_envelope`` reads the replay store but never writes it (``tfshare.protocol`` records
  only after delivery, so a rejected envelope leaves the store unchanged).
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import weakref
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from typing import Final

import msgspec
from nacl.exceptions import CryptoError

from tfshare import primitives
from tfshare.encoding import (
    DECODE_ERRORS,
    MAX_UINT,
    NonCanonical,
    blake2b_256,
    label,
    safe_reason,
    u32,
)
from tfshare.envelope import (
    DEFAULT_MAX_AGE_MS,
    MAX_ENVELOPE,
    MAX_RECIPIENTS,
    MAX_SKEW_MS,
    RETIRED_GRACE_MS,
    SUITE_1,
    SUPPORTED_SUITES,
    VERSION,
    WRAP_SIZE,
    Envelope,
    Header,
    Mode,
    Plain,
    Ref,
    pack_wraps,
    pad_length,
    wrap_at,
    wrap_kids,
)
from tfshare.epochs import (
    EPOCH_GRACE_MS,
    EPOCH_KEY_SCHEMA,
    EPOCH_KEY_TYPE,
    KEY_MANAGER_ROLE,
    EpochKey,
    EpochKeyDelivery,
    EpochKeyring,
    choose_mode,
    delivery_problem,
    made_for_readers,
    message_key,
)
from tfshare.errors import RejectCode, Rejected, TrustError, ValidationError
from tfshare.keys import Identity, Random, kid_enc
from tfshare.messages import MessageType, SchemaBook
from tfshare.names import channel_subject
from tfshare.replay import ReplayStore
from tfshare.roster import Channel, SenderKey, TrustedRoster

L_WRAP: Final = label("tfshare/v1/wrap")
L_COMMIT: Final = label("tfshare/v1/commit")
L_PAYLOAD: Final = label("tfshare/v1/payload")
L_SIG: Final = label("tfshare/v1/sig")
ZERO_NONCE: Final = bytes(24)
ZERO_32: Final = bytes(32)

_encoder: Final = msgspec.msgpack.Encoder()
_envelope_decoder: Final = msgspec.msgpack.Decoder(Envelope)
_header_decoder: Final = msgspec.msgpack.Decoder(Header)
_plain_decoder: Final = msgspec.msgpack.Decoder(Plain)

# Every libsodium call goes through tfshare.primitives: it fails with CryptoError only.
_aead_encrypt = primitives.aead_encrypt
_aead_decrypt = primitives.aead_decrypt


def signed_message(hdr: bytes, ct: bytes) -> bytes:
    """What the sender signs: L(sig) || u32(hdr) || u32(ct)."""
    return L_SIG + u32(hdr) + u32(ct)


def _signed_with_sig(sig: bytes, hdr: bytes, ct: bytes) -> bytes:
    """sig || signed_message(hdr, ct) in one copy: the form libsodium's sign_open takes."""
    return b"".join((sig, L_SIG, len(hdr).to_bytes(4, "big"), hdr, len(ct).to_bytes(4, "big"), ct))


def wrap_key(
    shared: bytes, eph_pk: bytes, enc_pk: bytes, msg_id: bytes, sender_kid: bytes
) -> bytes:
    """wk = H(L(wrap) || eph_pk || R || msg_id || sender_kid, key = X25519 shared secret)."""
    return blake2b_256(L_WRAP + eph_pk + enc_pk + msg_id + sender_kid, key=shared)


def key_commitment(payload_key: bytes, msg_id: bytes) -> bytes:
    """commit = H(L(commit) || msg_id, key = K): binds every recipient to one K."""
    return blake2b_256(L_COMMIT + msg_id, key=payload_key)


def envelope_hash(data: bytes) -> bytes:
    """env_hash: SHA-256 of the exact envelope bytes (what the audit log and refs use)."""
    return hashlib.sha256(data).digest()


# ---------------------------------------------------------------------------------------------
# Sealing


@dataclass(frozen=True)
class Recipient:
    agency_id: str
    enc_pk: bytes
    kid: bytes = b""  # kid_enc(enc_pk); computed if not given

    def __post_init__(self) -> None:
        if not self.kid:
            object.__setattr__(self, "kid", kid_enc(self.enc_pk))


@dataclass(frozen=True)
class Sealed:
    data: bytes
    msg_id: bytes
    recipients: tuple[str, ...]  # direct mode; () in epoch mode (every reader of the epoch)
    ts_ms: int
    seq: int
    epoch: int = 0  # mode 2: the epoch it was sealed under

    @cached_property
    def env_hash(self) -> bytes:
        return envelope_hash(self.data)


def seal_to(
    *,
    identity: Identity,
    taskforce: str,
    channel: str,
    roster_seq: int,
    recipients: Sequence[Recipient],
    schema: MessageType,
    body: bytes,
    seq: int,
    now_ms: int,
    rng: Random,
    refs: Sequence[Ref] = (),
) -> Sealed:
    """The construction itself (mode 1): no roster policy, just keys. See ``seal`` for policy."""
    if not 1 <= len(recipients) <= MAX_RECIPIENTS:
        raise ValidationError(
            f"{len(recipients)} recipients; direct mode takes 1 to {MAX_RECIPIENTS}",
            hint="name fewer recipients with --to",
        )
    # One draw, split: msg_id || nonce || K || eph_sk (the test vectors rely on this order).
    fresh = rng(104)
    msg_id, nonce, payload_key, eph_sk = fresh[:16], fresh[16:40], fresh[40:72], fresh[72:]
    eph_pk = primitives.scalarmult_base(eph_sk)
    sender_kid = identity.kid_sig
    wrap_ad = L_WRAP + msg_id
    wraps: list[tuple[bytes, bytes]] = []
    for recipient in recipients:
        try:
            shared = primitives.scalarmult(eph_sk, recipient.enc_pk)
        except CryptoError:
            shared = ZERO_32  # libsodium refuses low-order points; same outcome as all-zero
        if hmac.compare_digest(shared, ZERO_32):
            raise TrustError(
                f"the encryption key of {recipient.agency_id!r} is a degenerate point",
                hint="the roster entry is corrupt; tell the coordinators",
            )
        wk = wrap_key(shared, eph_pk, recipient.enc_pk, msg_id, sender_kid)
        wct = _aead_encrypt(payload_key, wrap_ad, ZERO_NONCE, wk)
        wraps.append((recipient.kid, wct))
    header = _header(
        identity, taskforce, channel, seq, roster_seq, now_ms, msg_id, nonce, payload_key, refs,
        mode=Mode.DIRECT, epoch=0, eph_pk=eph_pk, wraps=pack_wraps(wraps),
    )  # fmt: skip
    data = _finish(identity, header, payload_key, schema, body)
    return Sealed(data, msg_id, tuple(r.agency_id for r in recipients), now_ms, seq)


def seal_to_epoch(
    *,
    identity: Identity,
    taskforce: str,
    channel: str,
    roster_seq: int,
    epoch_key: EpochKey,
    schema: MessageType,
    body: bytes,
    seq: int,
    now_ms: int,
    rng: Random,
    refs: Sequence[Ref] = (),
) -> Sealed:
    """The construction of mode 2 (epoch): no wraps, K derived from the epoch key per message."""
    if epoch_key.channel != channel:
        raise ValueError("the epoch key is for another channel")
    # One draw, split: msg_id || nonce (the test vectors rely on this order).
    fresh = rng(40)
    msg_id, nonce = fresh[:16], fresh[16:40]
    sender_kid = identity.kid_sig
    payload_key = message_key(epoch_key.key, msg_id, sender_kid)
    header = _header(
        identity, taskforce, channel, seq, roster_seq, now_ms, msg_id, nonce, payload_key, refs,
        mode=Mode.EPOCH, epoch=epoch_key.epoch, eph_pk=b"", wraps=b"",
    )  # fmt: skip
    data = _finish(identity, header, payload_key, schema, body)
    return Sealed(data, msg_id, (), now_ms, seq, epoch_key.epoch)


def _header(
    identity: Identity,
    taskforce: str,
    channel: str,
    seq: int,
    roster_seq: int,
    now_ms: int,
    msg_id: bytes,
    nonce: bytes,
    payload_key: bytes,
    refs: Sequence[Ref],
    *,
    mode: Mode,
    epoch: int,
    eph_pk: bytes,
    wraps: bytes,
) -> Header:
    """The header of either mode: what differs is the mode, the epoch and the wraps."""
    return Header(
        v=VERSION,
        suite=SUITE_1,
        msg_id=msg_id,
        ts_ms=now_ms,
        sender=identity.agency_id,
        sender_kid=identity.kid_sig,
        taskforce=taskforce,
        channel=channel,
        seq=seq,
        roster_seq=roster_seq,
        mode=mode,
        epoch=epoch,
        eph_pk=eph_pk,
        wraps=wraps,
        nonce=nonce,
        commit=key_commitment(payload_key, msg_id),
        refs=list(refs),
    )


def _finish(
    identity: Identity, header: Header, payload_key: bytes, schema: MessageType, body: bytes
) -> bytes:
    """Encode the header, encrypt the padded plaintext under K, sign: both modes."""
    hdr = _encoder.encode(header)
    plain = _encoder.encode(
        Plain(
            schema.name,
            schema.fingerprint,
            body,
            bytes(pad_length(plain_size(schema.name, len(body)))),
        )
    )
    ct = _aead_encrypt(plain, L_PAYLOAD + hdr, header.nonce, payload_key)
    data = _encoder.encode(Envelope(VERSION, hdr, ct, identity.sign(signed_message(hdr, ct))))
    if len(data) > MAX_ENVELOPE:
        raise ValidationError(
            f"the sealed message would be {len(data)} bytes; the limit is {MAX_ENVELOPE}",
            hint="shorten the body or send fewer recipients",
        )
    return data


def _str_header(n: int) -> int:
    return 1 if n < 32 else 2 if n < 256 else 3 if n < 65536 else 5


def _bin_header(n: int) -> int:
    return 2 if n < 256 else 3 if n < 65536 else 5


def plain_size(schema_name: str, body_len: int) -> int:
    """Encoded size of Plain with an empty pad, computed instead of encoded (hot path)."""
    name = len(schema_name.encode())
    # fixarray(4) + str + bin8(32) schema_fp + bin body + empty bin8 pad
    return 1 + _str_header(name) + name + 2 + 32 + _bin_header(body_len) + body_len + 2


def _policy_error(message: str, hint: str) -> TrustError:
    return TrustError(message, hint=hint)


def removed_from(roster: TrustedRoster, agency_id: str, kid_sig: bytes) -> TrustError | None:
    """The refusal if this roster revoked this key of ``agency_id`` or removed the agency
    (exit 6), else None. A revoked agency is told so: the way back is the coordinators' to
    decide, never a grant of access or a broker configured to know it again."""
    revocation = roster.revoked.get(kid_sig)
    member = roster.members.get(agency_id)
    if revocation is not None and member is not None and member.status == "removed":
        return _policy_error(
            f"this agency ({agency_id!r}) was revoked ({revocation.reason}) in roster seq "
            f"{roster.seq}",
            hint="it can no longer send or receive in this task force; talk to the "
            "coordinators (if its key may be in the wrong hands, they know already: do not "
            "use it)",
        )
    if revocation is not None:
        return _policy_error(
            f"this key of {agency_id!r} was revoked ({revocation.reason}) in roster seq "
            f"{roster.seq}",
            hint="use the agency's current key (the one the roster lists), or ask the coordinators",
        )
    if member is not None and member.status == "removed":
        return _policy_error(
            f"this agency ({agency_id!r}) was removed from the task force in roster seq "
            f"{roster.seq}",
            hint="it can no longer send or receive in this task force; talk to the coordinators",
        )
    return None


def resolve_recipients(
    roster: TrustedRoster, channel: str, to: Sequence[str] | None
) -> list[Recipient]:
    """Recipients for a message on ``channel``: ``to``, or the channel's active readers.

    Every named recipient must be an active member allowed to read the channel: a sender cannot
    widen a channel's audience by naming outsiders.
    """
    named = tuple(dict.fromkeys(to)) if to else None  # once: ``to`` may be an iterator
    key = (channel, named)
    cached = roster.recipients_cache.get(key)
    if cached is not None:  # only answers that passed the checks below are kept
        return list(cached)
    readers = roster.readers[channel]  # a set: a list would be scanned once per name
    names = list(named) if named else roster.active_readers(channel)
    recipients: list[Recipient] = []
    for name in names:
        member = roster.members.get(name)
        if member is None:
            raise _policy_error(
                f"agency {name!r} is not in the roster",
                hint="check the spelling; 'tfshare roster show' lists the agencies",
            )
        if member.status != "active" or name not in readers:
            raise _policy_error(
                f"agency {name!r} may not read channel {channel!r}",
                hint="send only to the channel's readers, or ask a coordinator to grant access",
            )
        recipients.append(Recipient(name, member.enc_key.pk, roster.enc_kid_of[name]))
    if not recipients:
        raise _policy_error(
            f"channel {channel!r} has no active readers",
            hint="ask a coordinator to grant read access (roster grant --read)",
        )
    if len(roster.recipients_cache) < 256:  # bounded: ``to`` lists come from users
        roster.recipients_cache[key] = tuple(recipients)
    return recipients


# Active readers per channel, per roster: counting walks every reader, which at 20,000
# would cost more than sealing the message itself. A roster never changes once verified.
_reader_counts: Final[weakref.WeakKeyDictionary[TrustedRoster, dict[str, int]]] = (
    weakref.WeakKeyDictionary()
)


def _active_reader_count(roster: TrustedRoster, channel: str) -> int:
    counts = _reader_counts.get(roster)
    if counts is None:
        counts = _reader_counts[roster] = {}
    count = counts.get(channel)
    if count is None:
        count = counts[channel] = len(roster.active_readers(channel))
    return count


def seal(
    *,
    identity: Identity,
    roster: TrustedRoster,
    channel: str,
    to: Sequence[str] | None,
    schema: MessageType,
    body: bytes,
    seq: int,
    now_ms: int,
    rng: Random,
    refs: Sequence[Ref] = (),
    epochs: EpochKeyring | None = None,
) -> Sealed:
    """Seal ``body`` (already validated against ``schema``) from ``identity`` on ``channel``.

    Refuses what a receiver would reject: an expired roster, a sender that is not an active
    writer with this key, a schema the channel does not allow, recipients outside the channel.
    The mode follows the channel's policy and audience (``epochs.choose_mode``): epoch mode
    needs the channel's current key in ``epochs``, made for the channel's current readers in
    ``roster`` (``epochs.made_for_readers``).
    """
    # What a receiver's strict decoding would refuse in the header (an int in 0..2^53-1; a
    # bool or a float is not one) is refused here, before anything is sealed.
    for name, value in (("sequence number", seq), ("timestamp", now_ms)):
        if type(value) is not int or not 0 <= value <= MAX_UINT:
            raise ValidationError(
                f"{name} {value!r} is not an integer in 0..{MAX_UINT}",
                hint="the agency's counter or clock is damaged; check its state and clock",
            )
    roster.check_sendable(now_ms)
    if channel not in roster.channels:
        raise _policy_error(
            f"channel {channel!r} is not in the roster",
            hint="'tfshare roster show' lists the channels",
        )
    member = roster.members.get(identity.agency_id)
    if member is not None and len(identity.sign_keys_held) > 1:
        # After 'keys rotate --sign': the old key until the roster lists the new one, then
        # the new one (receivers know only the keys their roster lists).
        identity = identity.signing_with_listed([k.pk for k in member.sign_keys])
    key = roster.sign_keys.get(identity.kid_sig)
    if member is None or key is None or key.member.agency_id != identity.agency_id:
        raise _policy_error(
            f"this key of {identity.agency_id!r} is not in the roster",
            hint="send your card to a coordinator and use the roster that includes it",
        )
    removed = removed_from(roster, identity.agency_id, identity.kid_sig)
    if removed is not None:
        raise removed
    if member.status == "suspended":
        raise _policy_error(
            f"{identity.agency_id!r} is suspended in roster seq {roster.seq}",
            hint="a suspended agency may not send; ask the coordinators why",
        )
    if member.status != "active" or identity.agency_id not in roster.writers[channel]:
        raise _policy_error(
            f"{identity.agency_id!r} may not write to channel {channel!r}",
            hint="ask a coordinator to grant write access (roster grant --write)",
        )
    allowed = roster.channels[channel].schemas
    if allowed and schema.subject not in allowed:
        raise ValidationError(
            f"schema {schema.name} is not allowed on channel {channel!r}",
            hint=f"this channel takes: {', '.join(allowed)}",
        )
    mode_policy = roster.channels[channel].mode_policy
    current = epochs.current(channel, now_ms) if epochs is not None and not to else None
    # An epoch made for other readers than the roster's (a reader removed, suspended, denied
    # read access, rotated, or added since) is not sealed under: a removed reader holds it.
    # Until the key manager's epoch for the current readers arrives, the channel is sealed as
    # if no key were held (direct mode where allowed, else refused).
    readers_changed = current is not None and not made_for_readers(current, roster)
    choice = choose_mode(
        channel=channel,
        mode_policy=mode_policy,
        # Only a channel that allows both modes picks by audience (direct-only counts its
        # recipients in seal_to, epoch-only needs no count): counted once per roster.
        active_readers=_active_reader_count(roster, channel)
        if not to and mode_policy & Mode.DIRECT
        else 0,
        named_recipients=bool(to),
        current=None if readers_changed else current,
        readers_changed=readers_changed,
        sender=identity.agency_id,
        sender_reads=identity.agency_id in roster.readers[channel],
    )
    if choice.key is not None:
        return seal_to_epoch(
            identity=identity,
            taskforce=roster.taskforce,
            channel=channel,
            roster_seq=roster.seq,
            epoch_key=choice.key,
            schema=schema,
            body=body,
            seq=seq,
            now_ms=now_ms,
            rng=rng,
            refs=refs,
        )
    return seal_to(
        identity=identity,
        taskforce=roster.taskforce,
        channel=channel,
        roster_seq=roster.seq,
        recipients=resolve_recipients(roster, channel, to),
        schema=schema,
        body=body,
        seq=seq,
        now_ms=now_ms,
        rng=rng,
        refs=refs,
    )


# ---------------------------------------------------------------------------------------------
# Opening


class SecretBytes:
    """Key bytes that no repr shows and no encoder knows (``msgspec.to_builtins`` or
    ``json.encode`` of what holds them fails rather than writing the key out); ``reveal``
    gives them to the one caller that needs them."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("secret bytes are not pickled")


class Opened(msgspec.Struct, frozen=True):
    """A verified, decrypted message. ``record`` is the decoded body.

    A msgspec Struct rather than a dataclass: it is built once per delivered message, and a
    frozen dataclass's field-by-field __init__ costs several microseconds on that hot path.
    """

    msg_id: bytes
    env_hash: bytes
    sender: str
    sender_kid: bytes
    fingerprint: str
    ts_ms: int
    taskforce: str
    channel: str
    seq: int
    roster_seq: int
    schema: str
    schema_fp: bytes
    record: object
    wraps: bytes
    agency_of_enc_kid: Mapping[bytes, str]
    refs: tuple[Ref, ...] = ()
    epoch: int = 0  # mode 2: the epoch it was sealed under (no wraps: every reader of it)
    # K, the message's payload key: the agent keeps it sealed with the inbox row, so the row
    # stays readable after the epoch key or the retired secret that gave it is gone. Never
    # shown, and no encoder writes it (SecretBytes).
    payload_key: SecretBytes | None = None

    def __repr__(self) -> str:
        # Never the record: a repr can end up in a log or a traceback.
        return (
            f"Opened(msg_id={self.msg_id.hex()}, sender={self.sender!r}, "
            f"channel={self.channel!r}, schema={self.schema!r}, record=<hidden>)"
        )

    @property
    def recipients(self) -> tuple[str, ...]:
        """The recipients' agency ids (by encryption key id; unknown keys as hex)."""
        names = self.agency_of_enc_kid
        kids = (wrap_at(self.wraps, i)[0] for i in range(len(self.wraps) // WRAP_SIZE))
        return tuple(names.get(kid, kid.hex()) for kid in kids)


@dataclass(frozen=True)
class Duplicate:
    """An envelope delivered before (same sender key, msg_id and bytes): acknowledge, don't
    deliver again."""

    msg_id: bytes
    env_hash: bytes
    sender: str


# How long a message may wait between its sealing and the broker's stream: in an outbox while
# the broker is away, or carried by hand between air-gapped agencies. A stream keeps a message
# for its max_age from when it was stored, so a receiver must accept ts_ms up to the stream's
# max_age plus this old, or it quarantines (E_STALE) what the stream still rightly holds.
OFFLINE_ALLOWANCE_MS: Final = 14 * 24 * 3600 * 1000
DAY_MS: Final = 24 * 3600 * 1000


def receive_max_age_ms(stream_max_age_ms: int) -> int:
    """The receive window (``ReceivePolicy.max_age_ms``) that refuses nothing a stream keeping
    messages ``stream_max_age_ms`` still holds: that retention plus the offline allowance."""
    return stream_max_age_ms + OFFLINE_ALLOWANCE_MS


@dataclass(frozen=True)
class ReceivePolicy:
    """Time window of acceptable ``ts_ms``; a receiver's replay store must outlive max_age.

    ``max_age_ms`` must cover the streams' retention (``receive_max_age_ms``; ``for_stream``):
    docs/DEPLOY.md says how an operator changes the two together.

    ``retired_grace_ms``: how long after a key's retirement (revocation "retired", or the end
    of its validity window) messages it signed earlier are still accepted. The sender picks
    ts_ms, so without this bound a retired agency could backdate new messages for max_age.
    """

    max_age_ms: int = DEFAULT_MAX_AGE_MS
    max_skew_ms: int = MAX_SKEW_MS
    retired_grace_ms: int = RETIRED_GRACE_MS

    def for_stream(self, stream_max_age_ms: int) -> ReceivePolicy:
        """This policy, its window widened (never narrowed) to cover a stream that keeps
        messages ``stream_max_age_ms``."""
        needed = receive_max_age_ms(stream_max_age_ms)
        if needed <= self.max_age_ms:
            return self
        return ReceivePolicy(needed, self.max_skew_ms, self.retired_grace_ms)


def _reject(code: RejectCode, message: str) -> Rejected:
    return Rejected(code, message)


def _uint_size(value: int) -> int:
    return (
        1
        if value < 128
        else 2
        if value < 256
        else 3
        if value < 65536
        else 5
        if value < 2**32
        else 9
    )


def _canonical_envelope_size(env: Envelope) -> int:
    """Size of the canonical encoding of ``env``, without encoding it.

    Every msgpack value has exactly one shortest form and any other form of it is strictly
    longer, so bytes that decode to ``env`` are canonical exactly when they have this size.
    (Saves copying the whole envelope once per message.)
    """
    return (
        1  # fixarray of 4
        + _uint_size(env.v)
        + _bin_header(len(env.hdr))
        + len(env.hdr)
        + _bin_header(len(env.ct))
        + len(env.ct)
        + 2
        + 64  # bin8 signature
    )


def _decode_envelope(data: bytes) -> tuple[Envelope, Header, list[int]]:
    try:
        env = _envelope_decoder.decode(data)
    except DECODE_ERRORS as exc:
        # Recognise another version's envelope by its leading integer, whatever its shape.
        if len(data) >= 2 and 0x90 <= data[0] <= 0x9F and data[1] <= 0x7F and data[1] != VERSION:
            raise _reject(RejectCode.E_VERSION, f"envelope version {data[1]}") from None
        raise _reject(RejectCode.E_MALFORMED, f"envelope: {safe_reason(exc)}") from None
    if len(data) != _canonical_envelope_size(env):
        raise _reject(RejectCode.E_NONCANONICAL, "envelope is not canonically encoded")
    if env.v != VERSION:
        raise _reject(RejectCode.E_VERSION, f"envelope version {env.v}")
    try:
        hdr = _header_decoder.decode(env.hdr)
    except DECODE_ERRORS as exc:
        raise _reject(RejectCode.E_MALFORMED, f"header: {safe_reason(exc)}") from None
    if _encoder.encode(hdr) != env.hdr:
        raise _reject(RejectCode.E_NONCANONICAL, "header is not canonically encoded")
    if hdr.v != env.v:
        raise _reject(RejectCode.E_VERSION, f"header version {hdr.v} != envelope {env.v}")
    if hdr.suite not in SUPPORTED_SUITES:
        raise _reject(RejectCode.E_VERSION, f"unknown suite {hdr.suite}")
    if hdr.mode == Mode.DIRECT:
        try:
            kids = wrap_kids(hdr.wraps)
        except ValueError:
            raise _reject(
                RejectCode.E_MALFORMED, "wraps is not a list of 56-byte records"
            ) from None
        # Strictly ascending (sorted, no repeats): one order for every implementation, so a
        # binary search here and a linear scan elsewhere find the same record.
        if (
            len(hdr.eph_pk) != 32
            or hdr.epoch != 0
            or not kids
            or not all(map(operator.lt, kids, islice(kids, 1, None)))
        ):
            raise _reject(RejectCode.E_MALFORMED, "direct-mode header fields are inconsistent")
    elif hdr.mode == Mode.EPOCH:
        if hdr.eph_pk or hdr.wraps or hdr.epoch < 1:
            raise _reject(RejectCode.E_MALFORMED, "epoch-mode header fields are inconsistent")
        kids = []
    else:
        raise _reject(RejectCode.E_MALFORMED, f"unknown mode {hdr.mode}")
    return env, hdr, kids


# The NATS subject an envelope must arrive on (tfshare.names owns every subject).
expected_subject = channel_subject


def open_envelope(
    data: bytes,
    *,
    identity: Identity,
    roster: TrustedRoster,
    replay: ReplayStore,
    schemas: SchemaBook,
    now_ms: int,
    subject: str | None,
    policy: ReceivePolicy,
    epochs: EpochKeyring | None = None,
) -> Opened | Duplicate:
    """Run the receiver's checks in PROTOCOL.md order; raise ``Rejected`` at the first failure.

    ``subject`` is the NATS subject the bytes arrived on, or None for an offline file. There
    are no permissive defaults: roster, replay store, schemas, clock and policy are required.
    ``epochs``: the epoch keys held (mode 2); None refuses every epoch-mode envelope.
    """
    # 1. size
    if len(data) > MAX_ENVELOPE:
        raise _reject(RejectCode.E_TOO_LARGE, f"{len(data)} bytes > {MAX_ENVELOPE}")
    # 2. strict, canonical decode; versions
    env, hdr, kids = _decode_envelope(data)
    try:
        return _check_decoded(
            data, env, hdr, kids, identity, roster, replay, schemas, now_ms, subject, policy, epochs
        )
    except Rejected as exc:
        exc.sender, exc.msg_id = hdr.sender, hdr.msg_id
        raise


def _check_decoded(
    data: bytes,
    env: Envelope,
    hdr: Header,
    kids: list[int],
    identity: Identity,
    roster: TrustedRoster,
    replay: ReplayStore,
    schemas: SchemaBook,
    now_ms: int,
    subject: str | None,
    policy: ReceivePolicy,
    epochs: EpochKeyring | None,
) -> Opened | Duplicate:
    """Checks 3 to 9, on a decoded envelope (see ``open_envelope``)."""
    channel, sender_key = _check_signed(data, env, hdr, roster, now_ms, subject, policy)
    # 6. replay
    env_hash = envelope_hash(data)
    seen = replay.lookup(hdr.sender_kid, hdr.msg_id)
    if seen is not None:
        if hmac.compare_digest(seen, env_hash):
            return Duplicate(hdr.msg_id, env_hash, hdr.sender)
        raise _reject(RejectCode.E_EQUIVOCATION, "same msg_id, different content")
    # 7. my wrap: only an active reader of the channel opens it (policy at both ends)
    me = roster.members.get(identity.agency_id)
    if me is None or me.status != "active" or identity.agency_id not in roster.readers[hdr.channel]:
        raise _reject(RejectCode.E_NOT_RECIPIENT, "this agency is not a reader of the channel")
    payload_key = _payload_key(hdr, kids, identity, epochs, roster)
    # 8-9. key commitment, payload, plaintext structure, schema, body
    plain, record = _open_payload(env, hdr, payload_key, schemas, channel)
    _check_authority(hdr, sender_key, roster, plain, record, now_ms)
    return _opened(hdr, env_hash, sender_key, roster, plain, record, payload_key)


def _payload_key(
    hdr: Header,
    kids: list[int],
    identity: Identity,
    epochs: EpochKeyring | None,
    roster: TrustedRoster,
) -> bytes:
    """Check 7 after the reader check: K from this identity's wrap (mode 1) or from the
    channel's epoch key (mode 2)."""
    if hdr.mode == Mode.DIRECT:
        return _unwrap(hdr, kids, identity, roster)
    if epochs is None:
        raise _reject(RejectCode.E_EPOCH, "this receiver holds no epoch keys")
    epoch_key = epochs.key_for_message(hdr.channel, hdr.epoch, hdr.ts_ms)
    return message_key(epoch_key, hdr.msg_id, hdr.sender_kid)


def _check_authority(
    hdr: Header,
    sender_key: SenderKey,
    roster: TrustedRoster,
    plain: Plain,
    record: object,
    now_ms: int,
) -> None:
    """Check 9d: who may send what. A key delivery comes only from the active key manager,
    with a key neither revoked nor rotated away (a removed key manager, or whoever holds
    its old key, could otherwise backdate a delivery within the retired grace and plant a
    key that every later epoch is "older" than), in direct mode, for the channel it travels
    on, starting no later than it was sealed; anything else only from a writer of the
    channel (check 4 let a key manager through without knowing yet what it sent)."""
    if plain.schema == EPOCH_KEY_SCHEMA:
        member, key = sender_key.member, sender_key.key
        if (
            KEY_MANAGER_ROLE not in member.roles
            or member.status != "active"
            or hdr.sender_kid in roster.revoked
            or now_ms > key.not_after_ms + EPOCH_GRACE_MS
        ):
            raise _reject(RejectCode.E_NOT_AUTHORIZED, "key delivery from a non-key-manager")
        if hdr.mode != Mode.DIRECT:
            raise _reject(RejectCode.E_EPOCH, "a key delivery must be sealed in direct mode")
        assert isinstance(record, EpochKeyDelivery)
        problem = delivery_problem(record, hdr.channel)
        if problem is not None:
            raise _reject(RejectCode.E_BODY, problem)
        if record.starts_ms > hdr.ts_ms + MAX_SKEW_MS:
            # An epoch that "starts" later than it was made would keep every sender on the
            # epoch before it, which a removed member may hold.
            raise _reject(RejectCode.E_EPOCH, "a key delivery starting after it was sealed")
    elif hdr.sender not in roster.writers[hdr.channel]:
        raise _reject(RejectCode.E_NOT_AUTHORIZED, f"sender may not write {hdr.channel!r}")
    elif not roster.channels[hdr.channel].mode_policy & hdr.mode:
        # Only a key manager's direct-mode envelope got past check 3c in a mode its channel
        # does not allow: being no key delivery, it is held to the channel's modes now.
        raise _reject(RejectCode.E_VERSION, "mode not allowed on this channel")


def _opened(
    hdr: Header,
    env_hash: bytes,
    sender_key: SenderKey,
    roster: TrustedRoster,
    plain: Plain,
    record: object,
    payload_key: bytes = b"",
) -> Opened:
    """What a receiver hands on once every check it runs has passed."""
    return Opened(
        msg_id=hdr.msg_id,
        env_hash=env_hash,
        sender=hdr.sender,
        sender_kid=hdr.sender_kid,
        fingerprint=sender_key.fingerprint,
        ts_ms=hdr.ts_ms,
        taskforce=hdr.taskforce,
        channel=hdr.channel,
        seq=hdr.seq,
        roster_seq=hdr.roster_seq,
        wraps=hdr.wraps,
        agency_of_enc_kid=roster.agency_of_enc_kid,
        schema=plain.schema,
        schema_fp=plain.schema_fp,
        record=record,
        refs=tuple(hdr.refs),
        epoch=hdr.epoch,
        payload_key=SecretBytes(payload_key) if payload_key else None,
    )


def _unwrap(
    hdr: Header, kids: list[int], identity: Identity, roster: TrustedRoster | None = None
) -> bytes:
    """Check 7 (after the reader check): find and open this identity's wrap; returns K.

    The wrap may be to any encryption key the identity still holds (``enc_kids``: the current
    one first, then keys retired by a rotation but not yet destroyed), each found by binary
    search in the sorted kids. The current key is tried first and needs no lookup: a sender
    with the current roster wraps to it."""
    held = identity.enc_kids
    for kid in held:
        wanted = int.from_bytes(kid, "big")
        index = bisect_left(kids, wanted)
        if index < len(kids) and kids[index] == wanted:
            break
    else:
        if roster is not None and any(
            roster.agency_of_enc_kid.get(wrap_at(hdr.wraps, i)[0]) == identity.agency_id
            for i in range(len(kids))
        ):
            # Addressed to this agency, under a key this process does not hold (a rotation
            # it has not loaded, or a secret destroyed before the roster moved on): said,
            # never acknowledged away as "not for us".
            raise _reject(
                RejectCode.E_WRAP,
                "wrapped to a key of this agency that this key file does not hold",
            )
        raise _reject(RejectCode.E_NOT_RECIPIENT, "not addressed to this agency's key")
    current = kid == held[0]
    try:
        shared = identity.x25519(hdr.eph_pk) if current else identity.x25519_kid(kid, hdr.eph_pk)
    except CryptoError:  # libsodium refuses low-order points itself
        raise _reject(RejectCode.E_WRAP, "degenerate ephemeral key") from None
    if hmac.compare_digest(shared, ZERO_32):
        raise _reject(RejectCode.E_WRAP, "degenerate ephemeral key")
    enc_pk = identity.enc_pk if current else identity.enc_pk_of(kid)
    wk = wrap_key(shared, hdr.eph_pk, enc_pk, hdr.msg_id, hdr.sender_kid)
    try:
        payload_key = _aead_decrypt(
            wrap_at(hdr.wraps, index)[1], L_WRAP + hdr.msg_id, ZERO_NONCE, wk
        )
    except CryptoError:
        raise _reject(RejectCode.E_WRAP, "key wrap does not open") from None
    return payload_key


def _open_payload(
    env: Envelope, hdr: Header, payload_key: bytes, schemas: SchemaBook, channel: Channel
) -> tuple[Plain, object]:
    """Checks 8 and 9 with the payload key K: commitment, decryption, plaintext, schema, body."""
    # 8. key commitment, then the payload
    if not hmac.compare_digest(key_commitment(payload_key, hdr.msg_id), hdr.commit):
        raise _reject(RejectCode.E_COMMIT, "key commitment mismatch")
    try:
        plain_bytes = _aead_decrypt(env.ct, L_PAYLOAD + env.hdr, hdr.nonce, payload_key)
    except CryptoError:
        raise _reject(RejectCode.E_DECRYPT, "payload does not decrypt") from None
    # 9. plaintext structure, schema, body
    try:
        plain = _plain_decoder.decode(plain_bytes)
        # Canonical exactly when of canonical size (non-minimal forms are always longer).
        pad = len(plain.pad)
        if (
            len(plain_bytes)
            != plain_size(plain.schema, len(plain.body)) - 2 + _bin_header(pad) + pad
            or len(plain.schema_fp) != 32
        ):
            raise NonCanonical("plain")
    except DECODE_ERRORS:
        raise _reject(RejectCode.E_BODY, "plaintext structure is malformed") from None
    if plain.pad.count(0) != len(plain.pad):
        raise _reject(RejectCode.E_BODY, "non-zero padding")
    # The key delivery type is built in: no registry can define or replace it.
    schema = EPOCH_KEY_TYPE if plain.schema == EPOCH_KEY_SCHEMA else schemas.lookup(plain.schema)
    if schema is None or not hmac.compare_digest(schema.fingerprint, plain.schema_fp):
        unknown = _reject(RejectCode.E_SCHEMA, "unknown schema or fingerprint")
        unknown.schema = plain.schema
        raise unknown
    # The channel's schema list names registry schemas; the built-in key delivery is not one
    # (check 9b holds it to key managers).
    if channel.schemas and schema is not EPOCH_KEY_TYPE and schema.subject not in channel.schemas:
        raise _reject(RejectCode.E_SCHEMA, "schema not allowed on this channel")
    try:
        record = schema.from_body(plain.body)
    except DECODE_ERRORS as exc:
        raise _reject(RejectCode.E_BODY, f"body: {safe_reason(exc)}") from None
    return plain, record


def _check_signed(
    data: bytes,
    env: Envelope,
    hdr: Header,
    roster: TrustedRoster,
    now_ms: int,
    subject: str | None,
    policy: ReceivePolicy,
) -> tuple[Channel, SenderKey]:
    """Checks 3 to 5: all that a party without a recipient's key can check."""
    # 3. task force, channel, subject, suite policy, time window
    channel = roster.channels.get(hdr.channel)
    if hdr.taskforce != roster.taskforce or channel is None:
        raise _reject(RejectCode.E_CHANNEL, f"unknown task force or channel {hdr.channel!r}")
    if subject is not None and subject != expected_subject(hdr.taskforce, hdr.channel, hdr.sender):
        raise _reject(RejectCode.E_CHANNEL, "envelope arrived on a subject it was not sent to")
    # A key manager's key deliveries are direct mode on every channel, an epoch-only one
    # included (its keys travel no other way): direct mode from a key manager passes here, and
    # check 9b refuses it unless it is a key delivery.
    if hdr.suite < channel.min_suite or not (
        channel.mode_policy & hdr.mode
        or (hdr.mode == Mode.DIRECT and hdr.sender in roster.key_managers)
    ):
        raise _reject(RejectCode.E_VERSION, "suite or mode below the channel's minimum")
    if hdr.ts_ms < now_ms - policy.max_age_ms:
        raise _reject(RejectCode.E_STALE, "timestamp older than the maximum age")
    if hdr.ts_ms > now_ms + policy.max_skew_ms:
        raise _reject(RejectCode.E_FUTURE, "timestamp too far in the future")
    # 4. roster: sender, key, revocation, write permission
    sender_key = roster.sign_keys.get(hdr.sender_kid)
    if sender_key is None or sender_key.member.agency_id != hdr.sender:
        raise _reject(RejectCode.E_UNKNOWN_SENDER, f"no key {hdr.sender_kid.hex()} for sender")
    member, key = sender_key.member, sender_key.key
    revocation = roster.revoked.get(hdr.sender_kid)
    if revocation is not None and (
        revocation.reason == "compromised"
        or hdr.ts_ms > revocation.at_ms
        or now_ms > revocation.at_ms + policy.retired_grace_ms
    ):
        raise _reject(RejectCode.E_REVOKED, f"sender key revoked ({revocation.reason})")
    if (
        hdr.ts_ms > key.not_after_ms
        or now_ms > key.not_after_ms + policy.retired_grace_ms
        or (member.status == "removed" and revocation is None)
    ):
        raise _reject(RejectCode.E_REVOKED, "sender key retired")
    if hdr.ts_ms < key.not_before_ms:
        raise _reject(RejectCode.E_UNKNOWN_SENDER, "sender key not yet valid at that time")
    if member.status == "suspended" or (
        hdr.sender not in roster.writers[hdr.channel] and KEY_MANAGER_ROLE not in member.roles
    ):
        # A key manager may publish key deliveries on every channel; what it sent is only
        # known after decryption, where _check_authority holds it to key deliveries.
        raise _reject(RejectCode.E_NOT_AUTHORIZED, f"sender may not write {hdr.channel!r}")
    # 5. signature, before any secret-key operation
    _check_signature(env, key.pk)
    return channel, sender_key


def _check_signature(env: Envelope, sign_pk: bytes) -> None:
    """Check 5: the sender's Ed25519 signature over the header and the ciphertext."""
    try:
        primitives.sign_open(_signed_with_sig(env.sig, env.hdr, env.ct), sign_pk)
    except CryptoError:
        raise _reject(RejectCode.E_BAD_SIG, "signature does not verify") from None


def reopen_stored(
    data: bytes,
    *,
    identity: Identity,
    roster: TrustedRoster,
    schemas: SchemaBook,
    epochs: EpochKeyring | None = None,
    payload_key: bytes | None = None,
) -> Opened:
    """Open again an envelope this receiver accepted and stored (its inbox), for display.

    Every receive check ran when it arrived; the roster has moved on since (a sender revoked
    as compromised, a channel re-granted, a schema restricted), and its policy must not
    unmake what was received under the roster of the time. So: the signature with the key of
    record (the sender's key in ``roster``: a revoked key stays listed, marked), then this
    identity's wrap, the key commitment, decryption and the body against its schema -- what
    keeps a stored row that was altered from being shown as the sender's. Whether the sender
    is revoked now is the caller's to say (``roster.revoked``). Raises ``Rejected``.

    ``payload_key``: K as the inbox kept it (sealed under the state key) when the message
    arrived; used instead of this identity's wrap or the epoch key, which may be gone since
    (a retired secret destroyed, an epoch key past its retention). The key commitment still
    binds it to this envelope, and the signature and the body are checked all the same."""
    env, hdr, kids = _decode_envelope(data)
    try:
        if hdr.taskforce != roster.taskforce:
            raise _reject(RejectCode.E_CHANNEL, f"another task force {hdr.taskforce!r}")
        sender_key = roster.sign_keys.get(hdr.sender_kid)
        if sender_key is None or sender_key.member.agency_id != hdr.sender:
            raise _reject(
                RejectCode.E_UNKNOWN_SENDER,
                f"the sender's key {hdr.sender_kid.hex()} is no longer in the roster",
            )
        _check_signature(env, sender_key.key.pk)
        if payload_key is None:
            payload_key = _reopen_key(hdr, kids, identity, epochs, roster)
        # The channel's schema list of today does not apply to what was received before it.
        anywhere = Channel(hdr.channel, [], [], 0, 0, [])
        plain, record = _open_payload(env, hdr, payload_key, schemas, anywhere)
    except Rejected as exc:
        exc.sender, exc.msg_id = hdr.sender, hdr.msg_id
        raise
    return _opened(hdr, envelope_hash(data), sender_key, roster, plain, record)


def _reopen_key(
    hdr: Header,
    kids: list[int],
    identity: Identity,
    epochs: EpochKeyring | None,
    roster: TrustedRoster,
) -> bytes:
    """K of a stored envelope: the grace period of a superseded epoch judged what could be
    received, not what was (the message was accepted when it arrived)."""
    if hdr.mode == Mode.DIRECT:
        return _unwrap(hdr, kids, identity, roster)
    key = None if epochs is None else epochs.get(hdr.channel, hdr.epoch)
    if key is None:
        raise _reject(
            RejectCode.E_EPOCH, f"the key of epoch {hdr.epoch} of {hdr.channel!r} is not held"
        )
    return message_key(key.key, hdr.msg_id, hdr.sender_kid)


@dataclass(frozen=True)
class Verified:
    """An envelope whose metadata and signature verified, not decrypted (the auditor's view)."""

    header: Header
    env_hash: bytes
    fingerprint: str


def verify_envelope(
    data: bytes,
    *,
    roster: TrustedRoster,
    now_ms: int,
    subject: str | None,
    policy: ReceivePolicy,
) -> Verified:
    """Checks 1 to 5 of ``open_envelope``: size, strict decoding, task force, channel and
    subject, time window, sender key and permission, signature. Needs no secret key: this is
    what the audit service checks before it logs an envelope. Raises ``Rejected``."""
    if len(data) > MAX_ENVELOPE:
        raise _reject(RejectCode.E_TOO_LARGE, f"{len(data)} bytes > {MAX_ENVELOPE}")
    env, hdr, _ = _decode_envelope(data)
    try:
        _, sender_key = _check_signed(data, env, hdr, roster, now_ms, subject, policy)
    except Rejected as exc:
        exc.sender, exc.msg_id = hdr.sender, hdr.msg_id
        raise
    return Verified(hdr, envelope_hash(data), sender_key.fingerprint)


# ---------------------------------------------------------------------------------------------
# Disclosure: one message's key, handed over by a recipient


def payload_key_of(
    data: bytes,
    *,
    identity: Identity,
    roster: TrustedRoster,
    now_ms: int,
    policy: ReceivePolicy,
    epochs: EpochKeyring | None = None,
    kept_key: bytes | None = None,
) -> bytes:
    """The payload key K of an envelope addressed to ``identity``, after checks 1-5 and the
    key commitment. K opens this one message and nothing else (a fresh K per message; in
    epoch mode derived per message, so it does not reveal the epoch key). ``kept_key``: K as
    the inbox kept it (``reopen_stored``), used instead of the wrap or the epoch key, which
    may be gone since; the key commitment and decryption still bind it to this envelope."""
    env, hdr, kids = _decode_envelope(data)
    _check_signed(data, env, hdr, roster, now_ms, None, policy)
    payload_key = kept_key
    if payload_key is None:
        payload_key = _reopen_key(hdr, kids, identity, epochs, roster)
    if not hmac.compare_digest(key_commitment(payload_key, hdr.msg_id), hdr.commit):
        raise _reject(RejectCode.E_COMMIT, "key commitment mismatch")
    try:
        plain = _plain_decoder.decode(
            _aead_decrypt(env.ct, L_PAYLOAD + env.hdr, hdr.nonce, payload_key)
        )
    except CryptoError:
        raise _reject(RejectCode.E_DECRYPT, "payload does not decrypt") from None
    except DECODE_ERRORS:
        raise _reject(RejectCode.E_BODY, "plaintext structure is malformed") from None
    if plain.schema == EPOCH_KEY_SCHEMA:
        raise _never_disclosed()
    return payload_key


def _never_disclosed() -> Rejected:
    # Its K opens a body that is a channel's epoch key: disclosing it would open the epoch.
    return _reject(RejectCode.E_SCHEMA, "a key delivery is never disclosed")


def open_with_key(
    data: bytes,
    payload_key: bytes,
    *,
    roster: TrustedRoster,
    schemas: SchemaBook,
    now_ms: int,
    policy: ReceivePolicy,
) -> tuple[Verified, str, object]:
    """Open an envelope with a disclosed payload key: checks 1-5 (the sender's signature),
    the key commitment (K is the key every recipient got), decryption, schema and body.
    Returns the verified header, the schema name and the decoded body."""
    if len(data) > MAX_ENVELOPE:
        raise _reject(RejectCode.E_TOO_LARGE, f"{len(data)} bytes > {MAX_ENVELOPE}")
    env, hdr, _ = _decode_envelope(data)
    try:
        channel, sender_key = _check_signed(data, env, hdr, roster, now_ms, None, policy)
        if len(payload_key) != 32:
            raise _reject(RejectCode.E_COMMIT, "a payload key is 32 bytes")
        plain, record = _open_payload(env, hdr, payload_key, schemas, channel)
        if plain.schema == EPOCH_KEY_SCHEMA:
            raise _never_disclosed()
        # What a receiver would have refused is not shown as the sender's message here.
        _check_authority(hdr, sender_key, roster, plain, record, now_ms)
    except Rejected as exc:
        exc.sender, exc.msg_id = hdr.sender, hdr.msg_id
        raise
    return Verified(hdr, envelope_hash(data), sender_key.fingerprint), plain.schema, record


def claimed_header(data: bytes) -> Header:
    """The header of an envelope, strictly decoded but NOT verified (raises ``Rejected``):
    for deciding which roster to verify it with, never for trusting what it says."""
    if len(data) > MAX_ENVELOPE:
        raise _reject(RejectCode.E_TOO_LARGE, f"{len(data)} bytes > {MAX_ENVELOPE}")
    return _decode_envelope(data)[1]
