"""Witnesses of the audit log: members that co-sign each checkpoint they found consistent.

Owns: the cosignature format (c2sp.org/tlog-cosignature, Ed25519 ``cosignature/v1``, under
the key name ``tfshare/<taskforce>/witness/<agency>``), which roster keys may witness, how
many distinct witnesses a checkpoint carries (and whether that meets the roster's
``witness_threshold``), merging published cosignatures into a checkpoint note (each
agency's own line, verified on its own: a bad line is dropped, not fatal), and the
verdict of one checkpoint against the one a witness holds (same, newer, older, or a fork).

Why: one coordinator or auditor key signs the log. Whoever steals it can sign a made-up
log, or show two members two different logs (a split view). A checkpoint that k other
members co-signed, each after checking it only extends what it saw before, cannot be faked
with one key, and a split view needs every witness fooled. The log's own signer never
counts as its witness.

Never: read the disk, the network or the clock (times are arguments).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from tfshare.audit.note import (
    MAX_SIGNATURES,
    Checkpoint,
    NoteError,
    NoteLine,
    NoteVerifier,
    checkpoint_origin,
    format_note_line,
    split_note,
)
from tfshare.errors import TrustError
from tfshare.keys import Identity, kid_sig, verify_signature
from tfshare.roster import TrustedRoster

COSIGNATURE_HEADER: Final = b"cosignature/v1\n"
SIG_TYPE_COSIGNATURE_V1: Final = 0x04
KEY_ID_SIZE: Final = 4
TIMESTAMP_SIZE: Final = 8
SIGNATURE_SIZE: Final = 64
COSIGNATURE_SIZE: Final = KEY_ID_SIZE + TIMESTAMP_SIZE + SIGNATURE_SIZE  # 76 bytes
MAX_TIMESTAMP: Final = 2**63 - 1


class WitnessCode(StrEnum):
    """Why a witnessed checkpoint was refused. Stable: callers and tests match on them."""

    E_WITNESS_MALFORMED = "E_WITNESS_MALFORMED"  # a witness line or note that does not parse
    E_WITNESS_BAD_SIG = "E_WITNESS_BAD_SIG"  # a known witness's cosignature fails
    E_WITNESS_THRESHOLD = "E_WITNESS_THRESHOLD"  # fewer witnesses than the roster requires
    E_LOG_FORK = "E_LOG_FORK"  # two signed checkpoints that cannot both be the same log
    E_WITNESS_UNPROVEN = "E_WITNESS_UNPROVEN"  # no consistency proof to the new checkpoint


_HINTS: Final = {
    WitnessCode.E_WITNESS_MALFORMED: (
        "a cosignature is damaged: ask for the evidence again ('audit prove --from-broker')"
    ),
    WitnessCode.E_WITNESS_BAD_SIG: (
        "a witness cosignature does not verify: the checkpoint or cosignature was altered; "
        "it is not evidence"
    ),
    WitnessCode.E_WITNESS_THRESHOLD: (
        "the roster requires more member agencies to have witnessed this checkpoint: wait "
        "until the agents have co-signed it ('tfshare audit witness') and export the proof "
        "again; a log signed by one key alone is not trusted"
    ),
    WitnessCode.E_WITNESS_UNPROVEN: (
        "the audit service could not prove the new checkpoint extends the one held, so it "
        "was not co-signed: try again later; if it persists, tell the coordinators"
    ),
    WitnessCode.E_LOG_FORK: (
        "the audit log was shown in two versions that cannot both be true (a split view, or "
        "a forged log): keep both checkpoints as evidence and tell the coordinators at once; "
        "do not co-sign until it is explained"
    ),
}


class WitnessError(TrustError):
    """A witnessed checkpoint was refused; ``code`` is a ``WitnessCode``."""

    def __init__(self, code: WitnessCode, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or _HINTS[code], code=code.value)
        self.witness_code = code


# --- keys ------------------------------------------------------------------------------------


def witness_name(taskforce: str, agency: str) -> str:
    """The key name of an agency's cosignatures: ``tfshare/<taskforce>/witness/<agency>``."""
    return f"{checkpoint_origin(taskforce).removesuffix('/audit')}/witness/{agency}"


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x04 || public_key)[:4] (tlog-cosignature, Ed25519)."""
    return hashlib.sha256(
        name.encode() + b"\n" + bytes([SIG_TYPE_COSIGNATURE_V1]) + public_key
    ).digest()[:KEY_ID_SIZE]


def cosigned_message(text: bytes, timestamp: int) -> bytes:
    """What a witness signs: ``cosignature/v1\\ntime <timestamp>\\n`` then the checkpoint
    text (the note body, up to and including its last newline, no signature lines)."""
    return COSIGNATURE_HEADER + b"time %d\n" % timestamp + text


@dataclass(frozen=True, slots=True)
class WitnessKey:
    """A member's signing key as a witness key, and when its cosignatures count."""

    agency: str
    name: str
    key_id: bytes
    public_key: bytes
    not_before_ms: int
    not_after_ms: int  # the key's window end, or its retirement time if earlier


def witness_keys(roster: TrustedRoster) -> list[WitnessKey]:
    """Every signing key of every active member, except keys revoked as compromised (a thief
    could sign "from before"); a retired key counts for cosignatures dated up to its
    retirement."""
    keys: list[WitnessKey] = []
    for member in roster.roster.members:
        if member.status != "active":
            continue
        name = witness_name(roster.taskforce, member.agency_id)
        for key in member.sign_keys:
            revocation = roster.revoked.get(kid_sig(key.pk))
            if revocation is not None and revocation.reason == "compromised":
                continue
            end = (
                key.not_after_ms if revocation is None else min(key.not_after_ms, revocation.at_ms)
            )
            keys.append(
                WitnessKey(
                    member.agency_id,
                    name,
                    cosigner_key_id(name, key.pk),
                    key.pk,
                    key.not_before_ms,
                    end,
                )
            )
    return keys


# --- making and reading cosignatures ---------------------------------------------------------


def cosign(text: bytes, identity: Identity, *, taskforce: str, timestamp: int) -> bytes:
    """The cosignature line of ``identity`` on the checkpoint ``text`` at ``timestamp``
    (POSIX seconds): ``— <name> base64(key id || u64be(timestamp) || Ed25519 signature)``."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise WitnessError(WitnessCode.E_WITNESS_MALFORMED, "cosignature time out of range")
    name = witness_name(taskforce, identity.agency_id)
    signature = identity.sign(cosigned_message(text, timestamp))
    raw = cosigner_key_id(name, identity.sign_pk) + struct.pack(">Q", timestamp) + signature
    return format_note_line(name, raw)


def witness_note(text: bytes, line: bytes) -> bytes:
    """What a witness publishes: the checkpoint text, a blank line and its cosignature."""
    return text + b"\n" + line


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A cosignature that verified: which agency witnessed the checkpoint, and when (POSIX s)."""

    agency: str
    name: str
    timestamp: int


def _split(note: bytes) -> tuple[bytes, list[NoteLine]]:
    try:
        return split_note(note)
    except NoteError as exc:
        raise WitnessError(
            WitnessCode.E_WITNESS_MALFORMED, f"note refused: {exc.message}"
        ) from None


def log_signers(note: bytes, roster: TrustedRoster) -> set[str]:
    """The agencies whose log key (under the checkpoint's origin) signed ``note``: they are
    the log, and a log does not witness itself."""
    text, lines = _split(note)
    origin = checkpoint_origin(roster.taskforce)
    present = {line.raw[:KEY_ID_SIZE]: line for line in lines if line.name == origin}
    agencies: set[str] = set()
    for member in roster.roster.members:
        for key in member.sign_keys:
            verifier = NoteVerifier.from_public_key(origin, key.pk)
            line = present.get(verifier.key_id)
            if line is not None and verifier.verify(text, line.signature):
                agencies.add(member.agency_id)
    return agencies


def _verify_line(
    text: bytes, line: NoteLine, candidates: Sequence[WitnessKey]
) -> tuple[WitnessKey, int]:
    """One cosignature line of a known witness key on checkpoint ``text``: the key that
    signed it and its time, or a ``WitnessError`` (E_WITNESS_MALFORMED, E_WITNESS_BAD_SIG).
    The key's window is judged by the caller (``_counts``)."""
    if len(line.raw) != COSIGNATURE_SIZE:
        raise WitnessError(
            WitnessCode.E_WITNESS_MALFORMED,
            f"cosignature by {line.name!r} is {len(line.raw)} bytes, not {COSIGNATURE_SIZE}",
        )
    (timestamp,) = struct.unpack(">Q", line.raw[KEY_ID_SIZE : KEY_ID_SIZE + TIMESTAMP_SIZE])
    if timestamp > MAX_TIMESTAMP:
        raise WitnessError(
            WitnessCode.E_WITNESS_MALFORMED, f"cosignature by {line.name!r}: time too large"
        )
    message = cosigned_message(text, timestamp)
    signature = line.raw[KEY_ID_SIZE + TIMESTAMP_SIZE :]
    signer = next(
        (k for k in candidates if verify_signature(k.public_key, message, signature)), None
    )
    if signer is None:
        raise WitnessError(
            WitnessCode.E_WITNESS_BAD_SIG, f"cosignature by {line.name!r} does not verify"
        )
    return signer, timestamp


def _counts(signer: WitnessKey, timestamp: int) -> bool:
    """A cosignature counts only if dated inside its key's window."""
    return signer.not_before_ms <= timestamp * 1000 <= signer.not_after_ms


def _index(keys: Sequence[WitnessKey]) -> dict[tuple[str, bytes], list[WitnessKey]]:
    index: dict[tuple[str, bytes], list[WitnessKey]] = {}
    for key in keys:
        index.setdefault((key.name, key.key_id), []).append(key)
    return index


def verify_cosignatures(
    note: bytes, keys: Sequence[WitnessKey], *, exclude: Iterable[str] = ()
) -> tuple[Cosignature, ...]:
    """The distinct witnesses (one per agency, ``exclude``d agencies never) whose cosignature
    on ``note`` verifies and is dated inside its key's window. Lines of unknown keys are
    ignored (signed-note); a line of a known key that is malformed or does not verify refuses
    the note (E_WITNESS_MALFORMED, E_WITNESS_BAD_SIG)."""
    text, lines = _split(note)
    index = _index(keys)
    excluded = set(exclude)
    found: dict[str, Cosignature] = {}
    for line in lines:
        candidates = index.get((line.name, line.key_id))
        if not candidates:
            continue
        signer, timestamp = _verify_line(text, line, candidates)
        if signer.agency in excluded or signer.agency in found:
            continue
        if _counts(signer, timestamp):
            found[signer.agency] = Cosignature(signer.agency, signer.name, timestamp)
    return tuple(found.values())


def witnesses_of(note: bytes, roster: TrustedRoster) -> tuple[Cosignature, ...]:
    """The roster's witnesses of checkpoint ``note``, the log's own signers excluded."""
    return verify_cosignatures(note, witness_keys(roster), exclude=log_signers(note, roster))


def require_witnesses(note: bytes, roster: TrustedRoster) -> tuple[Cosignature, ...]:
    """``witnesses_of``, refused (E_WITNESS_THRESHOLD) below the roster's witness_threshold."""
    found = witnesses_of(note, roster)
    needed = roster.roster.witness_threshold
    if len(found) < needed:
        raise WitnessError(
            WitnessCode.E_WITNESS_THRESHOLD,
            f"the checkpoint carries {len(found)} valid witness cosignature(s) of other member "
            f"agencies; the roster requires {needed}",
        )
    return found


def witnessed_before(cosignatures: Iterable[Cosignature], *, threshold: int, at_ms: int) -> bool:
    """True if at least ``threshold`` (>= 1) distinct witnesses co-signed before ``at_ms``:
    the tree, and every entry in it, existed then."""
    if threshold < 1:
        return False
    before = {c.agency for c in cosignatures if c.timestamp * 1000 < at_ms}
    return len(before) >= threshold


@dataclass(frozen=True, slots=True)
class Merged:
    """A checkpoint note with the published cosignatures that verified merged in, and the
    agencies whose published note on that checkpoint carried anything else (dropped)."""

    note: bytes
    dropped: tuple[str, ...]


def merge_witnessed(
    note: bytes, published: Iterable[tuple[str, bytes]], roster: TrustedRoster
) -> Merged:
    """``note`` with, from each ``(agency, witness note)`` published (the witness bucket's
    key is the agency: each member writes only its own), that agency's own cosignature line
    on the same checkpoint text, verified on its own: named ``witness_name(tf, agency)``, of
    one of that agency's witness keys, valid, dated inside the key's window. Anything else
    in a note on this checkpoint (a line of another name, a bad or stale line, a note that
    does not parse) is dropped and the agency reported in ``dropped``: one hostile member
    must not make every bundle fail to verify. Log signature lines (the checkpoint's origin)
    are the note's own and expected. Notes on another checkpoint are skipped silently."""
    text, lines = _split(note)
    origin = checkpoint_origin(roster.taskforce)
    index = _index(witness_keys(roster))
    have = {(line.name, line.raw) for line in lines}
    cosigned = {
        line.name for line in lines if (line.name, line.key_id) in index
    }  # agencies whose line the note already carries
    extra: list[bytes] = []
    dropped: list[str] = []
    for agency, witness in published:
        try:
            other_text, other_lines = split_note(witness)
        except NoteError:
            dropped.append(agency)
            continue
        if other_text != text:
            continue
        name = witness_name(roster.taskforce, agency)
        accepted: NoteLine | None = None
        rejected = False
        for line in other_lines:
            if line.name == origin:
                continue
            if accepted is None and line.name == name and _valid(text, line, index):
                accepted = line
            elif line != accepted:
                rejected = True
        if rejected:
            dropped.append(agency)
        if accepted is None or name in cosigned or (accepted.name, accepted.raw) in have:
            continue
        if len(lines) + len(extra) >= MAX_SIGNATURES:
            continue
        cosigned.add(name)
        have.add((accepted.name, accepted.raw))
        extra.append(format_note_line(accepted.name, accepted.raw))
    return Merged(note + b"".join(extra), tuple(dropped))


def _valid(text: bytes, line: NoteLine, index: dict[tuple[str, bytes], list[WitnessKey]]) -> bool:
    """The line is a witness key's, verifies and is dated inside that key's window."""
    candidates = index.get((line.name, line.key_id))
    if not candidates:
        return False
    try:
        signer, timestamp = _verify_line(text, line, candidates)
    except WitnessError:
        return False
    return _counts(signer, timestamp)


def log_signed_only(note: bytes, taskforce: str) -> bytes:
    """``note`` keeping only its log signature lines (the checkpoint's origin): the bare
    checkpoint a published witness note carries, to merge verified cosignatures into."""
    text, lines = _split(note)
    origin = checkpoint_origin(taskforce)
    return (
        text
        + b"\n"
        + b"".join(format_note_line(line.name, line.raw) for line in lines if line.name == origin)
    )


# --- a witness's verdict ---------------------------------------------------------------------

Verdict = Literal["first", "same", "newer", "older"]


def judge(held: Checkpoint | None, new: Checkpoint) -> Verdict:
    """How ``new`` stands to the checkpoint a witness holds, before any proof: ``first``
    (nothing held), ``same``, ``newer`` or ``older`` (a consistency proof must then link
    them). The same size with another root is a fork at once (E_LOG_FORK)."""
    if held is None:
        return "first"
    if held.origin != new.origin:
        raise WitnessError(
            WitnessCode.E_LOG_FORK,
            f"the checkpoint is of log {new.origin!r}, the one held of {held.origin!r}",
        )
    if new.size == held.size:
        if new.root_hash != held.root_hash:
            raise WitnessError(
                WitnessCode.E_LOG_FORK,
                f"two signed checkpoints of size {new.size} with different roots "
                f"({held.root_hash.hex()[:16]}... held, {new.root_hash.hex()[:16]}... now)",
            )
        return "same"
    return "newer" if new.size > held.size else "older"
