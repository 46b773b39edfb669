"""Property tests of the canonical encoding layer: msgpack round trips, u32/label framing,
plaintext padding classes and the fingerprint format."""

from __future__ import annotations

import base64
import itertools
import re
from typing import Final

import msgspec
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tfshare.encoding import (
    MAX_UINT,
    NonCanonical,
    blake2b_256,
    decode_canonical,
    encode,
    label,
    u32,
)
from tfshare.envelope import (
    MAX_RECIPIENTS,
    MAX_REFS,
    Header,
    Plain,
    Ref,
    pack_wraps,
    pad_length,
)
from tfshare.keys import L_FP, fingerprint

# ---------------------------------------------------------------------------------------------
# Canonical msgpack of Headers

HEADER_DECODER: Final = msgspec.msgpack.Decoder(Header)
uints: Final = st.integers(0, MAX_UINT)
names: Final = st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True)


def fixed(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


headers: Final = st.builds(
    Header,
    v=uints,
    suite=uints,
    msg_id=fixed(16),
    ts_ms=uints,
    sender=names,
    sender_kid=fixed(8),
    taskforce=names,
    channel=names,
    seq=uints,
    roster_seq=uints,
    mode=uints,
    epoch=uints,
    eph_pk=st.binary(max_size=32),
    wraps=st.lists(st.tuples(fixed(8), fixed(48)), max_size=8).map(pack_wraps),
    nonce=fixed(24),
    commit=fixed(32),
    refs=st.lists(st.builds(Ref, st.integers(1, 6), fixed(16), fixed(32)), max_size=MAX_REFS),
)


@given(header=headers)
def test_header_round_trips_through_canonical_decoding(header: Header) -> None:
    """decode_canonical(encode(h)) == h for any Header within its field bounds."""
    assert decode_canonical(encode(header), HEADER_DECODER) == header


def test_header_with_maximum_wraps_round_trips() -> None:
    """A header with the maximum of 256 wraps round-trips too."""
    wraps = pack_wraps((i.to_bytes(8, "big"), bytes(48)) for i in range(MAX_RECIPIENTS))
    header = Header(
        v=1,
        suite=1,
        msg_id=bytes(16),
        ts_ms=0,
        sender="a",
        sender_kid=bytes(8),
        taskforce="b",
        channel="c",
        seq=0,
        roster_seq=0,
        mode=1,
        epoch=0,
        eph_pk=bytes(32),
        wraps=wraps,
        nonce=bytes(24),
        commit=bytes(32),
        refs=[],
    )
    assert decode_canonical(encode(header), HEADER_DECODER) == header


UINT_DECODER: Final = msgspec.msgpack.Decoder(int)


@given(value=st.integers(0, 2**32 - 1))
def test_widened_integer_is_not_canonical(value: int) -> None:
    """An integer sent as uint64 when a narrower width fits raises NonCanonical."""
    with pytest.raises(NonCanonical):
        decode_canonical(b"\xcf" + value.to_bytes(8, "big"), UINT_DECODER)


BYTES_DECODER: Final = msgspec.msgpack.Decoder(bytes)


@given(value=st.binary(max_size=300))
def test_widened_bin_length_is_not_canonical(value: bytes) -> None:
    """A byte string with a bin32 length prefix when bin8/bin16 fits raises NonCanonical."""
    with pytest.raises(NonCanonical):
        decode_canonical(b"\xc6" + len(value).to_bytes(4, "big") + value, BYTES_DECODER)


# ---------------------------------------------------------------------------------------------
# u32 and label framing


def framed(fields: list[bytes]) -> bytes:
    return b"".join(u32(f) for f in fields)


def split(data: bytes, cuts: set[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(u32_input=st.binary(max_size=1024))
def test_u32_is_big_endian_length_then_data(u32_input: bytes) -> None:
    """u32(x) is the 4-byte big-endian length of x followed by x."""
    out = u32(u32_input)
    assert out[:4] == len(u32_input).to_bytes(4, "big")
    assert out[4:] == u32_input


@given(
    data=st.binary(max_size=64),
    cuts_a=st.sets(st.integers(0, 64), max_size=6),
    cuts_b=st.sets(st.integers(0, 64), max_size=6),
)
@example(data=b"ab", cuts_a={1}, cuts_b=set())
@example(data=b"", cuts_a={0}, cuts_b=set())
def test_u32_frames_of_different_splits_differ(
    data: bytes, cuts_a: set[int], cuts_b: set[int]
) -> None:
    """Two different splits of the same bytes into fields never frame to the same bytes."""
    a = split(data, {c for c in cuts_a if c <= len(data)})
    b = split(data, {c for c in cuts_b if c <= len(data)})
    if a != b:
        assert framed(a) != framed(b)


@given(
    a=st.lists(st.binary(max_size=32), max_size=6),
    b=st.lists(st.binary(max_size=32), max_size=6),
)
def test_u32_frames_are_injective(a: list[bytes], b: list[bytes]) -> None:
    """Distinct field lists, of any lengths, frame to distinct byte strings."""
    if a != b:
        assert framed(a) != framed(b)


ascii_labels: Final = st.text(
    alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=40
)


@given(name=ascii_labels)
def test_label_is_ascii_then_one_zero_byte(name: str) -> None:
    """label(x) is the ASCII bytes of x followed by exactly one 0x00."""
    assert label(name) == name.encode("ascii") + b"\x00"


@given(a=ascii_labels, b=ascii_labels)
@example(a="tfshare/v1/kid", b="tfshare/v1/kid/sig")
def test_no_label_is_a_prefix_of_another(a: str, b: str) -> None:
    """For distinct names, neither label is a prefix of the other (domain separation)."""
    if a != b:
        assert not label(b).startswith(label(a))
        assert not label(a).startswith(label(b))


# ---------------------------------------------------------------------------------------------
# Padding classes

CLASSES_BELOW_64K: Final = (256, 1024, 4096, 16384, 65536)
MAX_UNPADDED: Final = 600_000
FP: Final = bytes(range(32))


def is_class_size(n: int) -> bool:
    return n in CLASSES_BELOW_64K or n % 65536 == 0


def class_at_least(n: int) -> int:
    return next((c for c in CLASSES_BELOW_64K if n <= c), -(-n // 65536) * 65536)


def bin_prefix(n: int) -> int:
    return 2 if n < 256 else 3 if n < 65536 else 5


def padded_size(unpadded: int, pad: int) -> int:
    """Encoded Plain size once the empty pad (2-byte bin8 prefix) becomes ``pad`` zero bytes."""
    return unpadded - 2 + bin_prefix(pad) + pad


def plain_of_size(unpadded: int) -> Plain | None:
    """A Plain with an empty pad whose encoding is exactly ``unpadded`` bytes (None if too small).

    The body's length prefix grows at 256 and 65536 bytes, so some sizes need a schema name a
    byte or two longer; names stay within the SchemaName pattern.
    """
    for extra in range(4):
        schema = "t" * (1 + extra) + "/1"
        empty = len(encode(Plain(schema, FP, b"", b"")))  # the empty body's prefix is 2 bytes
        for prefix in (2, 3, 5):
            body_len = unpadded - empty + 2 - prefix
            if body_len >= 0 and bin_prefix(body_len) == prefix:
                plain = Plain(schema, FP, bytes(body_len), b"")
                if len(encode(plain)) == unpadded:
                    return plain
    return None


def test_pad_length_reaches_a_class_for_every_size() -> None:
    """Sweep 1..600000: the padded size is a class size >= the input, at most one class up."""
    failures: list[str] = []
    for unpadded in range(1, MAX_UNPADDED + 1):
        size = padded_size(unpadded, pad_length(unpadded))
        smallest = class_at_least(unpadded)
        if not (is_class_size(size) and smallest <= size <= class_at_least(smallest + 1)):
            failures.append(f"{unpadded} -> {size}")
    assert not failures, f"{len(failures)} sizes miss a class, first: {failures[:5]}"


@given(unpadded=st.integers(43, MAX_UNPADDED))
@example(unpadded=43)
@example(unpadded=256)
@example(unpadded=254)
@example(unpadded=1023)
@example(unpadded=16385)
@example(unpadded=65534)
@example(unpadded=65536)
@example(unpadded=65537)
@example(unpadded=131071)
@example(unpadded=MAX_UNPADDED)
def test_padded_plain_encodes_to_a_class_size(unpadded: int) -> None:
    """Encoding a real Plain with pad_length zeros gives a class size (256 B ... n x 64 KiB)."""
    plain = plain_of_size(unpadded)
    assert plain is not None, f"no Plain of {unpadded} bytes"
    padded = msgspec.structs.replace(plain, pad=bytes(pad_length(unpadded)))
    size = len(encode(padded))
    assert is_class_size(size), f"{unpadded} -> {size}"
    assert size >= unpadded


# ---------------------------------------------------------------------------------------------
# Fingerprints

FINGERPRINT_RE: Final = re.compile(r"[a-z2-7]{4}( [a-z2-7]{4}){7}")


@given(sign_pk=st.binary(min_size=32, max_size=32))
def test_fingerprint_is_eight_groups_of_four_base32(sign_pk: bytes) -> None:
    """A fingerprint is 32 lowercase base32 characters in 8 space-separated groups of 4."""
    assert FINGERPRINT_RE.fullmatch(fingerprint(sign_pk))


@given(sign_pk=st.binary(min_size=32, max_size=32))
def test_fingerprint_decodes_to_the_hash_prefix(sign_pk: bytes) -> None:
    """Ungrouped and uppercased, a fingerprint is RFC 4648 base32 of H(L(fp) || pk)[:20]."""
    text = fingerprint(sign_pk).replace(" ", "").upper()
    assert base64.b32decode(text) == blake2b_256(L_FP + sign_pk)[:20]
