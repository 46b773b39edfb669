"""Key rotation statements (``tfshare-rotation/1``): an agency's new keys, vouched for by its
current signing key, for the coordinators to put in the roster.

Owns: the statement's format, ``make_rotation`` (the agency's side) and ``read_rotation`` (the
coordinators' side: every check before ``roster.apply_rotation`` may use it), the bounds of
a grace period (``MIN_GRACE_MS``..``MAX_GRACE_MS``), and what an agency keeps of its retired
secrets whatever their grace: ``listed_keys`` (its keys the roster in force still lists, whose
secrets are never destroyed) and ``rotation_not_applied`` (a rotation overdue in the roster).

Pure: no disk, no clock (times are arguments).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

import msgspec

from tfshare.encoding import (
    DECODE_ERRORS,
    Bytes32,
    Bytes64,
    Name,
    Uint,
    decode_canonical,
    encode,
    label,
    safe_reason,
    u32,
)
from tfshare.errors import TrustError
from tfshare.keys import (
    Identity,
    enc_binding_message,
    kid_sig,
    usable_x25519_key,
    verify_signature,
)
from tfshare.roster import KeyValidity, Member, Roster, TrustedRoster

ROTATION_TAG: Final = "tfshare-rotation/1"
L_ROTATION: Final = label("tfshare/v1/rotation")

HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
MIN_GRACE_MS: Final = HOUR_MS
MAX_GRACE_MS: Final = 90 * DAY_MS
DEFAULT_GRACE_MS: Final = 7 * DAY_MS
# A statement dated further ahead than this of the reader's clock is refused (clock skew).
MAX_FUTURE_MS: Final = 5 * 60_000

_HINT: Final = (
    "ask the agency to run 'tfshare keys rotate' again and send the new AGENCY.rotation file"
)


class Rotation(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True, tag=ROTATION_TAG
):
    """The statement as stored. ``sig`` covers every element before it (``signed_part``)."""

    agency_id: Name
    created_ms: Uint
    grace_ms: Uint
    new_enc_pk: Bytes32
    # By the signing key that will be current (``new_sign_pk``) over
    # keys.enc_binding_message(agency_id, new_enc_pk): copied into the roster's enc_self_sig.
    enc_bind_sig: Bytes64
    new_sign_pk: Bytes32  # the current signing key when it is not rotated
    sig: Bytes64

    def signed_part(self) -> bytes:
        """The canonical encoding of the array of the elements before ``sig`` (tag included)."""
        return encode(
            [
                ROTATION_TAG,
                self.agency_id,
                self.created_ms,
                self.grace_ms,
                self.new_enc_pk,
                self.enc_bind_sig,
                self.new_sign_pk,
            ]
        )


def rotation_message(signed_part: bytes) -> bytes:
    """What the current signing key signs: L("tfshare/v1/rotation") || u32(signed part)."""
    return L_ROTATION + u32(signed_part)


_decoder: Final = msgspec.msgpack.Decoder(Rotation)


@dataclass(frozen=True)
class VerifiedRotation:
    """A statement that passed ``read_rotation`` against a roster."""

    agency_id: str
    created_ms: int
    new_enc_pk: bytes
    enc_bind_sig: bytes
    new_sign_pk: bytes
    grace_ms: int
    signer_pk: bytes  # the roster signing key that signed it (the one replaced, if any)
    rotates_enc: bool  # new_enc_pk is not the roster's current encryption key
    rotates_sign: bool  # new_sign_pk is not the signer (a new signing key)


def grace_problem(grace_ms: int) -> str | None:
    """Why ``grace_ms`` cannot be a rotation's grace period, or None."""
    if not MIN_GRACE_MS <= grace_ms <= MAX_GRACE_MS:
        return "a grace period lasts from 1 hour to 90 days"
    return None


def make_rotation(before: Identity, after: Identity, *, created_ms: int, grace_ms: int) -> bytes:
    """The statement that ``after`` (``before.rotated(...)``) replaces ``before``'s keys:
    the encryption key bound by the signing key that will be current, the whole signed by
    ``before``'s signing key (the one the roster lists)."""
    problem = grace_problem(grace_ms)
    if problem is not None:
        raise ValueError(problem)
    new_sign_pk = after.sign_keys_held[0]
    binder = after.with_signing_key(new_sign_pk)
    unsigned = Rotation(
        agency_id=after.agency_id,
        created_ms=created_ms,
        grace_ms=grace_ms,
        new_enc_pk=after.enc_pk,
        enc_bind_sig=binder.sign(enc_binding_message(after.agency_id, after.enc_pk)),
        new_sign_pk=new_sign_pk,
        sig=bytes(64),
    )
    sig = before.sign(rotation_message(unsigned.signed_part()))
    return encode(msgspec.structs.replace(unsigned, sig=sig))


def decode_rotation(data: bytes) -> Rotation:
    """Strict, canonical decoding only (no signature checked)."""
    try:
        return decode_canonical(data, _decoder)
    except DECODE_ERRORS as exc:
        raise TrustError(
            f"this is not a key rotation statement, or it is damaged ({safe_reason(exc)})",
            hint=_HINT,
        ) from None


def read_rotation(data: bytes, roster: Roster, *, now_ms: int | None = None) -> VerifiedRotation:
    """Decode ``data`` and check it against ``roster``; TrustError (exit 6) with a hint when:

    - it is not a canonical ``tfshare-rotation/1``;
    - the agency is not an active member;
    - it is not signed by one of the agency's signing keys that is neither revoked (for any
      reason) nor retired: the signer must be the agency's newest signing key, still valid at
      ``created_ms``;
    - it is stale: dated no later than the agency's current keys came into force (a statement
      already applied, replayed), or (with ``now_ms``) more than 5 minutes in the future;
    - a new key is unusable: a degenerate X25519 point, a key another member (or the agency
      itself, earlier) already has, or an encryption key not bound by the new signing key;
    - it rotates nothing, or its grace period is outside 1 hour..90 days.
    """
    statement = decode_rotation(data)
    agency = statement.agency_id
    member = next((m for m in roster.members if m.agency_id == agency), None)
    if member is None:
        raise TrustError(
            f"the rotation statement names {agency!r}, which is not in the roster",
            hint="check that the statement is for this task force",
        )
    if member.status != "active":
        raise TrustError(
            f"the rotation statement is for {agency!r}, which is {member.status}",
            hint="only an active member's keys are rotated; ask the other coordinators",
        )
    signer = _signer(statement, member, roster)
    if signer is None:
        raise TrustError(
            f"the rotation statement of {agency!r} is not signed by its current signing key",
            hint="it was forged, or signed with a key the roster no longer trusts; " + _HINT,
        )
    newest = max(k.not_before_ms for k in [*member.sign_keys, member.enc_key])
    if statement.created_ms <= newest:
        raise TrustError(
            f"the rotation statement of {agency!r} is older than the keys the roster holds "
            "(already applied, or replayed)",
            hint="nothing to do if it was applied; else " + _HINT,
        )
    if now_ms is not None and statement.created_ms > now_ms + MAX_FUTURE_MS:
        raise TrustError(
            f"the rotation statement of {agency!r} is dated in the future",
            hint="check this machine's clock and the agency's; " + _HINT,
        )
    problem = grace_problem(statement.grace_ms)
    if problem is not None:
        raise TrustError(f"the rotation statement of {agency!r} is refused: {problem}", hint=_HINT)
    _check_new_keys(statement, member, roster, signer)
    return VerifiedRotation(
        agency_id=agency,
        created_ms=statement.created_ms,
        new_enc_pk=statement.new_enc_pk,
        enc_bind_sig=statement.enc_bind_sig,
        new_sign_pk=statement.new_sign_pk,
        grace_ms=statement.grace_ms,
        signer_pk=signer.pk,
        rotates_enc=statement.new_enc_pk != member.enc_key.pk,
        rotates_sign=statement.new_sign_pk != signer.pk,
    )


def _signer(statement: Rotation, member: Member, roster: Roster) -> KeyValidity | None:
    """The member's signing key that signed, if it may: not revoked, not superseded (the
    newest the member has), valid at the statement's time."""
    revoked = {r.kid for r in roster.revoked}
    newest = max(k.not_before_ms for k in member.sign_keys)
    message = rotation_message(statement.signed_part())
    for key in member.sign_keys:
        if kid_sig(key.pk) in revoked or key.not_before_ms != newest:
            continue
        if not key.not_before_ms <= statement.created_ms <= key.not_after_ms:
            continue
        if verify_signature(key.pk, message, statement.sig):
            return key
    return None


def _check_new_keys(
    statement: Rotation, member: Member, roster: Roster, signer: KeyValidity
) -> None:
    agency = statement.agency_id
    enc_changed = statement.new_enc_pk != member.enc_key.pk
    sign_changed = statement.new_sign_pk != signer.pk
    if not (enc_changed or sign_changed):
        raise TrustError(
            f"the rotation statement of {agency!r} rotates nothing: its keys are the roster's",
            hint="nothing to do if it was applied; else " + _HINT,
        )
    if not usable_x25519_key(statement.new_enc_pk):
        raise TrustError(
            f"the new encryption key of {agency!r} is a degenerate point (every sender would "
            "share an all-zero secret with it)",
            hint=_HINT,
        )
    if enc_changed and _enc_key_taken(statement.new_enc_pk, roster):
        raise TrustError(
            f"the new encryption key of {agency!r} is already in the roster",
            hint="a key is never reused; " + _HINT,
        )
    if sign_changed:
        new_kid = kid_sig(statement.new_sign_pk)
        if any(kid_sig(k.pk) == new_kid for m in roster.members for k in m.sign_keys):
            raise TrustError(
                f"the new signing key of {agency!r} is already in the roster",
                hint="a key is never reused; " + _HINT,
            )
        if statement.new_sign_pk == bytes(32) or new_kid in {r.kid for r in roster.revoked}:
            raise TrustError(f"the new signing key of {agency!r} is unusable", hint=_HINT)
    binding = enc_binding_message(agency, statement.new_enc_pk)
    if not verify_signature(statement.new_sign_pk, binding, statement.enc_bind_sig):
        raise TrustError(
            f"the new encryption key of {agency!r} is not bound by its new signing key",
            hint=_HINT,
        )


def _enc_key_taken(enc_pk: bytes, roster: Roster) -> bool:
    """Whether ``enc_pk`` is, or was, a member's encryption key (keys are never reused)."""
    return any(m.enc_key.pk == enc_pk for m in roster.members) or any(
        r.pk == enc_pk for r in roster.retired_enc_keys
    )


# ---------------------------------------------------------------------------------------------
# The agency's side after a rotation: what it keeps until the roster applies it


def listed_keys(roster: TrustedRoster, agency_id: str) -> frozenset[bytes]:
    """The public keys the roster in force lists as ``agency_id``'s own: its encryption key
    and its signing keys not revoked. Senders wrap to that encryption key and receivers
    check signatures against those signing keys, so their secrets are never destroyed
    (PROTOCOL 8.7), whatever the grace period a ``keys rotate`` gave them. Empty when the
    agency is not a member."""
    member = roster.members.get(agency_id)
    if member is None:
        return frozenset()
    signing = (
        key.pk
        for kid, key in zip(roster.sign_kids_of[agency_id], member.sign_keys, strict=True)
        if kid not in roster.revoked
    )
    return frozenset((member.enc_key.pk, *signing))


@dataclass(frozen=True)
class RotationNotApplied:
    """A rotation whose grace period is over while the roster in force still lists the key it
    replaced: the secret is kept (``listed_keys``), and the agency is told to get the
    statement applied."""

    agency_id: str
    rotated_ms: int  # when ``keys rotate`` replaced the key the roster still lists
    overdue_ms: int  # how long past the end of its grace period

    @property
    def reason(self) -> str:
        when = dt.datetime.fromtimestamp(self.rotated_ms / 1000, dt.UTC).strftime("%Y-%m-%d")
        days = self.overdue_ms / DAY_MS
        return (
            f"the roster still lists the key {self.agency_id} replaced on {when} ('tfshare "
            f"keys rotate'), {days:.1f} days past its grace period: its secret is kept until "
            "the coordinators apply the rotation"
        )

    @property
    def hint(self) -> str:
        return (
            f"send {self.agency_id}.rotation (written beside the key file) to a coordinator; "
            f"they run 'tfshare roster rotate ROSTER {self.agency_id}.rotation' and publish "
            "the roster. Lost it? 'tfshare keys rotate --statement-only' makes it again"
        )


def rotation_not_applied(
    identity: Identity, roster: TrustedRoster, now_ms: int
) -> RotationNotApplied | None:
    """The overdue rotation of ``identity`` (its retired secrets past their grace period that
    the roster in force still lists), or None. The oldest such secret says how late it is."""
    listed = listed_keys(roster, identity.agency_id)
    late = [
        r
        for r in identity.retired_secrets()
        if r.destroy_after_ms < now_ms and r.public_key in listed
    ]
    if not late:
        return None
    first = min(late, key=lambda r: r.destroy_after_ms)
    return RotationNotApplied(
        identity.agency_id, first.not_after_ms, now_ms - first.destroy_after_ms
    )
