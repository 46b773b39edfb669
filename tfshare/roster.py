"""The task-force roster: who is in, which keys speak for each agency, who reads and writes what.

Owns: the roster's wire shapes, pure edits (each returns a new roster), coordinator signatures,
the trust anchor, and ``verify_roster``: k-of-n signatures from the trusted coordinator set,
coordinator-set changes (k of the old set and k of the new), rollback against the persisted
state, and expiry. The caller persists the returned ``RosterState``; nothing here touches disk.

Invariant: a roster that fails any check changes nothing. ``verify_roster`` either returns a
``TrustedRoster`` together with the state to persist, or raises ``RosterRejected``.

Scale (issue 15): up to 20,000 members, and every cost linear in the roster's size. The
structural checks use sets and dicts; the per-member cryptographic checks (the encryption
key's binding signature and its usability) run only for member records that are not identical
to one of the previously accepted roster (``verify_roster(..., previous=...)``); when many
must be checked (a first join), the binding signatures are verified on the machine's cores
(threads: libsodium releases the GIL), and the first member with a problem is still the one
reported. Named edits
(``add_members``, ``grant``, ``apply_rotation``...) decode once, check only what they change
against indexes of the rest, and encode once; ``roster sign`` (``self_verify``) checks all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
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
    is_name,
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

MAX_MEMBERS: Final = 20_000  # also the most readers, and writers, of one channel
MAX_CHANNELS: Final = 256
MAX_REVOKED: Final = 40_000
MAX_RETIRED_ENC_KEYS: Final = 40_000
MAX_SIGS: Final = 64
MAX_KEYS_PER_MEMBER: Final = 8
MAX_SCHEMAS_PER_CHANNEL: Final = 64
# A roster file of 20,000 members is about 6 MB; this bounds what a reader loads.
MAX_ROSTER_FILE: Final = 32 * 1024 * 1024
# A first join checks each member's encryption-key binding: on several cores once this many
# members per core need it (below, starting threads costs more than they save). Not Final:
# bench/roster_scale.py raises it to time the same verification on one core.
PARALLEL_CRYPTO_MIN = 512
# Channel.mode_policy is a bit set of the envelope modes a channel allows.
MODE_DIRECT: Final = 1
MODE_EPOCH: Final = 2
# A channel without an EpochPolicy entry rotates its epoch key weekly or every 100,000 messages.
DEFAULT_EPOCH_PERIOD_MS: Final = 7 * 24 * 3600 * 1000
DEFAULT_EPOCH_MAX_MESSAGES: Final = 100_000
MIN_EPOCH_PERIOD_MS: Final = 60_000
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
    sign_keys: Annotated[
        list[KeyValidity], msgspec.Meta(min_length=1, max_length=MAX_KEYS_PER_MEMBER)
    ]
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
    schemas: Annotated[list[SchemaSubject], msgspec.Meta(max_length=MAX_SCHEMAS_PER_CHANNEL)]


class Revocation(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    kid: Bytes8
    at_ms: Uint
    reason: Reason


class RetiredEncKey(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """An agency's previous encryption key and the window in which it served (after a
    rotation: until the new key's creation plus the grace period)."""

    agency_id: Name
    pk: Bytes32
    not_before_ms: Uint
    not_after_ms: Uint


class EpochPolicy(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """When a channel's epoch key rotates besides membership changes: after ``period_ms`` or
    ``max_messages`` messages, whichever comes first."""

    channel: Name
    period_ms: Uint
    max_messages: Uint


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
    # Optional trailing elements too (issue 15), under the same rule: a trailing element equal
    # to its default is not encoded. Previous encryption keys, so old wraps still name their
    # agency; and per-channel epoch rotation, sorted by channel, one entry per channel.
    retired_enc_keys: Annotated[
        list[RetiredEncKey], msgspec.Meta(max_length=MAX_RETIRED_ENC_KEYS)
    ] = []
    epoch_policies: Annotated[list[EpochPolicy], msgspec.Meta(max_length=MAX_CHANNELS)] = []


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


ROSTER_BASE_FIELDS: Final = 10  # the elements every roster has; the optional ones follow
# The optional trailing elements' defaults, in order (witness_threshold, retired_enc_keys,
# epoch_policies): what an absent element means.
_TRAILING_DEFAULTS: Final[tuple[object, ...]] = (0, [], [])


def encode_roster(roster: Roster) -> bytes:
    """The canonical bytes of a roster: its 10 base elements, then the optional trailing ones
    up to the last that differs from its default. A roster made before an element existed
    keeps its exact bytes (and signatures); each element has one canonical spelling."""
    fields = msgspec.structs.astuple(roster)
    end = len(fields)
    while (
        end > ROSTER_BASE_FIELDS
        and fields[end - 1] == _TRAILING_DEFAULTS[end - 1 - ROSTER_BASE_FIELDS]
    ):
        end -= 1
    if end == len(fields):
        return encode(roster)
    return encode(list(fields[:end]))


def decode_roster(data: bytes) -> Roster:
    """Strictly decode roster bytes; raises the ``DECODE_ERRORS`` (``NonCanonical`` for a
    trailing element spelled out at its default, whose canonical spelling is absent)."""
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


def decode_signed(data: bytes) -> SignedRoster:
    """Strictly decode a roster file's envelope only (an edit decodes the content itself)."""
    try:
        return decode_canonical(data, _signed_decoder)
    except DECODE_ERRORS as exc:
        raise _malformed("roster file", exc) from None


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


@dataclass
class MemberKids:
    """Each member's key ids (agency -> its signing kids in order, its encryption kid):
    hashed once per member record, and reused while the record stays the same."""

    sign: dict[str, tuple[bytes, ...]]
    enc: dict[str, bytes]

    @classmethod
    def of(cls, members: Iterable[Member]) -> MemberKids:
        kids = cls({}, {})
        for member in members:
            kids.add(member)
        return kids

    def add(self, member: Member) -> None:
        self.sign[member.agency_id] = tuple(kid_sig(k.pk) for k in member.sign_keys)
        self.enc[member.agency_id] = kid_enc(member.enc_key.pk)


@dataclass(frozen=True)
class SenderKey:
    member: Member
    key: KeyValidity

    @cached_property
    def fingerprint(self) -> str:
        # Computed when first asked for (a signature is checked): for 20,000 members, doing it
        # for every key at every roster change would cost more than the rest of the index.
        return fingerprint(self.key.pk)


class TrustedRoster:
    """A verified roster with lookups by agency, key id and channel."""

    def __init__(
        self, roster: Roster, roster_bytes: bytes, *, kids: MemberKids | None = None
    ) -> None:
        self.roster = roster
        self.hash = roster_hash(roster_bytes)
        self.members = {m.agency_id: m for m in roster.members}
        self.channels = {c.name: c for c in roster.channels}
        # Sets for the per-message checks (lists would be scanned once per envelope).
        self.readers = {c.name: frozenset(c.readers) for c in roster.channels}
        self.writers = {c.name: frozenset(c.writers) for c in roster.channels}
        ids = kids if kids is not None else MemberKids.of(roster.members)
        # Kept so that the next roster's verification reuses them for unchanged members.
        self.sign_kids_of = ids.sign
        self.enc_kid_of = ids.enc
        self.sign_keys: dict[bytes, SenderKey] = {}
        for member in roster.members:
            for kid, key in zip(ids.sign[member.agency_id], member.sign_keys, strict=True):
                self.sign_keys[kid] = SenderKey(member, key)
        self.revoked = {r.kid: r for r in roster.revoked}
        # A wrap made to a key that has since been rotated away still names its agency.
        self.agency_of_enc_kid = {kid_enc(r.pk): r.agency_id for r in roster.retired_enc_keys}
        self.agency_of_enc_kid.update((kid, agency) for agency, kid in self.enc_kid_of.items())
        self.key_managers = frozenset(
            m.agency_id for m in roster.members if m.status == "active" and "key-manager" in m.roles
        )
        self.epoch_policies = {
            p.channel: (p.period_ms, p.max_messages) for p in roster.epoch_policies
        }
        # True once verify_roster has checked every member's keys (directly, or because the
        # record is identical to one of a roster whose members were all checked): only such
        # a roster may serve as ``previous`` to spare those checks.
        self.members_checked = False
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

    def epoch_policy(self, channel: str) -> tuple[int, int]:
        """(period_ms, max_messages) after which ``channel``'s epoch key rotates."""
        return self.epoch_policies.get(
            channel, (DEFAULT_EPOCH_PERIOD_MS, DEFAULT_EPOCH_MAX_MESSAGES)
        )


# ---------------------------------------------------------------------------------------------
# Verification


def _coordinator_keys(
    roster: Roster, members: Mapping[str, Member] | None = None
) -> list[CoordinatorKey]:
    """The signing keys that vote for the roster's coordinators.

    Only active coordinators, and only keys that are neither revoked (for any reason) nor
    retired before this roster was issued: a stolen, rotated-away key must not keep its vote.
    ``members`` (agency -> member), when the caller has it, spares a scan per coordinator.
    """
    if members is None:
        wanted = set(roster.coordinators)
        members = {m.agency_id: m for m in roster.members if m.agency_id in wanted}
    revoked = {r.kid for r in roster.revoked}
    keys: list[CoordinatorKey] = []
    for agency in roster.coordinators:
        member = members[agency]
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


Bad = Callable[[str], RosterRejected]


def _check_member_keys(
    member: Member,
    member_kids: tuple[bytes, ...],
    kids: set[bytes],
    enc_keys: set[bytes],
    nats_users: set[str],
    bad: Bad,
) -> None:
    """One member's roles and keys (``member_kids``: its signing kids), against the keys of
    the members checked before it (sets: constant time per key). No cryptography: see
    ``_member_crypto_problem``."""
    if len(set(member.roles)) != len(member.roles):
        raise bad(f"{member.agency_id!r} lists a role twice")
    for key in [*member.sign_keys, member.enc_key]:
        if key.not_before_ms > key.not_after_ms:
            raise bad(f"a key of {member.agency_id!r} has an empty validity window")
    for kid in member_kids:
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


def _member_crypto_problem(member: Member) -> str | None:
    """Why the member's encryption key is not a usable X25519 point bound to it by one of its
    signing keys, or None: the costly part (an Ed25519 verification, about 55 us a member),
    depending on this record alone."""
    if not usable_x25519_key(member.enc_key.pk):
        return f"the encryption key of {member.agency_id!r} is a degenerate point"
    binding = enc_binding_message(member.agency_id, member.enc_key.pk)
    if not any(_verify(k.pk, binding, member.enc_self_sig) for k in member.sign_keys):
        return f"the encryption key of {member.agency_id!r} is not bound to its agency"
    return None


def _members_crypto_problems(members: Sequence[Member]) -> list[str | None]:
    """``_member_crypto_problem`` of each member, in order, on the machine's cores.

    libsodium runs with the GIL released (cffi calls C that way), so the Ed25519
    verifications of a first join (20,000 of them) run in parallel; few members are checked
    in the calling thread (a pool would cost more than it saves). Every member is checked, so
    which failure the caller reports first does not depend on the threads' timing."""
    workers = min(cores(), len(members) // PARALLEL_CRYPTO_MIN)
    if workers < 2:
        return [_member_crypto_problem(m) for m in members]
    chunks = [members[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers, thread_name_prefix="roster-verify") as pool:
        results = list(pool.map(lambda chunk: [_member_crypto_problem(m) for m in chunk], chunks))
    problems: list[str | None] = [None] * len(members)
    for i, chunk_problems in enumerate(results):
        problems[i::workers] = chunk_problems
    return problems


def cores() -> int:
    """The cores this process may run on (its affinity, where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _content_error(why: str) -> RosterRejected:
    return RosterRejected(
        RejectCode.E_ROSTER_MALFORMED, f"the roster is inconsistent: {why}", hint=_HINT_RESIGN
    )


def validate_content(roster: Roster, *, previous: TrustedRoster | None = None) -> MemberKids:
    """Internal consistency; raises E_ROSTER_MALFORMED naming the first problem.

    Linear in the roster's size (sets and dicts throughout). The per-member cryptographic
    checks are skipped for a member record identical to one of ``previous`` (a roster whose
    members were all checked, ``TrustedRoster.members_checked``): the checks depend on the
    record alone, so they would give the same answer again; nor are its key ids hashed again.
    Returns the members' key ids (for ``TrustedRoster``).
    """
    bad = _content_error
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
    ids, enc_keys = _check_members(roster, previous, bad)
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
    managers = [m.agency_id for m in roster.members if _is_key_manager(m)]
    if len(managers) > 1:
        raise bad(f"{len(managers)} active key managers ({', '.join(managers[:3])}); at most one")
    voters = {k.agency_id for k in _coordinator_keys(roster, members)}
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
        if channel.mode_policy not in (MODE_DIRECT, MODE_EPOCH, MODE_DIRECT | MODE_EPOCH):
            raise bad(
                f"channel {channel.name!r} has mode policy {channel.mode_policy} "
                "(1 direct, 2 epoch, 3 both)"
            )
    _check_retired(roster, members, enc_keys, bad)
    _check_epoch_policies(roster, names, bad)
    return ids


def _is_key_manager(member: Member) -> bool:
    return member.status == "active" and "key-manager" in member.roles


def _second_key_manager(roster: Roster, agency: str) -> TrustError | None:
    """The refusal if another active member than ``agency`` holds the key-manager role:
    two key managers would make two keys for one epoch and split every epoch channel."""
    other = next(
        (m.agency_id for m in roster.members if _is_key_manager(m) and m.agency_id != agency),
        None,
    )
    if other is None:
        return None
    return _edit_error(
        f"{other!r} is the task force's key manager already; {_NOTHING_CHANGED}",
        hint=f"one key manager per task force: take the role from {other!r} first "
        "(roster role ROSTER AGENCY --roles member)",
    )


def _check_members(
    roster: Roster, previous: TrustedRoster | None, bad: Bad
) -> tuple[MemberKids, set[bytes]]:
    """Each member's keys, and the cryptography of each not identical to one of ``previous``
    (see ``validate_content``); returns their key ids and the current encryption keys."""
    checked = previous if previous is not None and previous.members_checked else None
    known = checked.members if checked is not None else {}
    ids = MemberKids({}, {})
    kids: set[bytes] = set()
    enc_keys: set[bytes] = set()
    nats_users: set[str] = set()
    unchanged = [known.get(m.agency_id) == m for m in roster.members]
    # Every changed member's cryptography first (in parallel), then the members in order: the
    # first member with a problem is reported, its cryptographic problem before any other.
    changed = [m for m, same in zip(roster.members, unchanged, strict=True) if not same]
    problems = iter(_members_crypto_problems(changed))
    for member, same in zip(roster.members, unchanged, strict=True):
        agency = member.agency_id
        if checked is not None and same:
            ids.sign[agency] = checked.sign_kids_of[agency]
            ids.enc[agency] = checked.enc_kid_of[agency]
        else:
            problem = next(problems)
            if problem is not None:
                raise bad(problem)
            ids.add(member)
        _check_member_keys(member, ids.sign[agency], kids, enc_keys, nats_users, bad)
    return ids, enc_keys


def _check_retired(
    roster: Roster, members: Mapping[str, Member], enc_keys: set[bytes], bad: Bad
) -> None:
    """Retired encryption keys name members, have a window, and are nobody's current key and
    listed once: a kid must name one agency."""
    retired: set[bytes] = set()
    for old in roster.retired_enc_keys:
        if old.agency_id not in members:
            raise bad(f"a retired encryption key names unknown agency {old.agency_id!r}")
        if old.not_before_ms > old.not_after_ms:
            raise bad(f"a retired encryption key of {old.agency_id!r} has an empty window")
        if old.pk in enc_keys or old.pk in retired:
            raise bad(
                f"a retired encryption key of {old.agency_id!r} is listed twice or is a "
                "member's current key"
            )
        retired.add(old.pk)


def _check_epoch_policies(roster: Roster, channels: set[str], bad: Bad) -> None:
    last = ""
    for policy in roster.epoch_policies:
        if policy.channel not in channels:
            raise bad(f"an epoch policy names unknown channel {policy.channel!r}")
        if policy.channel <= last:
            raise bad("the epoch policies are not sorted by channel, one per channel")
        last = policy.channel
        if policy.period_ms < MIN_EPOCH_PERIOD_MS:
            raise bad(f"the epoch period of {policy.channel!r} is under a minute")
        if policy.max_messages < 1:
            raise bad(f"the epoch of {policy.channel!r} would hold no message")


def verify_roster(
    data: bytes,
    *,
    anchor: Anchor,
    state: RosterState | None,
    now_ms: int,
    previous: TrustedRoster | None = None,
) -> tuple[TrustedRoster, RosterState]:
    """Verify a roster file against the trusted coordinators; return it and the state to persist.

    Trust comes from ``state`` once a roster has been accepted (the anchor moves forward with
    coordinator-set changes), else from the pinned ``anchor``. Checks, in order: strict decode,
    task force, k-of-n signatures (plus k of the new set when the set or k changes), internal
    consistency, rollback, expiry beyond the receive grace period.

    ``previous``, the roster accepted before (if any), only saves work: a member record
    identical to one of it is not checked cryptographically again (``validate_content``).
    Trust never comes from it.
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
    message = roster_message(signed.roster)
    approved = approvals(message, signed.sigs, trusted)
    if len(approved) < trusted.threshold:
        raise RosterRejected(
            RejectCode.E_ROSTER_SIG,
            f"roster seq {roster.seq} has {len(approved)} valid coordinator signature(s); "
            f"{trusted.threshold} needed",
            hint=_HINT_RESIGN,
        )
    kids = validate_content(roster, previous=previous)
    implied = anchor_of(roster)
    if not _same_trust(implied, trusted):
        new_approvals = approvals(message, signed.sigs, implied)
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
    trusted_roster = TrustedRoster(roster, signed.roster, kids=kids)
    trusted_roster.members_checked = True
    trusted_roster.check_receivable(now_ms)
    return trusted_roster, RosterState(seq=roster.seq, roster_hash=digest, anchor=implied)


def self_verify(data: bytes) -> tuple[SignedRoster, Roster, set[str]]:
    """Decode a roster and report which of its own coordinators signed it (for show/anchor).
    Every member is checked (no ``previous``): this is what a coordinator signs."""
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


# Incremental edits: decode once, change, check the change against indexes of the rest, encode
# once. Structural checks of the unchanged rest are not repeated; ``roster sign``
# (``self_verify``) checks the whole roster, cryptography included, before it is signed.

_NATS_USER_RE: Final = re.compile(r"^U[A-Z2-7]{55}\Z")
_SCHEMA_RE: Final = re.compile(r"^[a-z][a-z0-9_.-]{0,63}\Z")
_NOTHING_CHANGED: Final = "nothing was changed"


def _opened(signed: SignedRoster) -> Roster:
    """The content of ``signed``, strictly decoded: the one decode of an edit."""
    try:
        return decode_roster(signed.roster)
    except DECODE_ERRORS as exc:
        raise _malformed("roster", exc) from None


def _issued(signed: SignedRoster, roster: Roster, *, now_ms: int) -> SignedRoster:
    """Re-issue an edited ``roster`` (the one encode of an edit): signatures are dropped, and
    if ``signed`` had any (it may have been published), seq moves on so receivers see a newer
    roster. Checks what depends on the whole roster but is cheap: the issue time and the
    coordinators' voting keys at it, and the witness threshold against the active members."""
    seq = roster.seq + 1 if signed.sigs else roster.seq
    lifetime = roster.expires_ms - roster.issued_ms
    if now_ms + lifetime > MAX_UINT:
        raise _edit_error("the clock is out of range", hint="check the system clock")
    roster = msgspec.structs.replace(
        roster, seq=seq, issued_ms=now_ms, expires_ms=now_ms + lifetime
    )
    voters = {k.agency_id for k in _coordinator_keys(roster)}
    if roster.threshold > len(voters):
        raise _edit_error(
            f"after this edit only {len(voters)} coordinator(s) could sign, "
            f"{roster.threshold} are needed; {_NOTHING_CHANGED}",
            hint="a coordinator-set change needs its own roster version (old and new sign)",
        )
    if roster.witness_threshold:
        active = sum(1 for m in roster.members if m.status == "active")
        if roster.witness_threshold >= max(active, 1):
            raise _edit_error(
                f"the witness threshold {roster.witness_threshold} would need more witnesses "
                f"than the {active} active member(s) can give; {_NOTHING_CHANGED}",
                hint="lower it first (tfshare roster witnesses)",
            )
    return SignedRoster(roster=encode_roster(roster), sigs=[])


@dataclass
class _KeyIndex:
    """Every key the roster holds, so a new one is checked against all in constant time."""

    kids: set[bytes]
    enc_keys: set[bytes]  # current and retired encryption keys
    nats_users: set[str]
    revoked: set[bytes]

    @classmethod
    def of(cls, roster: Roster) -> _KeyIndex:
        return cls(
            kids={kid_sig(k.pk) for m in roster.members for k in m.sign_keys},
            enc_keys={m.enc_key.pk for m in roster.members}
            | {r.pk for r in roster.retired_enc_keys},
            nats_users={m.nats_user for m in roster.members},
            revoked={r.kid for r in roster.revoked},
        )


def _check_new_member(member: Member, index: _KeyIndex) -> None:
    """A member about to be added: what decoding would check of its fields (a card built in
    a program was never decoded), and its keys against every key already in the roster."""
    who = member.agency_id
    hint = "ask the agency for its card again (tfshare keys init writes it)"
    if not is_name(who):
        raise _edit_error(f"{who!r} is not a valid agency id", hint=hint)
    keys = [k.pk for k in member.sign_keys] + [member.enc_key.pk]
    if (
        any(len(pk) != 32 for pk in keys)
        or len(member.enc_self_sig) != 64
        or not _NATS_USER_RE.match(member.nats_user)
        or member.enc_key.not_before_ms > MAX_UINT
    ):
        raise _edit_error(f"the card of {who!r} is malformed", hint=hint)
    for key in member.sign_keys:
        kid = kid_sig(key.pk)
        if kid in index.kids or kid in index.revoked:
            raise _edit_error(
                f"the signing key of {who!r} is already in the roster",
                hint="two cards with one key: check both agencies' fingerprints by phone",
            )
        index.kids.add(kid)
    if member.enc_key.pk in index.enc_keys:
        raise _edit_error(
            f"the encryption key of {who!r} is already in the roster",
            hint="two cards with one key: check both agencies' fingerprints by phone",
        )
    index.enc_keys.add(member.enc_key.pk)
    if member.nats_user in index.nats_users:
        raise _edit_error(
            f"the NATS key of {who!r} is already in the roster",
            hint="two cards with one key: check both agencies' fingerprints by phone",
        )
    index.nats_users.add(member.nats_user)


def add_members(
    signed: SignedRoster, cards: Sequence[CardBody], *, role: Role, now_ms: int
) -> SignedRoster:
    """Add agencies from their verified cards (``verify_card``/``load_card``: self-signature,
    key binding and usable key checked there, and again by ``roster sign``), all with ``role``;
    a coordinator role also makes them coordinators. All or nothing."""
    if not cards:
        raise _edit_error("no card to add", hint="name the cards (or a directory of them)")
    roster = _opened(signed)
    if len(roster.members) + len(cards) > MAX_MEMBERS:
        raise _edit_error(
            f"{len(roster.members)} members and {len(cards)} more would exceed the "
            f"{MAX_MEMBERS} a roster holds; {_NOTHING_CHANGED}",
            hint="a task force of more agencies needs a second task force",
        )
    present = {m.agency_id for m in roster.members}
    index = _KeyIndex.of(roster)
    added: list[Member] = []
    for card in cards:
        if card.agency_id in present:
            raise _edit_error(
                f"agency {card.agency_id!r} is already in the roster; {_NOTHING_CHANGED}",
                hint="revoke it first to replace its keys; name each card once",
            )
        present.add(card.agency_id)
        member = _member_from_card(card, [role], now_ms)
        _check_new_member(member, index)
        added.append(member)
    if role == "key-manager" and added:
        conflict = (
            _second_key_manager(roster, "")
            if len(added) == 1
            else _edit_error(
                f"{len(added)} key managers; {_NOTHING_CHANGED}",
                hint="one key manager per task force: add the others as members",
            )
        )
        if conflict is not None:
            raise conflict
    coordinators = roster.coordinators
    if role == "coordinator":
        coordinators = [*coordinators, *(m.agency_id for m in added)]
        if len(coordinators) > MAX_SIGS:
            raise _edit_error(
                f"more than {MAX_SIGS} coordinators; {_NOTHING_CHANGED}",
                hint="a roster has at most 64 coordinators",
            )
    roster = msgspec.structs.replace(
        roster, members=[*roster.members, *added], coordinators=coordinators
    )
    return _issued(signed, roster, now_ms=now_ms)


def add_member(signed: SignedRoster, card: CardBody, *, role: Role, now_ms: int) -> SignedRoster:
    """Add an agency from its verified card; a coordinator role also makes it a coordinator."""
    return add_members(signed, [card], role=role, now_ms=now_ms)


def _channel_at(roster: Roster, channel: str) -> int:
    for position, ch in enumerate(roster.channels):
        if ch.name == channel:
            return position
    raise _edit_error(
        f"channel {channel!r} does not exist; {_NOTHING_CHANGED}",
        hint="create it with roster grant first; 'tfshare roster show' lists the channels",
    )


def _with_channel(roster: Roster, position: int | None, channel: Channel) -> Roster:
    channels = list(roster.channels)
    if position is None:
        channels.append(channel)
    else:
        channels[position] = channel
    return msgspec.structs.replace(roster, channels=channels)


def _named_members(roster: Roster, agencies: str | Sequence[str] | None) -> list[str]:
    """``agencies`` (one id, several, or None: every active member), each once, all members."""
    if agencies is None:
        return [m.agency_id for m in roster.members if m.status == "active"]
    names = [agencies] if isinstance(agencies, str) else list(dict.fromkeys(agencies))
    members = {m.agency_id for m in roster.members}
    for agency in names:
        if agency not in members:
            raise _edit_error(
                f"agency {agency!r} is not in the roster; {_NOTHING_CHANGED}",
                hint="add its card first (roster add)",
            )
    return names


def grant(
    signed: SignedRoster,
    agencies: str | Sequence[str] | None,
    *,
    channel: str,
    read: bool,
    write: bool,
    now_ms: int,
) -> SignedRoster:
    """Give ``agencies`` (one id, several, or None: every active member) read and/or write on
    ``channel``, creating the channel (direct mode) if it is new."""
    if not is_name(channel):
        raise _edit_error(
            f"{channel!r} is not a valid channel name",
            hint="use 1-32 lowercase letters, digits, '-' or '_', starting with a letter",
        )
    roster = _opened(signed)
    names = _named_members(roster, agencies)
    position = next((i for i, c in enumerate(roster.channels) if c.name == channel), None)
    if position is None:
        if len(roster.channels) >= MAX_CHANNELS:
            raise _edit_error(
                f"the roster has {MAX_CHANNELS} channels, the most it holds; {_NOTHING_CHANGED}",
                hint="reuse a channel",
            )
        ch = Channel(channel, [], [], 1, MODE_DIRECT, [])
    else:
        ch = roster.channels[position]

    def extended(current: list[str], on: bool) -> list[str]:
        if not on:
            return current
        have = set(current)
        return current + [a for a in names if a not in have]

    ch = msgspec.structs.replace(
        ch, readers=extended(ch.readers, read), writers=extended(ch.writers, write)
    )
    return _issued(signed, _with_channel(roster, position, ch), now_ms=now_ms)


def ungrant(
    signed: SignedRoster,
    agencies: str | Sequence[str] | None,
    *,
    channel: str,
    read: bool,
    write: bool,
    now_ms: int,
) -> SignedRoster:
    """Take read and/or write on ``channel`` from ``agencies`` (None: every member)."""
    roster = _opened(signed)
    position = _channel_at(roster, channel)
    ch = roster.channels[position]
    if agencies is None:
        gone = {m.agency_id for m in roster.members}
    else:
        gone = set(_named_members(roster, agencies))
    ch = msgspec.structs.replace(
        ch,
        readers=[a for a in ch.readers if a not in gone] if read else ch.readers,
        writers=[a for a in ch.writers if a not in gone] if write else ch.writers,
    )
    return _issued(signed, _with_channel(roster, position, ch), now_ms=now_ms)


def set_channel_schemas(
    signed: SignedRoster, channel: str, schemas: list[str], *, now_ms: int
) -> SignedRoster:
    """Restrict ``channel`` to these schema subjects (empty list: any known schema)."""
    subjects = sorted(set(schemas))
    for subject in subjects:
        if not _SCHEMA_RE.match(subject):
            raise _edit_error(
                f"{subject!r} is not a schema subject",
                hint="a subject is like tf.alert: lowercase letters, digits, '.', '_', '-'",
            )
    if len(subjects) > MAX_SCHEMAS_PER_CHANNEL:
        raise _edit_error(
            f"more than {MAX_SCHEMAS_PER_CHANNEL} schemas on one channel",
            hint="allow any schema (no --schema) or fewer",
        )
    roster = _opened(signed)
    position = _channel_at(roster, channel)
    ch = msgspec.structs.replace(roster.channels[position], schemas=subjects)
    return _issued(signed, _with_channel(roster, position, ch), now_ms=now_ms)


def set_channel_modes(
    signed: SignedRoster, channel: str, *, direct: bool, epoch: bool, now_ms: int
) -> SignedRoster:
    """Say which envelope modes ``channel`` allows: direct (wraps per recipient), epoch (one
    channel key per epoch, delivered by the key manager), or both (senders pick by audience)."""
    if not direct and not epoch:
        raise _edit_error("a channel needs at least one mode", hint="allow direct, epoch or both")
    policy = (MODE_DIRECT if direct else 0) | (MODE_EPOCH if epoch else 0)
    roster = _opened(signed)
    position = _channel_at(roster, channel)
    ch = roster.channels[position]
    if ch.mode_policy == policy:
        raise _edit_error(
            f"channel {channel!r} already allows {mode_names(policy)}",
            hint="nothing to change; 'tfshare roster show' shows the modes",
        )
    ch = msgspec.structs.replace(ch, mode_policy=policy)
    return _issued(signed, _with_channel(roster, position, ch), now_ms=now_ms)


def mode_names(policy: int) -> str:
    """``direct``, ``epoch`` or ``direct,epoch`` for a mode policy."""
    names = [n for bit, n in ((MODE_DIRECT, "direct"), (MODE_EPOCH, "epoch")) if policy & bit]
    return ",".join(names) or "none"


def set_epoch_policy(
    signed: SignedRoster, channel: str, *, period_ms: int, max_messages: int, now_ms: int
) -> SignedRoster:
    """Rotate ``channel``'s epoch key after ``period_ms`` or ``max_messages`` messages (besides
    every change of its readers). The defaults (7 days, 100,000) are stored as no entry."""
    if not MIN_EPOCH_PERIOD_MS <= period_ms <= MAX_UINT:
        raise _edit_error(
            "an epoch period is at least a minute", hint="e.g. --epoch-period 7d or 12h"
        )
    if not 1 <= max_messages <= MAX_UINT:
        raise _edit_error("an epoch holds at least one message", hint="e.g. --epoch-messages 1000")
    roster = _opened(signed)
    _channel_at(roster, channel)
    others = [p for p in roster.epoch_policies if p.channel != channel]
    if (period_ms, max_messages) != (DEFAULT_EPOCH_PERIOD_MS, DEFAULT_EPOCH_MAX_MESSAGES):
        others.append(EpochPolicy(channel, period_ms, max_messages))
    policies = sorted(others, key=lambda p: p.channel)
    if policies == roster.epoch_policies:
        raise _edit_error(
            f"channel {channel!r} already has this epoch policy",
            hint="nothing to change; 'tfshare roster show' shows it",
        )
    roster = msgspec.structs.replace(roster, epoch_policies=policies)
    return _issued(signed, roster, now_ms=now_ms)


_ROLES: Final[tuple[Role, ...]] = ("coordinator", "member", "auditor", "key-manager")


def set_roles(
    signed: SignedRoster, agency: str, roles: Sequence[Role], *, now_ms: int
) -> SignedRoster:
    """Give ``agency`` exactly ``roles`` (e.g. member and key-manager). Whether it is a
    coordinator is not changed here: that is a coordinator-set change, a version of its own."""
    wanted: list[Role] = list(dict.fromkeys(roles))
    if not wanted or any(r not in _ROLES for r in wanted):
        raise _edit_error("give one or more roles", hint=f"roles are {', '.join(_ROLES)}")
    roster = _opened(signed)
    position = next((i for i, m in enumerate(roster.members) if m.agency_id == agency), None)
    if position is None:
        raise _edit_error(f"agency {agency!r} is not in the roster", hint="check the agency id")
    member = roster.members[position]
    if ("coordinator" in wanted) != ("coordinator" in member.roles):
        raise _edit_error(
            f"this would make {agency!r} {'a' if 'coordinator' in wanted else 'no longer a'} "
            f"coordinator; {_NOTHING_CHANGED}",
            hint="a change of the coordinator set is a roster version of its own, signed by "
            "k of the old coordinators and k of the new",
        )
    if member.status != "active":
        raise _edit_error(
            f"agency {agency!r} is {member.status}; {_NOTHING_CHANGED}",
            hint="roles are given to active members",
        )
    if sorted(wanted) == sorted(member.roles):
        raise _edit_error(
            f"{agency!r} already has the roles {','.join(member.roles)}",
            hint="nothing to change; 'tfshare roster show' lists the roles",
        )
    if "key-manager" in wanted:
        conflict = _second_key_manager(roster, agency)
        if conflict is not None:
            raise conflict
    members = list(roster.members)
    members[position] = msgspec.structs.replace(member, roles=wanted)
    return _issued(signed, msgspec.structs.replace(roster, members=members), now_ms=now_ms)


# A rotation statement may come from a clock a little ahead of the coordinator's.
ROTATION_CLOCK_SKEW_MS: Final = 5 * 60 * 1000  # PROTOCOL 6.4; rotation.MAX_FUTURE_MS


def apply_rotation(
    signed: SignedRoster,
    *,
    agency: str,
    new_enc_pk: bytes,
    enc_bind_sig: bytes,
    new_sign_pk: bytes,
    created_ms: int,
    grace_ms: int,
    now_ms: int,
) -> SignedRoster:
    """Apply an agency's key rotation (its statement verified by the caller:
    ``tfshare.rotation.read_rotation``).

    The new encryption key becomes the member's (valid from ``created_ms``); the one it
    replaces moves to the retired keys, valid until ``created_ms + grace_ms``, so wraps made to
    it still name the agency. A new signing key is appended, and the current one's window ends
    at ``created_ms``. ``enc_bind_sig`` must bind the new encryption key by the signing key
    that is current after the rotation, and the new keys must be new to the roster.
    """
    hint = "ask the agency for its rotation statement again (tfshare keys rotate)"
    if len(new_enc_pk) != 32 or len(new_sign_pk) != 32 or len(enc_bind_sig) != 64:
        raise _edit_error("the rotation statement's keys are malformed", hint=hint)
    if not 0 <= created_ms <= MAX_UINT or not 0 <= grace_ms <= MAX_UINT - created_ms:
        raise _edit_error("the rotation statement's times are out of range", hint=hint)
    if created_ms > now_ms + ROTATION_CLOCK_SKEW_MS:
        raise _edit_error(
            f"the rotation of {agency!r} was made in the future (its clock or ours is wrong)",
            hint="check both clocks, then have the agency rotate again",
        )
    roster = _opened(signed)
    position = next((i for i, m in enumerate(roster.members) if m.agency_id == agency), None)
    if position is None:
        raise _edit_error(f"agency {agency!r} is not in the roster", hint="check the agency id")
    member = roster.members[position]
    if member.status != "active":
        raise _edit_error(
            f"agency {agency!r} is {member.status}; {_NOTHING_CHANGED}",
            hint="only an active member's keys are rotated",
        )
    # The current signing key: the newest (a later one in the list on a tie).
    current_at = max(
        range(len(member.sign_keys)), key=lambda i: (member.sign_keys[i].not_before_ms, i)
    )
    current_sign = member.sign_keys[current_at]
    new_sign = new_sign_pk != current_sign.pk
    new_enc = new_enc_pk != member.enc_key.pk
    if not new_sign and not new_enc:
        raise _edit_error(
            f"the rotation of {agency!r} names the keys the roster already has",
            hint="nothing to change; was it applied already? ('tfshare roster show')",
        )
    if created_ms < max(member.enc_key.not_before_ms, current_sign.not_before_ms):
        raise _edit_error(
            f"the rotation of {agency!r} is older than its current keys",
            hint="apply only the agency's latest rotation statement",
        )
    index = _KeyIndex.of(roster)
    if new_enc and new_enc_pk in index.enc_keys:
        raise _edit_error(
            f"the new encryption key of {agency!r} is already in the roster (now or before)",
            hint="a rotation makes a fresh key; ask the agency to rotate again",
        )
    if new_sign and (kid_sig(new_sign_pk) in index.kids or kid_sig(new_sign_pk) in index.revoked):
        raise _edit_error(
            f"the new signing key of {agency!r} is already in the roster",
            hint="a rotation makes a fresh key; ask the agency to rotate again",
        )
    if not usable_x25519_key(new_enc_pk):
        raise _edit_error(f"the new encryption key of {agency!r} is unusable", hint=hint)
    if not _verify(new_sign_pk, enc_binding_message(agency, new_enc_pk), enc_bind_sig):
        raise _edit_error(
            f"the new encryption key of {agency!r} is not bound by its current signing key",
            hint=hint,
        )
    sign_keys = member.sign_keys
    if new_sign:
        if len(sign_keys) >= MAX_KEYS_PER_MEMBER:
            raise _edit_error(
                f"{agency!r} already has {MAX_KEYS_PER_MEMBER} signing keys, the most a "
                f"member holds; {_NOTHING_CHANGED}",
                hint="revoke the agency (tfshare roster revoke --reason retired) and add it "
                "again from a new card, or rotate only its encryption key (keys rotate --enc)",
            )
        sign_keys = list(sign_keys)
        sign_keys[current_at] = msgspec.structs.replace(current_sign, not_after_ms=created_ms)
        sign_keys.append(KeyValidity(new_sign_pk, created_ms, MAX_UINT))
    retired = roster.retired_enc_keys
    enc_key = member.enc_key
    if new_enc:
        if len(retired) >= MAX_RETIRED_ENC_KEYS:
            raise _edit_error(
                f"the roster holds {MAX_RETIRED_ENC_KEYS} retired encryption keys, the most "
                f"it can; {_NOTHING_CHANGED}",
                hint="a roster this old needs a new task force",
            )
        retired = [
            *retired,
            RetiredEncKey(agency, enc_key.pk, enc_key.not_before_ms, created_ms + grace_ms),
        ]
        enc_key = KeyValidity(new_enc_pk, created_ms, MAX_UINT)
    members = list(roster.members)
    members[position] = msgspec.structs.replace(
        member, sign_keys=sign_keys, enc_key=enc_key, enc_self_sig=enc_bind_sig
    )
    roster = msgspec.structs.replace(roster, members=members, retired_enc_keys=retired)
    return _issued(signed, roster, now_ms=now_ms)


def revoke(signed: SignedRoster, agency: str, *, reason: Reason, now_ms: int) -> SignedRoster:
    """Remove an agency: every signing key is revoked as of now, its status becomes removed.

    ``retired`` keeps earlier messages verifiable; ``compromised`` rejects every message signed
    with its keys that a receiver has not yet processed.
    """
    roster = _opened(signed)
    position = next((i for i, m in enumerate(roster.members) if m.agency_id == agency), None)
    if position is None:
        raise _edit_error(f"agency {agency!r} is not in the roster", hint="check the agency id")
    member = roster.members[position]
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
    if len(revoked) > MAX_REVOKED:
        raise _edit_error(
            f"the roster holds {MAX_REVOKED} revocations, the most it can",
            hint="a roster this old needs a new task force",
        )
    members = list(roster.members)
    members[position] = msgspec.structs.replace(member, status="removed")
    roster = msgspec.structs.replace(roster, members=members, revoked=revoked)
    return _issued(signed, roster, now_ms=now_ms)


def set_witness_threshold(signed: SignedRoster, threshold: int, *, now_ms: int) -> SignedRoster:
    """Require ``threshold`` witness cosignatures on a checkpoint before evidence resting on
    it is trusted (0: none, the default of every older roster)."""
    roster = _opened(signed)
    if threshold == roster.witness_threshold:
        raise _edit_error(
            f"the witness threshold is already {threshold}",
            hint="nothing to change; 'tfshare roster show' shows it",
        )
    if not 0 <= threshold <= MAX_UINT:
        raise _edit_error("the witness threshold is out of range", hint="give 0 or more")
    roster = msgspec.structs.replace(roster, witness_threshold=threshold)
    return _issued(signed, roster, now_ms=now_ms)


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
