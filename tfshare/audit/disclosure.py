"""Disclosure of one message by one of its recipients, checkable by anyone.

Owns: the ``tfshare-disclosure/1`` file (the envelope as received, its payload key K, the
signed roster in force, the discloser's name and signature) and its check. K is drawn afresh
for every message, so handing it over reveals exactly that message: not the recipient's keys,
not any other message. The checker needs the task force's anchor and its current roster:
the roster inside the disclosure is the one the message was sent under, and says nothing of
the keys revoked since.

The check runs "as of the message's time": the roster inside is verified against the anchor
at the envelope's timestamp, the sender's key and permission are checked against that roster,
the discloser's signature over the disclosure (so who disclosed it is on record too), then
the sender's signature, the key commitment (K is the key every recipient got, not one made up
by the discloser), decryption, schema and body.

Pure: bytes in, bytes out; the caller reads and writes files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from tfshare.audit.evidence import check_evidence, without_revocation
from tfshare.encoding import DECODE_ERRORS, decode_canonical, encode, label, u32
from tfshare.epochs import EpochKeyring
from tfshare.errors import RejectCode, Rejected, RosterRejected, TfshareError, TrustError
from tfshare.keys import Identity, kid_sig, verify_signature
from tfshare.messages import MessageType, SchemaBook
from tfshare.registry.records import verify_record
from tfshare.roster import Anchor, TrustedRoster, decode_signed_roster, verify_roster
from tfshare.seal import ReceivePolicy, Verified, claimed_header, open_with_key, payload_key_of

DISCLOSURE_TAG: Final = "tfshare-disclosure/1"
# Judged at the message's own time: no maximum age, no clock skew to allow for.
_AS_OF_THEN: Final = ReceivePolicy(max_age_ms=2**53 - 1)


class Disclosure(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    tag: str
    discloser: str
    envelope: bytes
    payload_key: bytes
    roster: bytes
    # The signed registry record of the message's schema, when it is not one tfshare ships
    # (so that a checker outside the task force can read the body); empty otherwise.
    schema_record: bytes
    sig: bytes  # the discloser's Ed25519 signature over ``disclosure_message``

    def __repr__(self) -> str:  # K opens the message: never in a log or traceback
        return f"Disclosure(discloser={self.discloser!r}, payload_key=<hidden>)"


_decoder: Final = msgspec.msgpack.Decoder(Disclosure)
L_DISCLOSURE: Final = label("tfshare/v1/disclosure")


def disclosure_message(
    discloser: str, envelope: bytes, payload_key: bytes, roster: bytes, schema_record: bytes
) -> bytes:
    """What the discloser signs: L(disclosure) || u32(name) || SHA-256(envelope) || K ||
    SHA-256(roster) || SHA-256(schema_record)."""
    return b"".join(
        (
            L_DISCLOSURE,
            u32(discloser.encode("utf-8")),
            hashlib.sha256(envelope).digest(),
            payload_key,
            hashlib.sha256(roster).digest(),
            hashlib.sha256(schema_record).digest(),
        )
    )


def decode_disclosure(data: bytes) -> Disclosure:
    try:
        return decode_canonical(data, _decoder)
    except DECODE_ERRORS:
        raise DisclosureError(
            "not a disclosure file (or damaged)",
            hint="ask the recipient for the file 'tfshare audit disclose' wrote",
            code="E_DISCLOSURE_MALFORMED",
        ) from None


class DisclosureError(TrustError):
    """A disclosure file that cannot be checked, or that fails (``code`` says which check)."""


def disclose(
    envelope: bytes,
    *,
    identity: Identity,
    roster: TrustedRoster,
    roster_bytes: bytes,
    now_ms: int,
    schema_record: bytes = b"",
    epochs: EpochKeyring | None = None,
    kept_key: bytes | None = None,
) -> bytes:
    """The disclosure file of a message addressed to ``identity`` (raises ``Rejected``).
    ``kept_key``: the message key its inbox row kept (``seal.payload_key_of``).
    ``schema_record``: the signed registry record of its schema, if tfshare does not ship it.
    ``epochs``: the agency's epoch keys, for a message sealed in epoch mode (its disclosed K
    is that message's own, never the epoch key)."""
    key = payload_key_of(
        envelope,
        identity=identity,
        roster=roster,
        now_ms=now_ms,
        policy=_AS_OF_THEN,
        epochs=epochs,
        kept_key=kept_key,
    )
    name = identity.agency_id
    sig = identity.sign(disclosure_message(name, envelope, key, roster_bytes, schema_record))
    return encode(Disclosure(DISCLOSURE_TAG, name, envelope, key, roster_bytes, schema_record, sig))


@dataclass(frozen=True)
class Disclosed:
    """A checked disclosure: who sent what, when, and the body (the one thing revealed)."""

    verified: Verified
    schema: str
    record: object
    discloser: str
    roster_seq: int  # the roster the message was judged under (the disclosure's)
    # The current roster revocations were judged under: its seq and issue time.
    current_seq: int
    current_issued_ms: int

    def __repr__(self) -> str:
        return f"Disclosed(msg_id={self.verified.header.msg_id.hex()}, record=<hidden>)"


def check_disclosure(
    data: bytes,
    *,
    anchor: Anchor,
    schemas: SchemaBook,
    latest_roster: bytes | TrustedRoster | None = None,
    proof: bytes | None = None,
    log_keys: Callable[[TrustedRoster], Sequence[str]] | None = None,
) -> Disclosed:
    """Check a disclosure file against the task force's anchor; raises ``DisclosureError``.

    The message is judged as of its time, under the roster inside the disclosure (verified
    against the anchor's coordinators; an older roster than the anchor's is history, not a
    rollback). Revocations are judged under the checker's current roster, ``latest_roster``:
    roster file bytes (verified here against the anchor alone), or a roster the caller
    verified with its rollback state; never older than the disclosure's. It is required: the
    anchor is pinned once, so the disclosure's own roster (chosen by whoever made the file)
    cannot show a revocation since, and a thief's key would pass (E_DISCLOSURE_ROSTER). A
    key revoked as compromised in it is trusted only if ``proof`` (an evidence bundle of the
    message, checked with ``log_keys`` of that roster) shows the message in a checkpoint its
    witness threshold co-signed before the revocation.
    """
    disclosure = decode_disclosure(data)
    if disclosure.tag != DISCLOSURE_TAG:
        raise DisclosureError(
            f"unsupported disclosure format {disclosure.tag!r}",
            hint="upgrade tfshare",
            code="E_DISCLOSURE_MALFORMED",
        )
    # The claimed time, used only to judge the roster and the sender as of then; the
    # signature over it is checked below.
    claimed_ms = _claimed_time(disclosure.envelope)
    history = msgspec.structs.replace(anchor, min_seq=0)
    try:
        roster, _ = verify_roster(disclosure.roster, anchor=history, state=None, now_ms=claimed_ms)
    except RosterRejected as exc:
        raise DisclosureError(
            f"the roster in the disclosure does not verify against the anchor ({exc.code})",
            hint="check that the anchor is this task force's",
            code="E_DISCLOSURE_ROSTER",
        ) from None
    latest = _latest(roster, anchor, latest_roster, claimed_ms)
    _check_discloser(disclosure, roster, latest)
    kid = claimed_header(disclosure.envelope).sender_kid
    if _revoked_since(latest, kid, claimed_ms):
        _proven_before_revocation(disclosure.envelope, latest, proof, log_keys)
        roster = without_revocation(roster, kid)
    if disclosure.schema_record:
        schemas = _with_record(schemas, disclosure.schema_record, roster)
    try:
        verified, schema, record = open_with_key(
            disclosure.envelope,
            disclosure.payload_key,
            roster=roster,
            schemas=schemas,
            now_ms=claimed_ms,
            policy=_AS_OF_THEN,
        )
    except Rejected as exc:
        raise DisclosureError(
            f"the disclosed message does not check out ({exc.code}: {exc.message})",
            hint="the file was altered, or the key is not this message's",
            code=str(exc.code),
        ) from None
    return Disclosed(
        verified,
        schema,
        record,
        disclosure.discloser,
        roster.seq,
        latest.seq,
        latest.roster.issued_ms,
    )


def _latest(
    inside: TrustedRoster,
    anchor: Anchor,
    latest_roster: bytes | TrustedRoster | None,
    claimed_ms: int,
) -> TrustedRoster:
    """The checker's current roster (see ``check_disclosure``); never the disclosure's own."""
    if latest_roster is None:
        raise DisclosureError(
            "no current roster to judge the disclosure by: the roster inside it is the one "
            "the message was sent under, and keys may have been revoked as compromised since",
            hint="give --roster with the task force's current roster (or check with your "
            "agency's profile or --state)",
            code="E_DISCLOSURE_ROSTER",
        )
    if isinstance(latest_roster, TrustedRoster):
        latest = latest_roster
    else:
        latest = _verify_given(latest_roster, anchor, claimed_ms)
    if latest.taskforce != inside.taskforce or latest.seq < inside.seq:
        raise DisclosureError(
            f"the current roster (seq {latest.seq}) is older than the disclosure's "
            f"(seq {inside.seq})",
            hint="give --roster with the task force's current roster",
            code="E_ROSTER_ROLLBACK",
        )
    return latest


def _verify_given(latest_roster: bytes, anchor: Anchor, claimed_ms: int) -> TrustedRoster:
    try:
        # Judged at the later of the message's time and the roster's own issue: a current
        # roster is never refused for being issued after the message.
        _, content = decode_signed_roster(latest_roster)
        latest, _ = verify_roster(
            latest_roster,
            anchor=anchor,
            state=None,
            now_ms=max(claimed_ms, content.issued_ms),
        )
    except RosterRejected as exc:
        raise DisclosureError(
            f"the roster given does not verify against the anchor ({exc.code})",
            hint="give the task force's current roster and the anchor you pinned",
            code="E_DISCLOSURE_ROSTER",
        ) from None
    return latest


def _revoked_since(latest: TrustedRoster, kid: bytes, claimed_ms: int) -> bool:
    """True if the latest roster revoked the sender's key as compromised (a message then
    needs a proof); a retirement before the message's time refuses it outright."""
    revocation = latest.revoked.get(kid)
    if revocation is None:
        return False
    if revocation.reason == "retired":
        if claimed_ms > revocation.at_ms:
            raise DisclosureError(
                "the sender's key was retired before the message's time",
                hint="a retired key signs nothing after its retirement",
                code=RejectCode.E_REVOKED.value,
            )
        return False
    return True


def _proven_before_revocation(
    envelope: bytes,
    latest: TrustedRoster,
    proof: bytes | None,
    log_keys: Callable[[TrustedRoster], Sequence[str]] | None,
) -> None:
    if proof is None or log_keys is None:
        raise DisclosureError(
            "the sender's key was revoked as compromised: whoever stole it can sign messages "
            "dated before the revocation",
            hint="give the message's evidence bundle with --proof ('tfshare audit prove "
            "--from-broker'): it is trusted if witnesses co-signed its log before the revocation",
            code=RejectCode.E_REVOKED.value,
        )
    try:
        check_evidence(proof, roster=latest, log_keys=log_keys(latest), envelope=envelope)
    except TrustError as exc:
        raise DisclosureError(
            f"the proof does not show the message logged before the revocation ({exc.code}: "
            f"{exc.message})",
            hint="without a witnessed proof from before the revocation the message is not trusted",
            code=exc.code or RejectCode.E_REVOKED.value,
        ) from None


def _check_discloser(
    disclosure: Disclosure, roster: TrustedRoster, latest: TrustedRoster | None = None
) -> None:
    member = roster.members.get(disclosure.discloser)
    message = disclosure_message(
        disclosure.discloser,
        disclosure.envelope,
        disclosure.payload_key,
        disclosure.roster,
        disclosure.schema_record,
    )
    stolen = (
        set()
        if latest is None
        else {kid for kid, r in latest.revoked.items() if r.reason == "compromised"}
    )
    if member is None or not any(
        verify_signature(key.pk, message, disclosure.sig)
        for key in member.sign_keys
        if kid_sig(key.pk) not in stolen
    ):
        raise DisclosureError(
            f"the disclosure is not signed by {disclosure.discloser!r} of the roster "
            "(with a key not since revoked as compromised)",
            hint="the file was altered, the discloser is not a member, or its key was stolen",
            code="E_DISCLOSURE_SIG",
        )


def _with_record(schemas: SchemaBook, record: bytes, roster: TrustedRoster) -> SchemaBook:
    """The schema of the disclosed message from its signed registry record (k coordinators
    of the roster in force signed it), added to ``schemas``."""
    try:
        verified = verify_record(record, roster)
    except TfshareError as exc:
        raise DisclosureError(
            f"the schema record in the disclosure does not verify ({exc.message})",
            hint="the file was altered, or the record is not this task force's",
            code="E_DISCLOSURE_SCHEMA",
        ) from None
    return _Both(schemas, verified.schema)


class _Both:
    """A schema book plus one more schema."""

    def __init__(self, book: SchemaBook, extra: MessageType) -> None:
        self._book, self._extra = book, extra

    def lookup(self, name: str) -> MessageType | None:
        return self._extra if name == self._extra.name else self._book.lookup(name)


def _claimed_time(envelope: bytes) -> int:
    try:
        return claimed_header(envelope).ts_ms
    except Rejected as exc:
        raise DisclosureError(
            f"the disclosed envelope is damaged ({exc.code})",
            hint="ask the recipient for the file again",
            code=str(exc.code),
        ) from None
