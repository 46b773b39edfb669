"""Distributing the signed roster through JetStream: the roster KV key and the object store.

Owns: ``publish_roster`` and ``fetch_roster`` (what ``transport.put_roster``/``get_roster``
do on the wire), the pointer ``RosterRef`` (``tfshare-roster-ref/1``) and the roster object
store bucket (``ensure_roster_objects``, for provisioning).

A roster of 20,000 members is about 6 MB, more than one NATS message (max_payload, 1 MiB in
the configurations tfshare writes). Every published roster goes to the task force's object
store bucket (``names.roster_objects_bucket``), under a name that says its seq and SHA-256
(``names.roster_object_name``, never reused for other bytes). The roster KV key, which
agents poll, holds the roster itself when it fits in one message (max_payload less
``KV_HEADROOM``), else ``RosterRef`` = [seq, sha256, size]. A reader follows the pointer,
reads the object's chunks by direct gets (no consumer: 20,000 agents following a new roster
leave nothing on the server), and returns the bytes only if their SHA-256 and size are the
pointer's; the roster is then verified as any roster (signatures, rollback): the object
store is a carrier, never a source of trust. docs/PROTOCOL.md, "Roster distribution".

Errors: NATS errors pass through (the caller, ``transport``, names them); a pointer that is
malformed, or names an object that is missing or does not hold what it says, is
``RosterRejected`` E_ROSTER_MALFORMED (a verdict on what the broker holds now: the roster in
use stays in force).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Annotated, Any, Final

import msgspec
import nats.js.errors
import structlog
from nats.js.api import ObjectMeta, ObjectMetaOptions, ObjectStoreConfig, StorageType

from tfshare.broker import MAX_PAYLOAD
from tfshare.encoding import DECODE_ERRORS, Bytes32, Uint, decode_canonical, encode
from tfshare.errors import BrokerError, InputError, RejectCode, RosterRejected
from tfshare.names import (
    ROSTER_KEY,
    object_stream,
    roster_bucket,
    roster_object_name,
    roster_objects_bucket,
)
from tfshare.roster import MAX_ROSTER_FILE, decode_signed_roster

log = structlog.get_logger("tfshare.rosterdist")

REF_TAG: Final = "tfshare-roster-ref/1"
# Room for a KV put's subject and headers within max_payload.
KV_HEADROOM: Final = 4096
# nats-py's default chunk, kept below half of a small server's max_payload.
MAX_CHUNK: Final = 128 * 1024
# Versions kept in the object store: the newest and a few before it, so a reader that read
# the previous pointer just before a publish still finds its object.
OBJECTS_KEPT: Final = 4
# The bucket's bound: OBJECTS_KEPT of the largest roster file and room for one more.
OBJECTS_MAX_BYTES: Final = (OBJECTS_KEPT + 1) * MAX_ROSTER_FILE


class RosterRef(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True, tag=REF_TAG
):
    """The roster KV value of a roster too large for one message: which object holds it."""

    seq: Uint
    sha256: Bytes32
    size: Annotated[int, msgspec.Meta(ge=1, le=MAX_ROSTER_FILE)]


_ref_decoder: Final = msgspec.msgpack.Decoder(RosterRef)
# A KV value that starts as a RosterRef's encoding claims to be one (a fixarray of 4, then
# the tag as a fixstr); anything else is a roster, checked by the caller's verification.
_REF_PREFIX: Final = encode(RosterRef(0, bytes(32), 1))[: 2 + len(REF_TAG)]


def _malformed(message: str, hint: str) -> RosterRejected:
    return RosterRejected(RejectCode.E_ROSTER_MALFORMED, message, hint=hint)


_REPUBLISH: Final = "ask a coordinator to publish the roster again (tfshare roster publish)"


def parse_ref(value: bytes) -> RosterRef | None:
    """The pointer a roster KV value holds, or None for a value that is not one (a roster
    itself, or anything the roster's verification refuses). A value that claims to be a
    pointer and is malformed is refused here."""
    if not value.startswith(_REF_PREFIX):
        return None
    try:
        return decode_canonical(value, _ref_decoder)
    except DECODE_ERRORS:
        raise _malformed(
            "the roster bucket holds a malformed roster pointer", hint=_REPUBLISH
        ) from None


def kv_limit(max_payload: int) -> int:
    """The largest roster the KV key holds itself: one message of the server, and of the
    roster bucket's max_value_size (MAX_PAYLOAD), less ``KV_HEADROOM``."""
    return min(max_payload, MAX_PAYLOAD) - KV_HEADROOM


def chunk_size(max_payload: int) -> int:
    return max(1024, min(MAX_CHUNK, max_payload // 2))


def roster_objects_config(taskforce: str, *, replicas: int = 1) -> ObjectStoreConfig:
    return ObjectStoreConfig(
        bucket=roster_objects_bucket(taskforce),
        description=f"tfshare: the signed rosters of task force {taskforce}",
        max_bytes=OBJECTS_MAX_BYTES,
        storage=StorageType.FILE,
        replicas=replicas,
    )


async def ensure_roster_objects(js: Any, taskforce: str, *, replicas: int = 1) -> None:
    """Create the roster object store bucket (administrator, at provisioning), or give an
    existing one its bound and at least ``replicas`` copies; its objects are kept."""
    config = roster_objects_config(taskforce, replicas=replicas)
    assert config.bucket is not None
    try:
        info = await js.stream_info(object_stream(config.bucket))
    except nats.js.errors.NotFoundError:
        await js.create_object_store(config.bucket, config)
        return
    current = info.config
    wanted_replicas = max(int(current.num_replicas or 1), replicas)
    if (current.max_bytes, current.num_replicas) != (OBJECTS_MAX_BYTES, wanted_replicas):
        current.max_bytes = OBJECTS_MAX_BYTES
        current.num_replicas = wanted_replicas
        await js.update_stream(current)


async def publish_roster(
    js: Any, taskforce: str, data: bytes, *, max_payload: int | None = None
) -> int:
    """Put a signed roster (checked by the caller: any bytes are carried, and verified by
    their readers) into the object store, then its KV key:
    the roster itself when it fits in one message, else a ``RosterRef`` to its object.
    Returns the KV revision. ``max_payload``: the server's (default: this connection's)."""
    if len(data) > MAX_ROSTER_FILE:
        raise InputError(
            f"the roster is {len(data)} bytes, more than the {MAX_ROSTER_FILE} a member loads",
            hint="split the task force, or remove members and channels it no longer needs",
        )
    if max_payload is None:
        max_payload = int(js._nc.max_payload)
    seq = _seq_of(data)
    digest = hashlib.sha256(data).digest()
    fits = len(data) <= kv_limit(max_payload)
    bucket = roster_objects_bucket(taskforce)
    try:
        objects = await js.object_store(bucket)
    except nats.js.errors.BucketNotFoundError:
        if not fits:
            raise BrokerError(
                f"the broker has no roster object store ({bucket}), and this roster "
                f"({len(data)} bytes) is larger than one message",
                hint="provision the broker again with this version of tfshare (tfshare broker "
                "provision, or restart tfshare broker up), then publish again",
            ) from None
        # A broker provisioned before the object store: the KV key alone, as before.
        log.warning("roster_objects_missing", bucket=bucket)
        objects = None
    ref = RosterRef(seq, digest, len(data))
    name = roster_object_name(seq, digest)
    if objects is not None and not await _holds(js, bucket, ref):
        meta = ObjectMeta(
            name=name, options=ObjectMetaOptions(max_chunk_size=chunk_size(max_payload))
        )
        await objects.put(name, data, meta=meta)
    value = data if fits else encode(ref)
    kv = await js.key_value(roster_bucket(taskforce))
    revision: int = await kv.put(ROSTER_KEY, value)
    if objects is not None:
        await _prune(js, objects, bucket, keep=name)
    return revision


def _seq_of(data: bytes) -> int:
    """The roster's seq, which names its object; 0 for bytes that are no roster (checking
    what is published is the caller's part: here it is carried, and its readers refuse it)."""
    try:
        _, roster = decode_signed_roster(data)
    except RosterRejected:
        return 0
    return roster.seq


async def _holds(js: Any, bucket: str, ref: RosterRef) -> bool:
    """The object ``ref`` names is there and holds exactly these bytes: putting it again
    would replace its chunks under a reader's feet. Read back rather than trusted from its
    metadata: a damaged or altered object (with metadata to match) is put again."""
    try:
        return _is(await read_object(js, bucket, ref), ref)
    except RosterRejected:
        return False


_OBJECT_NAME: Final = re.compile(r"roster\.([0-9]{1,20})\.[0-9a-f]{64}")


async def _prune(js: Any, objects: Any, bucket: str, *, keep: str) -> None:
    """Delete the roster objects beyond the ``OBJECTS_KEPT`` of highest seq (``keep``, the
    one just published, always stays)."""
    prefix = f"$O.{bucket}.M."
    info = await js.stream_info(object_stream(bucket), subjects_filter=f"{prefix}>")
    found: list[tuple[int, str]] = []
    for subject in info.state.subjects or {}:
        try:
            name = base64.urlsafe_b64decode(subject[len(prefix) :]).decode()
        except (ValueError, UnicodeDecodeError):
            continue
        match = _OBJECT_NAME.fullmatch(name)
        if match is not None and name != keep:
            found.append((int(match[1]), name))
    found.sort(reverse=True)
    for _, name in found[OBJECTS_KEPT - 1 :]:
        try:
            await objects.delete(name)
        except (nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError):
            continue  # deleted already (its metadata stays, marked deleted)


async def fetch_roster(js: Any, taskforce: str, *, known: bytes | None = None) -> bytes | None:
    """The signed roster the KV key holds or points to, or None if none was published. A
    pointer is followed and the object's bytes returned only if their SHA-256 and size are
    the pointer's (else ``RosterRejected`` E_ROSTER_MALFORMED). ``known``: a roster the
    caller already holds, returned as it is when the pointer names its digest (an agent
    that looks every few seconds does not fetch 6 MB each time)."""
    try:
        kv = await js.key_value(roster_bucket(taskforce))
        entry = await kv.get(ROSTER_KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    if entry.value is None:
        return None
    value = bytes(entry.value)
    ref = parse_ref(value)
    if ref is None:
        return value
    if (
        known is not None
        and len(known) == ref.size
        and hashlib.sha256(known).digest() == ref.sha256
    ):
        return known
    data = await read_object(js, roster_objects_bucket(taskforce), ref)
    if not _is(data, ref):
        raise _malformed(
            f"the roster object of seq {ref.seq} is not the roster the roster bucket names "
            "(its SHA-256 or size differs): it was altered or damaged on the broker",
            hint=f"{_REPUBLISH}; the roster in use stays in force",
        )
    return data


def _is(data: bytes, ref: RosterRef) -> bool:
    """``data`` is the roster ``ref`` names: its size and SHA-256."""
    return len(data) == ref.size and hashlib.sha256(data).digest() == ref.sha256


_NUID: Final = re.compile(r"[A-Za-z0-9]{1,64}")


async def read_object(js: Any, bucket: str, ref: RosterRef) -> bytes:
    """The bytes of the object ``ref`` names, read by direct gets: its metadata (last
    message on its metadata subject), then its chunks in stream order. At most ``ref.size``
    bytes plus one chunk are read, whatever the metadata says."""
    name = roster_object_name(ref.seq, ref.sha256)
    stream = object_stream(bucket)
    meta_subject = f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
    try:
        meta = await js.get_msg(stream, subject=meta_subject, direct=True)
    except nats.js.errors.NotFoundError:
        raise _missing(ref) from None
    try:
        info = json.loads(meta.data or b"")
        nuid, size, deleted = info["nuid"], info.get("size", 0), info.get("deleted", False)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise _malformed(
            f"the roster object of seq {ref.seq} has malformed metadata", hint=_REPUBLISH
        ) from None
    if deleted is True:
        raise _missing(ref)
    if not isinstance(nuid, str) or not _NUID.fullmatch(nuid) or size != ref.size:
        raise _malformed(
            f"the roster object of seq {ref.seq} is not the roster the roster bucket names "
            "(its metadata differs)",
            hint=_REPUBLISH,
        )
    chunks, got, seq = [], 0, 1
    subject = f"$O.{bucket}.C.{nuid}"
    while got < ref.size:
        try:
            msg = await js.get_msg(stream, seq=seq, subject=subject, direct=True, next=True)
        except nats.js.errors.NotFoundError:
            break  # fewer bytes than the pointer says: refused by the caller's check
        chunk = msg.data or b""
        chunks.append(chunk)
        got += len(chunk)
        seq = int(msg.seq) + 1
    return b"".join(chunks)


def _missing(ref: RosterRef) -> RosterRejected:
    return _malformed(
        f"the roster bucket points to roster seq {ref.seq}, whose object is not in the "
        "broker's roster object store",
        hint=f"{_REPUBLISH}; the roster in use stays in force",
    )
