"""Offline evidence: a proof bundle that one entry is in the task force's signed audit log.

Owns: ``ProofBundle`` and its encoding, ``make_bundle`` (from a log and one of its signed
checkpoints), ``check_bundle`` (everything an agency or a court checks offline, with nothing
but the bundle and the log's verifier keys), ``CheckedBundle`` and ``BundleError``.

Encoding: a canonical msgpack array (the project's encoding for everything signed or hashed),

    ["tfshare-proof/1", taskforce, entry bytes, index, tree size, [proof hashes...],
     signed checkpoint note, [verifier key strings...]]

and ``decode_bundle`` accepts only the canonical bytes of that array, so no two byte strings
are the same bundle. Every field is bound by a check: the entry and index by the inclusion
proof, the size and root by the signed checkpoint, the taskforce by the checkpoint's origin
(``tfshare/<taskforce>/audit``) and the entry's own taskforce field, and each verifier key
string (in its one canonical spelling) by having to verify a signature on the checkpoint. The
property tests flip every single bit of a bundle and expect a ``BundleError``.

One thing is deliberately not bound: signature lines in the note from keys the bundle does
not list (a witness cosignature, say) are ignored, as c2sp.org/signed-note requires.

Trust: with ``trusted_vkeys`` the checkpoint must verify under those keys (configured by the
checker, e.g. from the roster). Without them the bundle's own keys are used and the result
says ``self_asserted``: the bundle is internally sound, but anyone can make such a bundle for
a log of their own; the keys must be compared with the task force's by other means.

Never: read the disk, the network or the clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Final, Protocol

import msgspec

from tfshare.audit.entry import MAX_ENTRY_SIZE, EntryError, LogEntry, decode_entry, entry_leaf_hash
from tfshare.audit.merkle import (
    HASH_SIZE,
    ProofCode,
    ProofError,
    verify_inclusion,
)
from tfshare.audit.note import (
    Checkpoint,
    NoteCode,
    NoteError,
    NoteVerifier,
    checkpoint_origin,
    open_checkpoint,
)
from tfshare.audit.witness import Cosignature, require_witnesses, witnessed_before
from tfshare.encoding import (
    DECODE_ERRORS,
    Name,
    NonCanonical,
    decode_canonical,
    encode,
    safe_reason,
)
from tfshare.errors import RejectCode, Rejected, TrustError
from tfshare.roster import TrustedRoster
from tfshare.seal import ReceivePolicy, Verified, claimed_header, verify_envelope

FORMAT: Final = "tfshare-proof/1"
MAX_PROOF_HASHES: Final = 64  # the height of a tree of 2^64-1 leaves
MAX_NOTE_SIZE: Final = 64 * 1024  # a checkpoint with 100 signature lines is ~14 KiB
MAX_VKEYS: Final = 16
MAX_VKEY_LENGTH: Final = 512
MAX_BUNDLE_SIZE: Final = 128 * 1024


class BundleCode(StrEnum):
    """Why a proof bundle was refused. Stable: callers and tests match on them."""

    E_BUNDLE_MALFORMED = "E_BUNDLE_MALFORMED"  # not a canonical tfshare-proof/1 bundle
    E_BUNDLE_TASKFORCE = "E_BUNDLE_TASKFORCE"  # for another task force's log
    E_BUNDLE_SIGNATURE = "E_BUNDLE_SIGNATURE"  # the checkpoint is not signed as required
    E_BUNDLE_PROOF = "E_BUNDLE_PROOF"  # the entry is not proven under the signed root
    E_BUNDLE_ENVELOPE = "E_BUNDLE_ENVELOPE"  # the envelope given is not the logged one
    E_BUNDLE_INDEX = "E_BUNDLE_INDEX"  # the entry index is not inside the signed tree
    E_BUNDLE_SENDER = "E_BUNDLE_SENDER"  # the envelope is not validly signed by its sender


_HINTS: Final = {
    BundleCode.E_BUNDLE_MALFORMED: (
        "this is not an intact tfshare-proof/1 bundle (damaged in transit, or not a bundle): "
        "ask the sender to export it again with 'audit prove'"
    ),
    BundleCode.E_BUNDLE_TASKFORCE: (
        "the bundle is about another task force's log than the one you expect; check which "
        "task force the evidence should come from"
    ),
    BundleCode.E_BUNDLE_SIGNATURE: (
        "the checkpoint is not signed by the keys you trust (or its own listed keys): get "
        "the task force's current log verifier keys from the roster and check again; a "
        "bundle that still fails is not evidence"
    ),
    BundleCode.E_BUNDLE_PROOF: (
        "the entry is not proven to be in the signed log at that position: the bundle was "
        "altered or made from another log; it is not evidence"
    ),
    BundleCode.E_BUNDLE_ENVELOPE: (
        "the envelope you hold is not the one this entry logged (its SHA-256 differs): check "
        "that you gave the exact envelope file, byte for byte"
    ),
    BundleCode.E_BUNDLE_SENDER: (
        "the envelope's sender signature or header does not check out against the roster "
        "(or it is not the message this entry names): it is not evidence of that message"
    ),
    BundleCode.E_BUNDLE_INDEX: (
        "the entry index is not inside the signed tree: export the bundle against a "
        "checkpoint signed after the entry was logged"
    ),
}


class BundleError(TrustError):
    """A proof bundle was refused (or could not be made); ``code`` is a ``BundleCode``."""

    def __init__(self, code: BundleCode, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or _HINTS[code], code=code.value)
        self.bundle_code = code


# msgpack integers stop at 2^64-1, the largest RFC 6962 tree size, so ge=0 is the whole
# bound (msgspec cannot state le=2^64-1).
TreeSize = Annotated[int, msgspec.Meta(ge=0)]
Hash = Annotated[bytes, msgspec.Meta(min_length=HASH_SIZE, max_length=HASH_SIZE)]
VKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_VKEY_LENGTH)]


class ProofBundle(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """Everything needed to prove, offline, that ``entry`` is entry ``index`` of the log."""

    format: str
    taskforce: Name
    entry: Annotated[bytes, msgspec.Meta(max_length=MAX_ENTRY_SIZE)]
    index: TreeSize
    size: TreeSize
    proof: Annotated[list[Hash], msgspec.Meta(max_length=MAX_PROOF_HASHES)]
    checkpoint: Annotated[bytes, msgspec.Meta(max_length=MAX_NOTE_SIZE)]
    vkeys: Annotated[list[VKey], msgspec.Meta(min_length=1, max_length=MAX_VKEYS)]


_decoder: Final = msgspec.msgpack.Decoder(ProofBundle)


def encode_bundle(bundle: ProofBundle) -> bytes:
    """The canonical msgpack bytes of ``bundle`` (what ``audit prove`` writes)."""
    return encode(bundle)


def decode_bundle(data: bytes) -> ProofBundle:
    """Strictly decode bundle bytes (canonical msgpack, every field bounded); no trust checks."""
    if len(data) > MAX_BUNDLE_SIZE:
        raise BundleError(
            BundleCode.E_BUNDLE_MALFORMED,
            f"bundle is {len(data)} bytes, more than {MAX_BUNDLE_SIZE}",
        )
    try:
        bundle = decode_canonical(data, _decoder)
    except DECODE_ERRORS as exc:
        reason = "not the canonical encoding" if isinstance(exc, NonCanonical) else safe_reason(exc)
        raise BundleError(
            BundleCode.E_BUNDLE_MALFORMED, f"bundle does not decode: {reason}"
        ) from None
    if bundle.format != FORMAT:
        raise BundleError(BundleCode.E_BUNDLE_MALFORMED, f"bundle format is not {FORMAT!r}")
    return bundle


@dataclass(frozen=True, slots=True)
class CheckedBundle:
    """A bundle that checked out: which entry, where, and who signed the tree it is in."""

    entry: LogEntry
    index: int
    size: int
    root: bytes
    origin: str
    signers: tuple[str, ...]  # names of the keys whose signatures on the checkpoint verified
    self_asserted: bool  # True: checked with the bundle's own keys, not ones the caller trusts

    @property
    def trust(self) -> str:
        """The word for display: trusted, or self-asserted."""
        return "self-asserted" if self.self_asserted else "trusted"


class ProofSource(Protocol):
    """What ``make_bundle`` needs from a log (``tfshare.audit.logstore.AuditStore`` has it)."""

    @property
    def size(self) -> int: ...

    def entry_bytes(self, index: int) -> bytes: ...

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]: ...


def make_bundle(
    store: ProofSource,
    index: int,
    checkpoint_note: bytes,
    vkeys: Sequence[str],
    taskforce: str,
) -> ProofBundle:
    """The proof bundle of entry ``index`` against the signed checkpoint ``checkpoint_note``.

    ``vkeys`` are the log's verifier keys (e.g. every coordinator's); the bundle lists those
    whose signature is on the checkpoint, and at least one must be. The bundle is checked
    with ``check_bundle`` against ``vkeys`` before it is returned: a bundle that would not
    check is never handed out.
    """
    candidates = _parse_vkeys(vkeys, trusted=True)
    origin = _origin(taskforce)
    checkpoint, _ = _open(checkpoint_note, candidates, origin)
    verifiers = [v for v in candidates if _signed_by(checkpoint_note, v, origin)]
    size = checkpoint.size
    if not 0 <= index < size:
        raise BundleError(
            BundleCode.E_BUNDLE_INDEX,
            f"entry {index} is not inside the checkpoint's tree of {size} entries",
        )
    if store.size < size:
        raise BundleError(
            BundleCode.E_BUNDLE_PROOF,
            f"the log has {store.size} entries, fewer than the checkpoint's {size}: it is "
            "not the log this checkpoint was signed for",
        )
    bundle = ProofBundle(
        format=FORMAT,
        taskforce=taskforce,
        entry=store.entry_bytes(index),
        index=index,
        size=size,
        proof=store.inclusion_proof(index, size),
        checkpoint=checkpoint_note,
        vkeys=[verifier.format() for verifier in verifiers],
    )
    check_bundle(bundle, trusted_vkeys=vkeys, taskforce=taskforce)
    return bundle


def check_bundle(
    bundle: ProofBundle | bytes,
    *,
    trusted_vkeys: Sequence[str] | None,
    taskforce: str | None,
    envelope: bytes | None = None,
) -> CheckedBundle:
    """Check a proof bundle offline; returns what it proves, or raises ``BundleError``.

    In order: the bundle decodes (E_BUNDLE_MALFORMED); it is for ``taskforce`` if one is
    given (E_BUNDLE_TASKFORCE); each of its verifier keys is canonical and signed the
    checkpoint, whose origin is ``tfshare/<taskforce>/audit`` (E_BUNDLE_SIGNATURE,
    E_BUNDLE_TASKFORCE); the checkpoint verifies under ``trusted_vkeys`` unless that is None
    (then the result is marked self-asserted); the bundle's size is the checkpoint's
    (E_BUNDLE_PROOF) and the index is inside it (E_BUNDLE_INDEX); the entry decodes and
    belongs to the task force; the inclusion proof leads from the entry to the signed root
    (E_BUNDLE_PROOF); and, if ``envelope`` is given, SHA-256(envelope) is the entry's
    env_sha256 (E_BUNDLE_ENVELOPE).
    """
    if isinstance(bundle, bytes):
        bundle = decode_bundle(bundle)
    elif not isinstance(bundle, ProofBundle):
        raise BundleError(BundleCode.E_BUNDLE_MALFORMED, "not a proof bundle")
    else:
        # A bundle built in memory gets exactly the checks a received one does.
        try:
            data = encode_bundle(bundle)
        except (TypeError, ValueError, OverflowError):
            raise BundleError(
                BundleCode.E_BUNDLE_MALFORMED, "bundle holds a value of the wrong type"
            ) from None
        bundle = decode_bundle(data)
    if taskforce is not None and bundle.taskforce != taskforce:
        raise BundleError(
            BundleCode.E_BUNDLE_TASKFORCE,
            f"bundle is for task force {bundle.taskforce!r}, expected {taskforce!r}",
        )
    origin = _origin(bundle.taskforce)
    own = _parse_vkeys(bundle.vkeys, trusted=False)
    for number, verifier in enumerate(own):
        # Every listed key must have signed: a key string nobody checked would be an
        # unbound field, and a reader would take it for a signer.
        try:
            _open(bundle.checkpoint, [verifier], origin)
        except BundleError as exc:
            raise BundleError(
                exc.bundle_code, f"bundle key {number} ({verifier.name}): {exc.message}"
            ) from None
    if trusted_vkeys is None:
        checkpoint, signers = _open(bundle.checkpoint, own, origin)
    else:
        checkpoint, signers = _open(
            bundle.checkpoint, _parse_vkeys(trusted_vkeys, trusted=True), origin
        )
    if bundle.size != checkpoint.size:
        raise BundleError(
            BundleCode.E_BUNDLE_PROOF,
            f"the proof is for a tree of {bundle.size} entries, the checkpoint for "
            f"{checkpoint.size}",
        )
    if not 0 <= bundle.index < bundle.size:
        raise BundleError(
            BundleCode.E_BUNDLE_INDEX,
            f"entry {bundle.index} is not inside the signed tree of {bundle.size} entries",
        )
    try:
        entry = decode_entry(bundle.entry)
    except EntryError as exc:
        raise BundleError(
            BundleCode.E_BUNDLE_MALFORMED, f"the bundle's entry is not a log entry ({exc.message})"
        ) from None
    if entry.taskforce != bundle.taskforce:
        raise BundleError(
            BundleCode.E_BUNDLE_TASKFORCE,
            f"the entry is for task force {entry.taskforce!r}, the bundle for {bundle.taskforce!r}",
        )
    try:
        verify_inclusion(
            entry_leaf_hash(bundle.entry),
            bundle.index,
            bundle.size,
            bundle.proof,
            checkpoint.root_hash,
        )
    except ProofError as exc:
        code = (
            BundleCode.E_BUNDLE_INDEX
            if exc.proof_code is ProofCode.E_PROOF_INDEX
            else BundleCode.E_BUNDLE_PROOF
        )
        raise BundleError(code, f"inclusion proof refused: {exc.code}: {exc.message}") from None
    if envelope is not None and hashlib.sha256(envelope).digest() != entry.env_sha256:
        raise BundleError(
            BundleCode.E_BUNDLE_ENVELOPE,
            f"SHA-256 of the envelope given is not the env_sha256 logged in entry {bundle.index}",
        )
    return CheckedBundle(
        entry=entry,
        index=bundle.index,
        size=bundle.size,
        root=checkpoint.root_hash,
        origin=origin,
        signers=signers,
        self_asserted=trusted_vkeys is None,
    )


def _origin(taskforce: str) -> str:
    try:
        return checkpoint_origin(taskforce)
    except NoteError:
        raise BundleError(
            BundleCode.E_BUNDLE_TASKFORCE, f"{taskforce!r} is not a task-force name"
        ) from None


def _parse_vkeys(vkeys: Sequence[str], *, trusted: bool) -> list[NoteVerifier]:
    """Verifier key strings, each in its one canonical spelling (lower-case key id)."""
    # A bad trusted key is the checker's configuration: the signature check cannot be done.
    # A bad key inside the bundle means the bundle itself is damaged.
    code = BundleCode.E_BUNDLE_SIGNATURE if trusted else BundleCode.E_BUNDLE_MALFORMED
    which = "trusted verifier key" if trusted else "bundle verifier key"
    if isinstance(vkeys, str) or not vkeys:
        raise BundleError(code, f"no {which}s given (a list of key strings is needed)")
    verifiers: list[NoteVerifier] = []
    for number, vkey in enumerate(vkeys):
        try:
            verifier = NoteVerifier.parse(vkey)
        except (NoteError, TypeError, AttributeError):
            raise BundleError(code, f"{which} {number} is not a note verifier key") from None
        if trusted:
            if verifier not in verifiers:
                verifiers.append(verifier)
            continue
        # Inside a bundle only the one spelling is accepted (the key id in lower case, once):
        # otherwise bytes of the bundle could change without any check noticing.
        if verifier.format() != vkey:
            raise BundleError(code, f"{which} {number} is not written in its canonical form")
        if verifier in verifiers:
            raise BundleError(code, f"{which} {number} is listed twice")
        verifiers.append(verifier)
    return verifiers


def _signed_by(note: bytes, verifier: NoteVerifier, origin: str) -> bool:
    """True if ``verifier`` signed ``note``; False if it did not sign; raises if its
    signature is there but fails (the note was altered)."""
    try:
        open_checkpoint(note, [verifier], origin=origin)
    except NoteError as exc:
        if exc.note_code is NoteCode.E_NOTE_UNKNOWN_KEY:
            return False
        raise BundleError(
            _NOTE_CODES.get(exc.note_code, BundleCode.E_BUNDLE_SIGNATURE),
            f"checkpoint refused: {exc.code}: {exc.message}",
        ) from None
    return True


def _open(
    note: bytes, verifiers: Sequence[NoteVerifier], origin: str
) -> tuple[Checkpoint, tuple[str, ...]]:
    try:
        return open_checkpoint(note, verifiers, origin=origin)
    except NoteError as exc:
        raise BundleError(
            _NOTE_CODES.get(exc.note_code, BundleCode.E_BUNDLE_SIGNATURE),
            f"checkpoint refused: {exc.code}: {exc.message}",
        ) from None


# How a refusal of the checkpoint note reads for a bundle; the rest are E_BUNDLE_SIGNATURE.
_NOTE_CODES: Final = {
    NoteCode.E_CHECKPOINT_ORIGIN: BundleCode.E_BUNDLE_TASKFORCE,
    NoteCode.E_NOTE_MALFORMED: BundleCode.E_BUNDLE_MALFORMED,
    NoteCode.E_NOTE_TOO_MANY_SIGS: BundleCode.E_BUNDLE_MALFORMED,
    NoteCode.E_CHECKPOINT_MALFORMED: BundleCode.E_BUNDLE_MALFORMED,
}


# --- evidence: a bundle judged against the roster --------------------------------------------

# Evidence is checked long after the fact: the envelope is judged as of its own time, with
# no maximum age and no clock skew to allow for.
_AS_OF_THEN: Final = ReceivePolicy(max_age_ms=2**53 - 1)
# Entries whose env_sha256 is the hash of an envelope (the others hash a roster or record).
ENVELOPE_ENTRIES: Final = frozenset({"message", "retraction", "receipt"})


@dataclass(frozen=True, slots=True)
class Evidence:
    """A bundle checked against a verified roster: the entry in the log signed by the
    roster's log keys, the witnesses that co-signed that checkpoint (at least the roster's
    threshold), and, if an envelope was given, its verified header."""

    checked: CheckedBundle
    witnesses: tuple[Cosignature, ...]
    threshold: int
    envelope: Verified | None


def check_evidence(
    bundle: bytes,
    *,
    roster: TrustedRoster,
    log_keys: Sequence[str],
    envelope: bytes | None = None,
) -> Evidence:
    """Everything ``audit check`` proves: ``check_bundle`` under ``log_keys`` (the roster's
    log verifier keys, and any the checker adds) for the roster's task force; at least the
    roster's ``witness_threshold`` distinct other members co-signed the checkpoint
    (``WitnessError`` E_WITNESS_THRESHOLD); and with ``envelope``: its hash is the entry's,
    and it passes PROTOCOL.md checks 1 to 5 against the roster as of its own time, with a
    header naming the entry's message (E_BUNDLE_SENDER)."""
    decoded = decode_bundle(bundle)
    checked = check_bundle(
        decoded, trusted_vkeys=log_keys, taskforce=roster.taskforce, envelope=envelope
    )
    witnesses = require_witnesses(decoded.checkpoint, roster)
    verified = None
    if envelope is not None:
        verified = check_logged_envelope(
            checked.entry,
            envelope,
            roster=roster,
            witnesses=witnesses,
            threshold=roster.roster.witness_threshold,
        )
    return Evidence(checked, witnesses, roster.roster.witness_threshold, verified)


def check_logged_envelope(
    entry: LogEntry,
    envelope: bytes,
    *,
    roster: TrustedRoster,
    witnesses: Sequence[Cosignature] = (),
    threshold: int = 0,
) -> Verified:
    """The envelope is the logged message, validly signed by its sender as of its time.

    A key the roster revoked as compromised is refused, unless ``threshold`` (>= 1)
    witnesses co-signed the tree holding the entry before the revocation: the message was
    then logged while the key was still trusted (a thief cannot predate a witnessed log)."""
    if entry.entry_type not in ENVELOPE_ENTRIES:
        raise BundleError(
            BundleCode.E_BUNDLE_ENVELOPE,
            f"entry is a {entry.entry_type!r} record, not an envelope",
        )
    if hashlib.sha256(envelope).digest() != entry.env_sha256:
        raise BundleError(
            BundleCode.E_BUNDLE_ENVELOPE,
            "SHA-256 of the envelope given is not the env_sha256 logged in the entry",
        )
    try:
        then = claimed_header(envelope).ts_ms
        verified = _verify_then(envelope, roster, then, witnesses, threshold)
    except Rejected as exc:
        raise BundleError(
            BundleCode.E_BUNDLE_SENDER,
            f"the envelope does not verify against the roster ({exc.code}: {exc.message})",
        ) from None
    header = verified.header
    logged = (entry.msg_id, entry.sender, entry.sender_kid, entry.taskforce, entry.ts_ms)
    if (header.msg_id, header.sender, header.sender_kid, header.taskforce, header.ts_ms) != logged:
        raise BundleError(
            BundleCode.E_BUNDLE_SENDER,
            "the envelope's signed header does not name the message the entry logged",
        )
    return verified


def _verify_then(
    envelope: bytes,
    roster: TrustedRoster,
    then: int,
    witnesses: Sequence[Cosignature],
    threshold: int,
) -> Verified:
    try:
        return verify_envelope(
            envelope, roster=roster, now_ms=then, subject=None, policy=_AS_OF_THEN
        )
    except Rejected as exc:
        if exc.reject_code is not RejectCode.E_REVOKED:
            raise
        kid = claimed_header(envelope).sender_kid
        revocation = roster.revoked.get(kid)
        if (
            revocation is None
            or revocation.reason != "compromised"
            or not witnessed_before(witnesses, threshold=threshold, at_ms=revocation.at_ms)
        ):
            raise
        # Logged, and witnessed, before the key was revoked: judge it as that roster did.
        return verify_envelope(
            envelope,
            roster=without_revocation(roster, kid),
            now_ms=then,
            subject=None,
            policy=_AS_OF_THEN,
        )


def without_revocation(roster: TrustedRoster, kid: bytes) -> TrustedRoster:
    """The roster as it stood before ``kid`` was revoked (for a message proven older): the
    revocation gone, and its agency active again if revoking it removed it."""
    owner = roster.sign_keys.get(kid)
    members = [
        msgspec.structs.replace(m, status="active")
        if owner is not None and m.agency_id == owner.member.agency_id and m.status == "removed"
        else m
        for m in roster.roster.members
    ]
    content = msgspec.structs.replace(
        roster.roster,
        members=members,
        revoked=[r for r in roster.roster.revoked if r.kid != kid],
    )
    view = TrustedRoster(content, b"")
    view.hash = roster.hash
    return view
