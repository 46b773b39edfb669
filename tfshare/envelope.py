"""Envelope v1 wire structures (PROTOCOL.md, "Structures").

Owns: the msgspec Structs whose canonical msgpack encodings are the wire format, the size
limits, and the size classes the plaintext is padded to.

Never: hold logic beyond shape and bounds; sealing and opening live in ``tfshare.seal``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import IntEnum
from functools import lru_cache
from typing import Annotated, Final

import msgspec

from tfshare.encoding import Bytes8, Bytes16, Bytes24, Bytes32, Bytes64, Name, Uint

VERSION: Final = 1
SUITE_1: Final = 1  # Ed25519, X25519, BLAKE2b-256, XChaCha20-Poly1305
SUPPORTED_SUITES: Final = frozenset({SUITE_1})
MAX_ENVELOPE: Final = 512 * 1024
MAX_RECIPIENTS: Final = 256
MAX_REFS: Final = 16
MAX_SKEW_MS: Final = 120_000
# The streams keep messages 30 days (transport.DEFAULT_MAX_AGE_DAYS), and a message may wait
# sealed 14 more (an outbox, an offline exchange on USB sticks): nothing a stream still holds
# is E_STALE, so an agency back after three weeks receives its whole backlog. The replay store
# must keep entries at least this long (it never prunes). seal.receive_max_age_ms(stream).
DEFAULT_MAX_AGE_MS: Final = 44 * 24 * 3600 * 1000
# Messages signed before a key was retired stay acceptable this long after the retirement.
RETIRED_GRACE_MS: Final = 3 * 24 * 3600 * 1000


class Mode(IntEnum):
    DIRECT = 1
    EPOCH = 2


class Relation(IntEnum):
    """How a message relates to one it references (lineage, audit.md)."""

    RESHARE = 1
    ESCALATE = 2
    AMEND = 3
    MERGE = 4
    RETRACT = 5
    REPLY = 6  # answers a request (its response class deadline is met by this)


WRAP_SIZE: Final = 56  # kid_enc (8) || wct (48): K (32) under AEAD, plus its 16-byte tag


@lru_cache(maxsize=MAX_RECIPIENTS)
def _kid_reader(count: int) -> struct.Struct:
    return struct.Struct(">" + "Q48x" * count)


def pack_wraps(wraps: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Concatenate (kid_enc, wct) records in ascending kid order: the header's ``wraps``."""
    return b"".join(kid + wct for kid, wct in sorted(wraps))


def wrap_kids(wraps: bytes) -> list[int]:
    """The kid_enc of each record as a big-endian integer, in wire order (one C call).

    Raises ValueError if ``wraps`` is not a whole number of records.
    """
    count, rest = divmod(len(wraps), WRAP_SIZE)
    if rest:
        raise ValueError("wraps is not a whole number of 56-byte records")
    return list(_kid_reader(count).unpack(wraps)) if count else []


def wrap_at(wraps: bytes, index: int) -> tuple[bytes, bytes]:
    """(kid_enc, wct) of record ``index``."""
    start = index * WRAP_SIZE
    return wraps[start : start + 8], wraps[start + 8 : start + WRAP_SIZE]


class Ref(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    relation: Annotated[int, msgspec.Meta(ge=1, le=6)]
    msg_id: Bytes16
    env_hash: Bytes32


class Header(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    v: Uint
    suite: Uint
    msg_id: Bytes16
    ts_ms: Uint
    sender: Name
    sender_kid: Bytes8
    taskforce: Name
    channel: Name
    seq: Uint
    roster_seq: Uint
    mode: Uint
    epoch: Uint
    eph_pk: Annotated[bytes, msgspec.Meta(max_length=32)]
    wraps: Annotated[bytes, msgspec.Meta(max_length=MAX_RECIPIENTS * WRAP_SIZE)]
    nonce: Bytes24
    commit: Bytes32
    refs: Annotated[list[Ref], msgspec.Meta(max_length=MAX_REFS)]


class Envelope(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    v: Uint
    hdr: Annotated[bytes, msgspec.Meta(max_length=MAX_ENVELOPE)]
    ct: Annotated[bytes, msgspec.Meta(max_length=MAX_ENVELOPE)]
    sig: Bytes64


SchemaName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_.-]{0,63}/[1-9][0-9]{0,5}\Z")]


class Plain(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    schema: SchemaName
    schema_fp: Bytes32
    body: bytes
    pad: bytes


_SMALL_CLASSES: Final = (256, 1024, 4096, 16384, 65536)


def size_classes_from(n: int) -> int:
    """The smallest padding class >= n: 256 B, 1, 4, 16, 64 KiB, then multiples of 64 KiB."""
    for size in _SMALL_CLASSES:
        if n <= size:
            return size
    return -(-n // 65536) * 65536


def _bin_header(n: int) -> int:
    return 2 if n < 256 else 3 if n < 65536 else 5


def pad_length(unpadded: int) -> int:
    """Pad bytes that bring an encoded Plain (``unpadded`` bytes with an empty pad) to a class.

    The pad's own length prefix grows with it (msgpack bin8/16/32), so a class that cannot be
    hit exactly is skipped for the next one. PROTOCOL.md gives the same rule.
    """
    target = size_classes_from(unpadded)
    while True:
        for header in (2, 3, 5):
            n = target - unpadded + 2 - header
            if n >= 0 and _bin_header(n) == header:
                return n
        target = size_classes_from(target + 1)
