"""The task-force roster: who is in, which keys speak for each agency, who reads and writes what.

Owns: the roster's wire shapes, pure edits (each returns a new roster), coordinator signatures,
the trust anchor, and ``verify_roster``: k-of-n signatures from the trusted coordinator set,
coordinator-set changes (k of the old set and k of the new), rollback against the persisted
state, and expiry. The caller persists the returned ``RosterState``; nothing here touches disk.

Invariant: a roster that fails any check changes nothing. ``verify_roster`` either returns a
``TrustedRoster`` together with the state to persist, or raises ``RosterRejected``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec

from tfshare.encoding import (
    DECODE_ERRORS,
    MAX_UINT,
    Bytes8,
    Bytes32,
    Bytes64,
    DisplayName,
    Name,
    NonCanonical,
    Uint,
    blake2b_256,
    decode_canonical,
    encode,
    label,
    safe_reason,
    u32,
)
from tfshare.errors import RejectCode, RosterRejected, TrustError
from tfshare.keys import (
    CardBody,
    Identity,
    NatsUser,
    display_name_problem,
    enc_binding_message,
    fingerprint,
    kid_enc,
    kid_sig,
    usable_x25519_key,
)
from tfshare.keys import verify_signature as _verify

L_ROSTER: Final = label("tfshare/v1/roster")
ROSTER_TAG: Final = "tfshare-roster/1"
ANCHOR_TAG: Final = "tfshare-anchor/1"
STATE_TAG: Final = "tfshare-roster-state/1"

MAX_MEMBERS: Final = 1024
MAX_CHANNELS: Final = 256
MAX_REVOKED: Final = 4096
MAX_SIGS: Final = 64
MAX_KEYS_PER_MEMBER: Final = 8
# After expiry a receiver keeps opening messages for this long, with a warning, so a task force
# whose coordinators are late to re-sign is not cut off; sending stops at expiry.
RECEIVE_GRACE_MS: Final = 7 * 24 * 3600 * 1000
DAY_MS: Final = 24 * 3600 * 1000

Role = Literal["coordinator", "member", "auditor", "key-manager"]
Status = Literal["active", "suspended", "removed"]
Reason = Literal["retired", "compromised"]
SchemaSubject = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.-]{0,63}\Z")]


class KeyValidity(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """A public key and the window (inclusive, ms since the epoch) in which it speaks."""

    pk: Bytes32
    not_before_ms: Uint
    not_after_ms: Uint


class Member(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    agency_id: Name
    display_name: DisplayName
    roles: Annotated[list[Role], msgspec.Meta(min_length=1, max_length=4)]
    sign_keys: Annotated[list[KeyValidity], msgspec.Meta(min_length=1, max_length=8)]
    enc_key: KeyValidity
    enc_self_sig: Bytes64
    nats_user: NatsUser
    status: Status


class Channel(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """A channel; ``schemas`` lists the subjects allowed on it (empty: every known schema)."""

    name: Name
    readers: Annotated[list[Name], msgspec.Meta(max_length=MAX_MEMBERS)]
    writers: Annotated[list[Name], msgspec.Meta(max_length=MAX_MEMBERS)]
    min_suite: Uint
    mode_policy: Uint
    schemas: Annotated[list[SchemaSubject], msgspec.Meta(max_length=64)]


class Revocation(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    kid: Bytes8
    at_ms: Uint
    reason: Reason


class Roster(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    v: Uint
    taskforce: Name
    seq: Uint
    issued_ms: Uint
    expires_ms: Uint
    threshold: Uint
    coordinators: Annotated[list[Name], msgspec.Meta(min_length=1, max_length=MAX_SIGS)]
    members: Annotated[list[Member], msgspec.Meta(min_length=1, max_length=MAX_MEMBERS)]
    channels: Annotated[list[Channel], msgspec.Meta(max_length=MAX_CHANNELS)]
    revoked: Annotated[list[Revocation], msgspec.Meta(max_length=MAX_REVOKED)]
    # How many witness cosignatures (distinct active members other than the log's signer)
    # a checkpoint needs before evidence resting on it is trusted (docs/AUDIT-LOG.md, 13).
    # Optional trailing element: encoded only when it is not 0, so every roster signed
    # before the field existed keeps its exact bytes and signatures (``encode_roster``).
    witness_threshold: Uint = 0


class RosterSig(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    kid: Bytes8
    sig: Bytes64


class SignedRoster(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True, tag=ROSTER_TAG
):
    """The roster file and KV value: the signed roster bytes and the coordinators' signatures."""

    roster: bytes
    sigs: Annotated[list[RosterSig], msgspec.Meta(max_length=MAX_SIGS)]


class CoordinatorKey(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    agency_id: Name
    sign_pk: Bytes32


class Anchor(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True, tag=ANCHOR_TAG
):
    """What an agency pins when it joins: the coordinators' signing keys and the threshold."""

    taskforce: Name
    threshold: Uint
    coordinators: Annotated[list[CoordinatorKey], msgspec.Meta(min_length=1, max_length=64)]
    # The roster seq the anchor was exported from: a first roster older than this is refused,
    # so a fresh agency cannot be handed a stale roster that still lists removed members.
    min_seq: Uint


class RosterState(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True, tag=STATE_TAG
):
    """What a receiver persists after accepting a roster: rollback floor and current trust."""

    seq: Uint
    roster_hash: Bytes32
    anchor: Anchor


_roster_decoder: Final = msgspec.msgpack.Decoder(Roster)
_signed_decoder: Final = msgspec.msgpack.Decoder(SignedRoster)
_anchor_decoder: Final = msgspec.msgpack.Decoder(Anchor)
_state_decoder: Final = msgspec.msgpack.Decoder(RosterState)

_HINT_RESIGN: Final = "ask the coordinators for a correctly signed roster"


ROSTER_BASE_FIELDS: Final = 10  # the elements every roster has; witness_threshold is the 11th


def encode_roster(roster: Roster) -> bytes:
    """The canonical bytes of a roster: 10 elements while ``witness_threshold`` is 0 (the
    shape of every roster made before it existed), 11 elements otherwise."""
    if roster.witness_threshold == 0:
        return encode(list(msgspec.structs.astuple(roster))[:ROSTER_BASE_FIELDS])
    return encode(roster)


def decode_roster(data: bytes) -> Roster:
    """Strictly decode roster bytes; raises the ``DECODE_ERRORS`` (``NonCanonical`` for an
    11th element of 0, which has one canonical spelling: absent)."""
    roster = _roster_decoder.decode(data)
    if encode_roster(roster) != data:
        raise NonCanonical("non-canonical encoding")
    return roster


def roster_message(roster_bytes: bytes) -> bytes:
    """What a coordinator signs."""
    return L_ROSTER + u32(roster_bytes)


def roster_hash(roster_bytes: bytes) -> bytes:
    return blake2b_256(label("tfshare/v1/roster-hash") + roster_bytes)


# ---------------------------------------------------------------------------------------------
# Decoding


def _malformed(what: str, exc: Exception | None = None) -> RosterRejected:
    detail = f" ({str(exc).splitlines()[0]})" if exc is not None else ""
    return RosterRejected(
        RejectCode.E_ROSTER_MALFORMED,
        f"the {what} is malformed{detail}",
        hint="the file is damaged or not a tfshare roster; fetch it again",
    )


def decode_signed_roster(data: bytes) -> tuple[SignedRoster, Roster]:
    """Strictly decode a roster file (canonical bytes only) into its envelope and content."""
    try:
        signed = decode_canonical(data, _signed_decoder)
    except DECODE_ERRORS as exc:
        raise _malformed("roster file", exc) from None
    try:
        roster = decode_roster(signed.roster)
    except DECODE_ERRORS as exc:
        raise _malformed("roster", exc) from None
    return signed, roster


def decode_anchor(data: bytes) -> Anchor:
    try:
        anchor = decode_canonical(data, _anchor_decoder)
    except DECODE_ERRORS:
        raise TrustError(
            "this is not a tfshare trust anchor, or it is damaged",
            hint="get the anchor again from a coordinator and check its fingerprints",
        ) from None
    if not 1 <= anchor.threshold <= len({k.agency_id for k in anchor.coordinators}):
        raise TrustError(
            "the trust anchor's threshold is impossible",
            hint="get the anchor again from a coordinator",
        )
    return anchor


def decode_state(data: bytes) -> RosterState:
    try:
        return decode_canonical(data, _state_decoder)
    except DECODE_ERRORS:
        raise TrustError(
            "the saved roster state is damaged",
            hint="restore the state directory from backup; do not delete it to get past this",
        ) from None


# ---------------------------------------------------------------------------------------------
# The verified, indexed view receivers and senders use


@dataclass(frozen=True)
class SenderKey:
    member: Member
    key: KeyValidity
    fingerprint: str


class TrustedRoster:
    """A verified roster with lookups by agency, key id and channel."""

    def __init__(self, roster: Roster, roster_bytes: bytes) -> None:
        self.roster = roster
        self.hash = roster_hash(roster_bytes)
        self.members = {m.agency_id: m for m in roster.members}
        self.channels = {c.name: c for c in roster.channels}
        # Sets for the per-message checks (lists would be scanned once per envelope).
        self.readers = {c.name: frozenset(c.readers) for c in roster.channels}
        self.writers = {c.name: frozenset(c.writers) for c in roster.channels}
        self.sign_keys: dict[bytes, SenderKey] = {}
        for member in roster.members:
            for key in member.sign_keys:
                self.sign_keys[kid_sig(key.pk)] = SenderKey(member, key, fingerprint(key.pk))
        self.revoked = {r.kid: r for r in roster.revoked}
        self.enc_kid_of = {m.agency_id: kid_enc(m.enc_key.pk) for m in roster.members}
        self.agency_of_enc_kid = {kid: agency for agency, kid in self.enc_kid_of.items()}
        # Filled by tfshare.seal.resolve_recipients: (channel, to) -> recipients. The roster
        # never changes after verification, so neither does the answer.
        self.recipients_cache: dict[tuple[str, tuple[str, ...] | None], tuple[Any, ...]] = {}

    @property
    def taskforce(self) -> str:
        return self.roster.taskforce

    @property
    def seq(self) -> int:
        return self.roster.seq

    def expired(self, now_ms: int) -> bool:
        return now_ms > self.roster.expires_ms

    def check_sendable(self, now_ms: int) -> None:
        """Sending under an expired roster is refused: its membership may be out of date."""
        if self.expired(now_ms):
            raise RosterRejected(
                RejectCode.E_ROSTER_EXPIRED,
                f"roster seq {self.seq} expired; sending is refused",
                hint="ask the coordinators to re-sign the roster (tfshare roster sign)",
            )

    def check_receivable(self, now_ms: int) -> None:
        if now_ms > self.roster.expires_ms + RECEIVE_GRACE_MS:
            raise RosterRejected(
                RejectCode.E_ROSTER_EXPIRED,
                f"roster seq {self.seq} expired more than 7 days ago",
                hint="get the current roster from the coordinators",
            )

    def active_readers(self, channel: str) -> list[str]:
        ch = self.channels[channel]
        return [a for a in ch.readers if self.members[a].status == "active"]


# ---------------------------------------------------------------------------------------------
# Verification


def _coordinator_keys(roster: Roster) -> list[CoordinatorKey]:
    """The signing keys that vote for the roster's coordinators.

    Only active coordinators, and only keys that are neither revoked (for any reason) nor
    retired before this roster was issued: a stolen, rotated-away key must not keep its vote.
    """
    revoked = {r.kid for r in roster.revoked}
    keys: list[CoordinatorKey] = []
    for agency in roster.coordinators:
        member = next(m for m in roster.members if m.agency_id == agency)
        if member.status != "active":
            continue
        for key in member.sign_keys:
            if kid_sig(key.pk) not in revoked and key.not_after_ms >= roster.issued_ms:
                keys.append(CoordinatorKey(agency, key.pk))
    return keys


def anchor_of(roster: Roster) -> Anchor:
    """The anchor a roster implies: its coordinators' current signing keys and its threshold."""
    keys = sorted(_coordinator_keys(roster), key=lambda k: (k.agency_id, k.sign_pk))
    return Anchor(
        taskforce=roster.taskforce,
        threshold=roster.threshold,
        coordinators=keys,
        min_seq=roster.seq,
    )


def _approvals(roster_bytes: bytes, sigs: Iterable[RosterSig], anchor: Anchor) -> set[str]:
    return approvals(roster_message(roster_bytes), sigs, anchor)


def approvals(message: bytes, sigs: Iterable[RosterSig], anchor: Anchor) -> set[str]:
    """Distinct coordinator agencies of ``anchor`` with a valid signature over ``message``.

    Unknown signers, bad signatures and repeats do not count; one agency counts once even if
    it signed with two keys, so k really means k agencies. (Rosters and schema records.)
    """
    by_kid = {kid_sig(k.sign_pk): k for k in anchor.coordinators}
    approved: set[str] = set()
    for sig in sigs:
        key = by_kid.get(sig.kid)
        if (
            key is not None
            and key.agency_id not in approved
            and _verify(key.sign_pk, message, sig.sig)
        ):
            approved.add(key.agency_id)
    return approved


def _keyset(anchor: Anchor) -> set[tuple[str, bytes]]:
    return {(k.agency_id, k.sign_pk) for k in anchor.coordinators}


def _same_trust(a: Anchor, b: Anchor) -> bool:
    return a.taskforce == b.taskforce and a.threshold == b.threshold and _keyset(a) == _keyset(b)


def _check_member_keys(
    member: Member,
    kids: set[bytes],
    enc_keys: set[bytes],
    nats_users: set[str],
    bad: Callable[[str], RosterRejected],
) -> None:
    """One member's roles and keys, against the keys of the members checked before it."""
    if len(set(member.roles)) != len(member.roles):
        raise bad(f"{member.agency_id!r} lists a role twice")
    for key in [*member.sign_keys, member.enc_key]:
        if key.not_before_ms > key.not_after_ms:
            raise bad(f"a key of {member.agency_id!r} has an empty validity window")
    for key in member.sign_keys:
        kid = kid_sig(key.pk)
        if kid in kids:
            raise bad(f"a signing key of {member.agency_id!r} is listed twice")
        kids.add(kid)
    if member.enc_key.pk in enc_keys:
        raise bad(f"the encryption key of {member.agency_id!r} belongs to another member")
    enc_keys.add(member.enc_key.pk)
    # The broker has one user per NATS key: a copied key (it is public) would make the
    # broker configuration unloadable for everyone, or swap two agencies' permissions.
    if member.nats_user in nats_users:
        raise bad(f"the NATS key of {member.agency_id!r} belongs to another member")
    nats_users.add(member.nats_user)
    if not usable_x25519_key(member.enc_key.pk):
        raise bad(f"the encryption key of {member.agency_id!r} is a degenerate point")
    binding = enc_binding_message(member.agency_id, member.enc_key.pk)
    if not any(_verify(k.pk, binding, member.enc_self_sig) for k in member.sign_keys):
        raise bad(f"the encryption key of {member.agency_id!r} is not bound to its agency")


def validate_content(roster: Roster) -> None:
    """Internal consistency; raises E_ROSTER_MALFORMED naming the first problem."""

    def bad(why: str) -> RosterRejected:
        return RosterRejected(
            RejectCode.E_ROSTER_MALFORMED, f"the roster is inconsistent: {why}", hint=_HINT_RESIGN
        )

    if roster.v != 1:
        raise RosterRejected(
            RejectCode.E_ROSTER_MALFORMED,
            f"roster version {roster.v} is not supported",
            hint="upgrade tfshare",
        )
    members = {m.agency_id: m for m in roster.members}
    if len(members) != len(roster.members):
        raise bad("an agency is listed twice")
    if len(set(roster.coordinators)) != len(roster.coordinators):
        raise bad("a coordinator is listed twice")
    for agency in roster.coordinators:
        if agency not in members or "coordinator" not in members[agency].roles:
            raise bad(f"coordinator {agency!r} is not a member with the coordinator role")
    if not 1 <= roster.threshold <= len(roster.coordinators):
        raise bad(f"threshold {roster.threshold} with {len(roster.coordinators)} coordinators")
    if roster.expires_ms <= roster.issued_ms:
        raise bad("it expires before it is issued")
    kids: set[bytes] = set()
    enc_keys: set[bytes] = set()
    nats_users: set[str] = set()
    for member in roster.members:
        _check_member_keys(member, kids, enc_keys, nats_users, bad)
    revoked = [r.kid for r in roster.revoked]
    if len(set(revoked)) != len(revoked):
        raise bad("a key is revoked twice (one entry per key: the strongest revocation)")
    active = sum(1 for m in roster.members if m.status == "active")
    if roster.witness_threshold >= max(active, 1):
        # The log's own signer never witnesses itself, so at most active - 1 can cosign.
        raise bad(
            f"witness threshold {roster.witness_threshold} with {active} active member(s): "
            "at most one less than the active members can be met"
        )
    voters = {k.agency_id for k in _coordinator_keys(roster)}
    if roster.threshold > len(voters):
        raise bad(f"threshold {roster.threshold} but only {len(voters)} coordinator(s) can sign")
    names: set[str] = set()
    for channel in roster.channels:
        if channel.name in names:
            raise bad(f"channel {channel.name!r} is listed twice")
        names.add(channel.name)
        for agency in [*channel.readers, *channel.writers]:
            if agency not in members:
                raise bad(f"channel {channel.name!r} names unknown agency {agency!r}")
        if len(set(channel.readers)) != len(channel.readers) or len(set(channel.writers)) != len(
            channel.writers
        ):
            raise bad(f"channel {channel.name!r} names an agency twice")


def verify_roster(
    data: bytes, *, anchor: Anchor, state: RosterState | None, now_ms: int
) -> tuple[TrustedRoster, RosterState]:
    """Verify a roster file against the trusted coordinators; return it and the state to persist.

    Trust comes from ``state`` once a roster has been accepted (the anchor moves forward with
    coordinator-set changes), else from the pinned ``anchor``. Checks, in order: strict decode,
    task force, k-of-n signatures (plus k of the new set when the set or k changes), internal
    consistency, rollback, expiry beyond the receive grace period.
    """
    signed, roster = decode_signed_roster(data)
    trusted = state.anchor if state is not None else anchor
    floor = state.seq if state is not None else anchor.min_seq
    if roster.taskforce != trusted.taskforce:
        raise RosterRejected(
            RejectCode.E_ROSTER_TASKFORCE,
            f"the roster is for task force {roster.taskforce!r}, the anchor for "
            f"{trusted.taskforce!r}",
            hint="use the roster and anchor of the same task force",
        )
    approvals = _approvals(signed.roster, signed.sigs, trusted)
    if len(approvals) < trusted.threshold:
        raise RosterRejected(
            RejectCode.E_ROSTER_SIG,
            f"roster seq {roster.seq} has {len(approvals)} valid coordinator signature(s); "
            f"{trusted.threshold} needed",
            hint=_HINT_RESIGN,
        )
    validate_content(roster)
    implied = anchor_of(roster)
    if not _same_trust(implied, trusted):
        new_approvals = _approvals(signed.roster, signed.sigs, implied)
        if len(new_approvals) < implied.threshold:
            raise RosterRejected(
                RejectCode.E_ROSTER_SIG,
                f"roster seq {roster.seq} changes the coordinators or threshold but has "
                f"{len(new_approvals)} signature(s) of the new set; {implied.threshold} needed",
                hint="a coordinator change needs k signatures of the old set and k of the new",
            )
    digest = roster_hash(signed.roster)
    if roster.seq < floor or (
        state is not None and roster.seq == state.seq and digest != state.roster_hash
    ):
        raise RosterRejected(
            RejectCode.E_ROSTER_ROLLBACK,
            f"roster seq {roster.seq} is older than or conflicts with seq {floor} "
            f"({'accepted before' if state is not None else 'pinned in the anchor'})",
            hint="get the current roster from the coordinators; the older one was not applied",
        )
    trusted_roster = TrustedRoster(roster, signed.roster)
    trusted_roster.check_receivable(now_ms)
    return trusted_roster, RosterState(seq=roster.seq, roster_hash=digest, anchor=implied)


def self_verify(data: bytes) -> tuple[SignedRoster, Roster, set[str]]:
    """Decode a roster and report which of its own coordinators signed it (for show/anchor)."""
    signed, roster = decode_signed_roster(data)
    validate_content(roster)
    return signed, roster, _approvals(signed.roster, signed.sigs, anchor_of(roster))


# ---------------------------------------------------------------------------------------------
# Editing (coordinators). Each edit returns a new unsigned SignedRoster.


def _member_from_card(card: CardBody, roles: list[Role], now_ms: int) -> Member:
    # New names only: a roster already carrying such a name (signed before this rule) still
    # verifies and can still be edited - above all to revoke the agency - and is shown escaped.
    problem = display_name_problem(card.display_name)
    if problem is not None:
        raise _edit_error(
            f"agency {card.agency_id!r} cannot be added: {problem}",
            hint="ask the agency by phone to make its card again with a plain --name",
        )
    return Member(
        agency_id=card.agency_id,
        display_name=card.display_name,
        roles=roles,
        sign_keys=[KeyValidity(card.sign_pk, card.created_ms, MAX_UINT)],
        enc_key=KeyValidity(card.enc_pk, card.created_ms, MAX_UINT),
        enc_self_sig=card.enc_bind_sig,
        nats_user=card.nats_user,
        status="active",
    )


def new_roster(
    taskforce: str,
    coordinators: Sequence[CardBody],
    *,
    threshold: int,
    now_ms: int,
    valid_days: int,
) -> SignedRoster:
    """A first roster (seq 1, unsigned) whose members are the founding coordinators."""
    roster = Roster(
        v=1,
        taskforce=taskforce,
        seq=1,
        issued_ms=now_ms,
        expires_ms=now_ms + valid_days * DAY_MS,
        threshold=threshold,
        coordinators=[c.agency_id for c in coordinators],
        members=[_member_from_card(c, ["coordinator"], now_ms) for c in coordinators],
        channels=[],
        revoked=[],
    )
    validate_content(roster)
    return SignedRoster(roster=encode_roster(roster), sigs=[])


def edit(signed: SignedRoster, roster: Roster, *, now_ms: int) -> SignedRoster:
    """Re-issue ``roster`` after an edit: signatures are dropped, and if the previous version had
    any (it may have been published), seq moves on so receivers see a newer roster."""
    _, previous = decode_signed_roster(encode(signed))
    seq = previous.seq + 1 if signed.sigs else previous.seq
    lifetime = previous.expires_ms - previous.issued_ms
    roster = msgspec.structs.replace(
        roster, seq=seq, issued_ms=now_ms, expires_ms=now_ms + lifetime
    )
    data = encode_roster(roster)
    try:
        # Struct constructors do not check field constraints; decoding does.
        decode_roster(data)
    except DECODE_ERRORS as exc:
        raise TrustError(
            f"the edit would make an invalid roster ({safe_reason(exc)})",
            hint="check the names and values given; nothing was changed",
        ) from None
    validate_content(roster)
    return SignedRoster(roster=data, sigs=[])


def _edit_error(message: str, hint: str) -> TrustError:
    return TrustError(message, hint=hint)


def add_member(signed: SignedRoster, card: CardBody, *, role: Role, now_ms: int) -> SignedRoster:
    """Add an agency from its verified card; a coordinator role also makes it a coordinator."""
    _, roster = decode_signed_roster(encode(signed))
    if any(m.agency_id == card.agency_id for m in roster.members):
        raise _edit_error(
            f"agency {card.agency_id!r} is already in the roster",
            hint="revoke it first to replace its keys",
        )
    members = [*roster.members, _member_from_card(card, [role], now_ms)]
    coordinators = [*roster.coordinators, card.agency_id] if role == "coordinator" else None
    roster = msgspec.structs.replace(
        roster, members=members, coordinators=coordinators or roster.coordinators
    )
    return edit(signed, roster, now_ms=now_ms)


def grant(
    signed: SignedRoster,
    agency: str,
    *,
    channel: str,
    read: bool,
    write: bool,
    now_ms: int,
) -> SignedRoster:
    """Give ``agency`` read and/or write on ``channel``, creating the channel if it is new."""
    _, roster = decode_signed_roster(encode(signed))
    if not any(m.agency_id == agency for m in roster.members):
        raise _edit_error(
            f"agency {agency!r} is not in the roster", hint="add its card first (roster add)"
        )
    channels = {c.name: c for c in roster.channels}
    ch = channels.get(channel) or Channel(channel, [], [], 1, 1, [])
    readers = ch.readers + ([agency] if read and agency not in ch.readers else [])
    writers = ch.writers + ([agency] if write and agency not in ch.writers else [])
    channels[channel] = msgspec.structs.replace(ch, readers=readers, writers=writers)
    roster = msgspec.structs.replace(roster, channels=list(channels.values()))
    return edit(signed, roster, now_ms=now_ms)


def set_channel_schemas(
    signed: SignedRoster, channel: str, schemas: list[str], *, now_ms: int
) -> SignedRoster:
    """Restrict ``channel`` to these schema subjects (empty list: any known schema)."""
    _, roster = decode_signed_roster(encode(signed))
    channels = {c.name: c for c in roster.channels}
    if channel not in channels:
        raise _edit_error(
            f"channel {channel!r} does not exist", hint="create it with roster grant first"
        )
    channels[channel] = msgspec.structs.replace(channels[channel], schemas=sorted(set(schemas)))
    roster = msgspec.structs.replace(roster, channels=list(channels.values()))
    return edit(signed, roster, now_ms=now_ms)


def revoke(signed: SignedRoster, agency: str, *, reason: Reason, now_ms: int) -> SignedRoster:
    """Remove an agency: every signing key is revoked as of now, its status becomes removed.

    ``retired`` keeps earlier messages verifiable; ``compromised`` rejects every message signed
    with its keys that a receiver has not yet processed.
    """
    _, roster = decode_signed_roster(encode(signed))
    member = next((m for m in roster.members if m.agency_id == agency), None)
    if member is None:
        raise _edit_error(f"agency {agency!r} is not in the roster", hint="check the agency id")
    if agency in roster.coordinators:
        raise _edit_error(
            f"{agency!r} is a coordinator; removing it changes the coordinator set",
            hint="change the coordinator set in a dedicated roster version signed by old and new",
        )
    # One entry per key, the strongest: compromised beats retired, an earlier time beats a
    # later one. Re-revoking as compromised upgrades an earlier retirement.
    entries = {r.kid: r for r in roster.revoked}
    for key in member.sign_keys:
        kid = kid_sig(key.pk)
        old = entries.get(kid)
        if old is None:
            entries[kid] = Revocation(kid, now_ms, reason)
        elif reason == "compromised" and old.reason == "retired":
            entries[kid] = Revocation(kid, old.at_ms, "compromised")
    revoked = list(entries.values())
    if revoked == roster.revoked:
        raise _edit_error(
            f"{agency!r} is already revoked ({reason} or stronger)",
            hint="nothing to change; 'tfshare roster show' lists revocations",
        )
    members = [
        msgspec.structs.replace(m, status="removed") if m.agency_id == agency else m
        for m in roster.members
    ]
    roster = msgspec.structs.replace(roster, members=members, revoked=revoked)
    return edit(signed, roster, now_ms=now_ms)


def set_witness_threshold(signed: SignedRoster, threshold: int, *, now_ms: int) -> SignedRoster:
    """Require ``threshold`` witness cosignatures on a checkpoint before evidence resting on
    it is trusted (0: none, the default of every older roster)."""
    _, roster = decode_signed_roster(encode(signed))
    if threshold == roster.witness_threshold:
        raise _edit_error(
            f"the witness threshold is already {threshold}",
            hint="nothing to change; 'tfshare roster show' shows it",
        )
    roster = msgspec.structs.replace(roster, witness_threshold=threshold)
    return edit(signed, roster, now_ms=now_ms)


def signer_problem(
    roster: Roster, agency_id: str, sign_pk: bytes, *, previous: Anchor | None = None
) -> str | None:
    """Why a signature by ``agency_id``'s key ``sign_pk`` on ``roster`` could never count, or
    None if it can.

    A signature counts only from a voting key (``_coordinator_keys``: an active coordinator's
    key, neither revoked nor retired before the roster was issued) of this roster or, for a
    coordinator-set change, of ``previous`` (the anchor of the roster in force: an outgoing
    coordinator's approval). Anything else would change the file and add nothing but noise.
    """
    trusted = [*_coordinator_keys(roster), *(previous.coordinators if previous else [])]
    if any(k.agency_id == agency_id and k.sign_pk == sign_pk for k in trusted):
        return None
    who = agency_id
    member = next((m for m in roster.members if m.agency_id == who), None)
    where = f"roster seq {roster.seq} of {roster.taskforce}"
    if member is None:
        return f"{who!r} is not in {where}"
    if who not in roster.coordinators:
        return f"{who!r} is not a coordinator of {where}"
    if member.status != "active":
        return f"coordinator {who!r} is {member.status} in {where}"
    key = next((k for k in member.sign_keys if k.pk == sign_pk), None)
    if key is None:
        return f"this key is not one of {who!r}'s signing keys in {where}"
    revoked = next((r for r in roster.revoked if r.kid == kid_sig(key.pk)), None)
    if revoked is not None:
        return f"this key of {who!r} is revoked ({revoked.reason}) in {where}"
    return f"this key of {who!r} was retired before {where} was issued"


def sign(signed: SignedRoster, identity: Identity) -> SignedRoster:
    """Add ``identity``'s signature (replacing an earlier one by the same key)."""
    sig = RosterSig(identity.kid_sig, identity.sign(roster_message(signed.roster)))
    others = [s for s in signed.sigs if s.kid != identity.kid_sig]
    return SignedRoster(roster=signed.roster, sigs=[*others, sig])
