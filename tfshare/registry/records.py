"""Registry records: one signed record per schema version, approved by the coordinators.

Owns: ``SchemaRecord`` (subject, version, fingerprint, compatibility mode, the canonical
schema, the previous version's fingerprint, when), its signing, and ``verify_record``: the
same k-of-n rule as the roster, counted against the roster's own coordinators, plus the
checks that the fingerprint is the schema's and the schema is inside the profile.

Never: accept a record on a partial check; a record that fails anything changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

import msgspec

from tfshare.encoding import (
    DECODE_ERRORS,
    Bytes32,
    Name,
    Uint,
    decode_canonical,
    encode,
    label,
    safe_reason,
    u32,
)
from tfshare.errors import RejectCode, RosterRejected, ValidationError
from tfshare.keys import Identity
from tfshare.registry.compat import Mode
from tfshare.registry.profile import MAX_DOCUMENT_BYTES, parse_document
from tfshare.registry.schema import Schema, canonical_json, fingerprint_of
from tfshare.roster import (
    MAX_SIGS,
    RosterSig,
    TrustedRoster,
    anchor_of,
    approvals,
)

RECORD_TAG: Final = "tfshare-schema/1"
L_SCHEMA: Final = label("tfshare/v1/schema")

SchemaSubject = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.-]{0,63}\Z")]
ModeName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z_]{4,20}\Z")]


class SchemaRecord(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    # The task force whose coordinators approve it: a record never crosses task forces, even
    # where the same coordinators sit in two of them.
    taskforce: Name
    subject: SchemaSubject
    version: Annotated[int, msgspec.Meta(ge=1, le=999_999)]
    fingerprint: Bytes32
    compat_mode: ModeName
    canonical_schema: Annotated[bytes, msgspec.Meta(max_length=MAX_DOCUMENT_BYTES)]
    previous_fingerprint: Annotated[bytes, msgspec.Meta(max_length=32)]  # empty for version 1
    registered_ms: Uint


class SignedSchemaRecord(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True, tag=RECORD_TAG
):
    record: bytes
    sigs: Annotated[list[RosterSig], msgspec.Meta(max_length=MAX_SIGS)]


_record_decoder: Final = msgspec.msgpack.Decoder(SchemaRecord)
_signed_decoder: Final = msgspec.msgpack.Decoder(SignedSchemaRecord)


def record_message(record_bytes: bytes) -> bytes:
    """What a coordinator signs: L("tfshare/v1/schema") || u32(record)."""
    return L_SCHEMA + u32(record_bytes)


def new_record(
    schema: Schema, *, taskforce: str, mode: Mode, previous: Schema | None, now_ms: int
) -> SignedSchemaRecord:
    record = SchemaRecord(
        taskforce=taskforce,
        subject=schema.subject,
        version=schema.version,
        fingerprint=schema.fingerprint,
        compat_mode=mode.value,
        canonical_schema=schema.canonical,
        previous_fingerprint=previous.fingerprint if previous else b"",
        registered_ms=now_ms,
    )
    return SignedSchemaRecord(record=encode(record), sigs=[])


def sign_record(signed: SignedSchemaRecord, identity: Identity) -> SignedSchemaRecord:
    sig = RosterSig(identity.kid_sig, identity.sign(record_message(signed.record)))
    others = [s for s in signed.sigs if s.kid != identity.kid_sig]
    return SignedSchemaRecord(record=signed.record, sigs=[*others, sig])


def _bad(why: str) -> ValidationError:
    return ValidationError(
        f"the schema record is invalid: {why}",
        hint="fetch the record again, or ask the coordinators to re-register the schema",
    )


def decode_record(data: bytes) -> tuple[SignedSchemaRecord, SchemaRecord]:
    try:
        signed = decode_canonical(data, _signed_decoder)
        record = decode_canonical(signed.record, _record_decoder)
    except DECODE_ERRORS as exc:
        raise _bad(f"malformed ({safe_reason(exc)})") from None
    return signed, record


@dataclass(frozen=True)
class VerifiedRecord:
    record: SchemaRecord
    schema: Schema
    mode: Mode
    approvals: frozenset[str]


def verify_record(
    data: bytes,
    roster: TrustedRoster,
    *,
    require_threshold: bool = True,
    name: tuple[str, int] | None = None,
) -> VerifiedRecord:
    """Check a record: canonical bytes, k coordinator signatures (the roster's coordinators and
    threshold), fingerprint = SHA-256 of the canonical schema, schema inside the profile.

    ``name`` is the (subject, version) the record was asked for or filed under: a validly
    signed record of another version is not a record of this one, so it fails like a forgery.
    """
    signed, record = decode_record(data)
    if name is not None and (record.subject, record.version) != name:
        raise _bad(
            f"it is the record of {record.subject}/{record.version}, not of {name[0]}/{name[1]}"
        )
    if record.taskforce != roster.taskforce:
        raise _bad(f"it belongs to task force {record.taskforce!r}, not {roster.taskforce!r}")
    anchor = anchor_of(roster.roster)
    approved = approvals(record_message(signed.record), signed.sigs, anchor)
    if require_threshold and len(approved) < anchor.threshold:
        raise RosterRejected(
            RejectCode.E_ROSTER_SIG,
            f"schema record {record.subject}/{record.version} has {len(approved)} valid "
            f"coordinator signature(s); {anchor.threshold} needed",
            hint="collect the coordinators' signatures (tfshare schema sign)",
        )
    try:
        mode = Mode(record.compat_mode)
    except ValueError:
        raise _bad(f"unknown compatibility mode {record.compat_mode!r}") from None
    doc = parse_document(record.canonical_schema)
    if canonical_json(doc) != record.canonical_schema:
        raise _bad("the schema is not in RFC 8785 canonical form")
    if fingerprint_of(doc) != record.fingerprint:
        raise _bad("the fingerprint is not the schema's")
    schema = Schema.from_document(doc, name=f"{record.subject}/{record.version}")
    if record.version > 1 and len(record.previous_fingerprint) != 32:
        raise _bad("a later version must name its predecessor's fingerprint")
    return VerifiedRecord(record, schema, mode, frozenset(approved))
