"""Canonical bytes: labels, length prefixes, BLAKE2b, and strict msgpack for signed structures.

Owns: ``label``/``u32``/``blake2b_256`` (the notation of PROTOCOL.md), the shared field
constraints (``Uint``, ``Bytes32``, ...), ``encode``/``decode_canonical``, which accept a
structure only if re-encoding it gives back exactly the bytes received, and
``check_body_form``, the same test for message bodies (maps in any key order, no key twice).

Never: touch the network or disk; encode floats, nil or ext types in anything signed or hashed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Annotated, Any, Final, TypeVar

import msgspec

MAX_UINT: Final = 2**53 - 1  # integers travel through JavaScript peers unchanged below this

Uint = Annotated[int, msgspec.Meta(ge=0, le=MAX_UINT)]
Bytes8 = Annotated[bytes, msgspec.Meta(min_length=8, max_length=8)]
Bytes16 = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
Bytes24 = Annotated[bytes, msgspec.Meta(min_length=24, max_length=24)]
Bytes32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Bytes48 = Annotated[bytes, msgspec.Meta(min_length=48, max_length=48)]
Bytes64 = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]

# Identifiers become NATS subject tokens (tf.<taskforce>.ch.<channel>.<agency>), so no dots,
# wildcards or spaces; lowercase so that two spellings never name one agency.
NAME_PATTERN: Final = r"^[a-z][a-z0-9_-]{0,31}\Z"
Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_NAME_RE: Final = re.compile(NAME_PATTERN)

T = TypeVar("T")

_encoder: Final = msgspec.msgpack.Encoder()
_any_decoder: Final = msgspec.msgpack.Decoder()


def label(name: str) -> bytes:
    """L(x): the ASCII label followed by one zero byte, so no label is a prefix of another."""
    return name.encode("ascii") + b"\x00"


def u32(data: bytes) -> bytes:
    """u32(x): a 4-byte big-endian length, then x, so concatenations cannot be re-split."""
    if len(data) > 0xFFFFFFFF:
        raise ValueError("field longer than 2^32-1 bytes")
    return len(data).to_bytes(4, "big") + data


def blake2b_256(data: bytes, key: bytes = b"") -> bytes:
    """H(m) or H(m, key): BLAKE2b with a 32-byte digest, libsodium's crypto_generichash."""
    return hashlib.blake2b(data, digest_size=32, key=key).digest()


def is_name(value: str) -> bool:
    """True if value is a valid agency, task-force or channel name."""
    return _NAME_RE.fullmatch(value) is not None


def encode(obj: Any) -> bytes:
    """Canonical msgpack of a Struct (array_like) or plain value: smallest widths, no floats."""
    return _encoder.encode(obj)


class NonCanonical(ValueError):
    """Bytes decode, but are not the canonical encoding of what they decode to."""


# Everything strict decoding of hostile bytes can raise: msgspec's own errors, invalid UTF-8
# inside a string (msgspec raises UnicodeDecodeError), nesting deeper than the C stack allows,
# and our canonical-form check. Every decode site catches exactly this tuple.
DECODE_ERRORS: Final = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    UnicodeDecodeError,
    RecursionError,
    NonCanonical,
)


def decode_canonical(data: bytes, decoder: msgspec.msgpack.Decoder[T]) -> T:
    """Strictly decode ``data`` and insist that it is the canonical encoding of the result.

    Raises ``msgspec.DecodeError``/``msgspec.ValidationError`` for malformed input and
    ``NonCanonical`` when the bytes are well formed but not canonical (wider integers or
    lengths than needed): two implementations must never disagree about what was signed.
    """
    value = decoder.decode(data)
    if _encoder.encode(value) != data:
        raise NonCanonical("non-canonical encoding")
    return value


_BODY_SCALARS: Final = frozenset((str, int, float, bool))


def check_body_form(data: bytes) -> None:
    """Refuse a body (PROTOCOL.md 9) in which a map repeats a key, at any depth, or a value is
    not in its shortest form (float32, a wider integer or length than needed).

    msgspec, like most msgpack and JSON decoders, keeps the last of two equal keys; another
    implementation may keep the first, and the two would read one signed message differently.
    A generic decode keeps every map in its received key order but one entry per key, so
    re-encoding it gives back the received bytes exactly when no key repeats and every value
    is in shortest form: one C-speed pass each way, a few microseconds for an alert.
    Raises ``NonCanonical`` (and whatever ``DECODE_ERRORS`` lists for malformed bytes).
    """
    value = _any_decoder.decode(data)
    if _encoder.encode(value) != data:
        raise NonCanonical("a map key appears twice, or a value is not in its shortest form")
    _check_json_like(value)


def _check_json_like(value: object) -> None:
    """Refuse what a body may not hold (PROTOCOL.md 9): a map key that is not a string, and
    nil, binary or extension values (an absent property is left out, never nil). A decoder
    that turns keys into strings (most JavaScript and Go ones) would read ``"x"`` and
    ``b"x"`` as one key given twice, which the re-encode check cannot see."""
    # Scalars are skipped without a turn of the loop: this runs on every received message.
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if type(key) is not str:
                    raise NonCanonical("a map key is not a string")
                if type(inner) not in _BODY_SCALARS:
                    stack.append(inner)
        elif isinstance(item, list):
            for inner in item:
                if type(inner) not in _BODY_SCALARS:
                    stack.append(inner)
        elif type(item) not in _BODY_SCALARS:
            raise NonCanonical("a value is nil, binary or an extension (PROTOCOL.md 9)")


def b32(data: bytes) -> str:
    """Lowercase RFC 4648 base32 without padding (fingerprints, for reading aloud)."""
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def group(text: str, size: int = 4) -> str:
    """Split text into space-separated groups of ``size`` characters."""
    return " ".join(text[i : i + size] for i in range(0, len(text), size))


_PATH = re.compile(r" - at `(\$[^`]*)`$")
_SAFE_PREFIXES = (
    # msgspec messages that name only types, bounds, patterns or schema field names.
    "Expected `",
    "Object missing required field `",
)


def safe_reason(exc: BaseException) -> str:
    """What was wrong, and where, without any value from the input.

    msgspec sometimes quotes the offending value ("Invalid enum value ...") or a field name
    the sender chose ("Object contains unknown field ..."); either can be case details, and
    this text reaches logs and other agencies' screens. Only messages that quote nothing but
    our own schema survive; the rest become a fixed category. The JSON path is always kept.
    """
    text = str(exc).splitlines()[0] if str(exc) else ""
    match = _PATH.search(text)
    path = match.group(1) if match else None
    message = text[: match.start()] if match else text
    if isinstance(exc, UnicodeDecodeError):
        message = "invalid UTF-8 in a string"
    elif isinstance(exc, RecursionError):
        message = "nested too deeply"
    elif isinstance(exc, NonCanonical):
        message = str(exc) or "not in canonical form"  # our own words, never input
    elif not message.startswith(_SAFE_PREFIXES):
        if message.startswith("Invalid enum value"):
            message = "value not allowed"
        elif message.startswith("Object contains unknown field"):
            message = "unknown field"
        elif isinstance(exc, msgspec.ValidationError):
            message = "invalid value"
        else:
            message = "malformed data"
    return f"{message} - at `{path}`" if path else message
