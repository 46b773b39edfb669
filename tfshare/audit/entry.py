"""Audit log entries: what one leaf of the provenance log says, and its one byte encoding.

Owns: ``LogEntry`` (the ten fields of design/audit.md), ``encode_entry``/``decode_entry`` (a
canonical msgpack array, checked by the same rules in both directions), the vocabularies
``ENTRY_TYPES`` and ``RELATIONS`` (plus ``RECEIPT_OF``), and ``entry_leaf_hash``.

An entry records identifiers and hashes, never payloads, so the log can be shared with every
member and outlives the deletion of the messages it describes. The entry bytes are what the
Merkle tree hashes (leaf = SHA-256(0x00 || entry bytes)); two implementations must therefore
agree on them byte for byte, which is why decoding accepts only the canonical encoding.

Field rules (refused with ``EntryError``, code ``E_ENTRY_MALFORMED``, on encode and decode):

- ``entry_type``: one of ``ENTRY_TYPES``. "message", "receipt" and "retraction" describe an
  envelope (one sender, one key, one channel); "roster", "schema" and "key_event" describe a
  signed record (no channel; the key id may be empty).
- ``msg_id``: 16 bytes (for records, an id the caller derives from the record, e.g. the first
  16 bytes of its SHA-256).
- ``sender``: an agency name; for records, one or more names joined by "," (the signers).
- ``sender_kid``: 8 bytes; records may leave it empty.
- ``taskforce``: a task-force name; ``channel``: a channel name, "" only for records.
- ``ts_ms`` (the sender's time) and ``observed_ms`` (when the auditor saw it): 0..2^53-1.
- ``env_sha256``: 32 bytes, SHA-256 of the exact envelope (or record) bytes.
- ``refs``: at most 16 tuples ``(relation, parent msg_id 16 bytes, parent env_hash 32 bytes)``.
  Relations are the envelope's (``RELATIONS``, 1..5). A "receipt" carries exactly one ref,
  ``(RECEIPT_OF, msg_id, env_hash)`` of the message it acknowledges (0 is never a relation an
  envelope can carry, so a receipt-of ref cannot be confused with lineage). A "retraction"
  carries at least one RETRACT (5) ref: a retraction that retracts nothing says nothing.
  The receipt's outcome (accepted, or the reject code) stays inside the encrypted receipt;
  the entry proves that the receipt exists and who sent it when.

Never: read the clock, touch the disk, or put a payload in an entry.
"""

from __future__ import annotations

from typing import Final

import msgspec

from tfshare.audit import merkle
from tfshare.encoding import (
    DECODE_ERRORS,
    MAX_UINT,
    NonCanonical,
    decode_canonical,
    encode,
    is_name,
    safe_reason,
)
from tfshare.errors import TrustError

ENTRY_TYPES: Final = ("message", "receipt", "roster", "schema", "key_event", "retraction")
# Entry types that describe a signed envelope (sender, key and channel always present).
ENVELOPE_TYPES: Final = frozenset({"message", "receipt", "retraction"})
# Entry types that describe a signed record: no channel, the key id may be empty, and the
# sender may name several signers (e.g. every coordinator that signed a roster).
RECORD_TYPES: Final = frozenset({"roster", "schema", "key_event"})

# The envelope's Ref.relation numbers (tfshare.envelope.Relation).
RELATIONS: Final = {1: "reshare", 2: "escalate", 3: "amend", 4: "merge", 5: "retract", 6: "reply"}
RETRACT: Final = 5
# The relation of a receipt's single ref to the message it acknowledges. Only log entries use
# it: envelopes carry relations 1..6.
RECEIPT_OF: Final = 0

MSG_ID_SIZE: Final = 16
KID_SIZE: Final = 8
SHA256_SIZE: Final = 32
MAX_REFS: Final = 16  # the envelope's limit (tfshare.envelope.MAX_REFS)
# Ten short fields and at most 16 refs of ~52 bytes: far below this. The bound stops hostile
# input before any decoding work.
MAX_ENTRY_SIZE: Final = 8192

ENTRY_MALFORMED: Final = "E_ENTRY_MALFORMED"
_HINT: Final = (
    "a log entry is a canonical msgpack array of ten fields (design/audit.md, LogEntry); "
    "this one was damaged or written by something else: keep the log and run 'audit verify'"
)


class EntryError(TrustError):
    """An entry is not a valid, canonically encoded ``LogEntry``; code E_ENTRY_MALFORMED."""

    def __init__(self, message: str, *, hint: str = _HINT) -> None:
        super().__init__(message, hint=hint, code=ENTRY_MALFORMED)


class LogEntry(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    """One leaf of the audit log (see the module docstring for the rules of each field)."""

    entry_type: str
    msg_id: bytes
    sender: str
    sender_kid: bytes
    taskforce: str
    channel: str
    ts_ms: int
    env_sha256: bytes
    refs: list[tuple[int, bytes, bytes]]
    observed_ms: int


_decoder: Final = msgspec.msgpack.Decoder(LogEntry)


def encode_entry(entry: LogEntry) -> bytes:
    """The canonical msgpack array of ``entry``; raises ``EntryError`` if a field breaks a rule."""
    if not isinstance(entry, LogEntry):
        raise EntryError(f"expected a LogEntry, got {type(entry).__name__}")
    check_entry(entry)
    data = encode(entry)
    if len(data) > MAX_ENTRY_SIZE:
        raise EntryError(f"entry encodes to {len(data)} bytes, more than {MAX_ENTRY_SIZE}")
    return data


def decode_entry(data: bytes) -> LogEntry:
    """Strictly decode entry bytes: canonical msgpack, ten fields, every rule, else EntryError."""
    if not isinstance(data, bytes):
        raise EntryError(f"entry bytes expected, got {type(data).__name__}")
    if len(data) > MAX_ENTRY_SIZE:
        raise EntryError(f"entry is {len(data)} bytes, more than {MAX_ENTRY_SIZE}")
    try:
        entry = decode_canonical(data, _decoder)
    except DECODE_ERRORS as exc:
        # safe_reason keeps the field path and drops any value from the input.
        reason = "not the canonical encoding" if isinstance(exc, NonCanonical) else safe_reason(exc)
        raise EntryError(f"entry does not decode: {reason}") from None
    check_entry(entry)
    return entry


def entry_leaf_hash(entry_bytes: bytes) -> bytes:
    """The Merkle leaf hash of an entry's bytes: SHA-256(0x00 || entry bytes)."""
    return merkle.leaf_hash(entry_bytes)


def check_entry(entry: LogEntry) -> None:
    """Raise ``EntryError`` naming the first field of ``entry`` that breaks a rule."""
    entry_type = entry.entry_type
    if type(entry_type) is not str or entry_type not in ENTRY_TYPES:
        raise EntryError("entry_type is not one of " + ", ".join(ENTRY_TYPES))
    record = entry_type in RECORD_TYPES
    _check_bytes(entry.msg_id, "msg_id", (MSG_ID_SIZE,))
    _check_sender(entry.sender, record=record)
    _check_bytes(entry.sender_kid, "sender_kid", (0, KID_SIZE) if record else (KID_SIZE,))
    if type(entry.taskforce) is not str or not is_name(entry.taskforce):
        raise EntryError("taskforce is not a task-force name")
    channel = entry.channel
    if type(channel) is not str or not (is_name(channel) or (record and channel == "")):
        raise EntryError(
            "channel is not a channel name" + (" or empty" if record else " (required here)")
        )
    _check_uint(entry.ts_ms, "ts_ms")
    _check_bytes(entry.env_sha256, "env_sha256", (SHA256_SIZE,))
    _check_refs(entry.refs, entry_type)
    _check_uint(entry.observed_ms, "observed_ms")


def _check_bytes(value: object, field: str, sizes: tuple[int, ...]) -> None:
    if type(value) is not bytes:
        raise EntryError(f"{field} is not bytes")
    if len(value) not in sizes:
        want = " or ".join(str(size) for size in sizes)
        raise EntryError(f"{field} is {len(value)} bytes, not {want}")


def _check_uint(value: object, field: str) -> None:
    # type() and not isinstance(): a bool is an int to Python but not to msgpack.
    if type(value) is not int or not 0 <= value <= MAX_UINT:
        raise EntryError(f"{field} is not an integer in 0..2^53-1")


def _check_sender(sender: object, *, record: bool) -> None:
    if type(sender) is not str:
        raise EntryError("sender is not a string")
    names = sender.split(",") if record else [sender]
    if not all(is_name(name) for name in names):
        raise EntryError(
            "sender is not an agency name" + (" or names joined by ','" if record else "")
        )


def _check_refs(refs: object, entry_type: str) -> None:
    if type(refs) is not list:
        raise EntryError("refs is not a list")
    if len(refs) > MAX_REFS:
        raise EntryError(f"entry has {len(refs)} refs, at most {MAX_REFS}")
    relations: list[int] = []
    for position, ref in enumerate(refs):
        if type(ref) is not tuple or len(ref) != 3:
            raise EntryError(f"refs[{position}] is not a (relation, msg_id, env_hash) tuple")
        relation, parent, parent_hash = ref
        if type(relation) is not int or not (relation in RELATIONS or relation == RECEIPT_OF):
            raise EntryError(f"refs[{position}] relation is not one of 0..6")
        _check_bytes(parent, f"refs[{position}] msg_id", (MSG_ID_SIZE,))
        _check_bytes(parent_hash, f"refs[{position}] env_hash", (SHA256_SIZE,))
        relations.append(relation)
    if entry_type == "receipt":
        if relations != [RECEIPT_OF]:
            raise EntryError("a receipt has exactly one ref, of relation 0 (receipt-of)")
    elif RECEIPT_OF in relations:
        raise EntryError("relation 0 (receipt-of) is only allowed in a receipt")
    if entry_type == "retraction" and RETRACT not in relations:
        raise EntryError("a retraction has at least one ref of relation 5 (retract)")
