"""Canonical bytes: labels, length prefixes, BLAKE2b, strict decoding and names."""

from __future__ import annotations

import msgspec
import nacl.encoding
import nacl.hash
import pytest

from tfshare.encoding import (
    Name,
    NonCanonical,
    b32,
    blake2b_256,
    decode_canonical,
    encode,
    group,
    is_name,
    label,
    u32,
)

_INT = msgspec.msgpack.Decoder(int)
_BYTES = msgspec.msgpack.Decoder(bytes)
_PAIR = msgspec.msgpack.Decoder(tuple[int, bytes])


def _nacl_blake2b(data: bytes, key: bytes = b"") -> bytes:
    digest: bytes = nacl.hash.blake2b(
        data, digest_size=32, key=key, encoder=nacl.encoding.RawEncoder
    )
    return digest


def test_label_appends_one_zero_byte() -> None:
    """label() is the ASCII name followed by exactly one 0x00 byte."""
    assert label("tfshare/v1/sig") == b"tfshare/v1/sig\x00"


def test_label_refuses_non_ascii() -> None:
    """label() only takes ASCII names (labels are part of the spec, not free text)."""
    with pytest.raises(UnicodeEncodeError):
        label("tfshare/v1/sïg")


def test_u32_prefixes_a_four_byte_big_endian_length() -> None:
    """u32() is a 4-byte big-endian length followed by the data itself."""
    assert u32(b"abc") == b"\x00\x00\x00\x03abc"


def test_u32_length_is_big_endian_above_255() -> None:
    """u32() writes the length most significant byte first."""
    data = b"x" * 0x0102
    assert u32(data)[:4] == b"\x00\x00\x01\x02"
    assert u32(data)[4:] == data


def test_u32_of_empty_is_four_zero_bytes() -> None:
    """u32(b"") is the length 0 and nothing else."""
    assert u32(b"") == b"\x00\x00\x00\x00"


def test_blake2b_256_matches_libsodium_unkeyed() -> None:
    """H(m) equals libsodium's crypto_generichash with a 32-byte digest."""
    assert blake2b_256(b"message") == _nacl_blake2b(b"message")


def test_blake2b_256_matches_libsodium_keyed() -> None:
    """H(m, key) equals libsodium's keyed crypto_generichash."""
    key = bytes(range(32))
    assert blake2b_256(b"message", key) == _nacl_blake2b(b"message", key)


def test_blake2b_256_key_changes_the_digest() -> None:
    """A keyed hash differs from the unkeyed one (the key is really used)."""
    assert blake2b_256(b"message", b"k" * 32) != blake2b_256(b"message")


def test_blake2b_256_is_32_bytes() -> None:
    """H() returns a 32-byte digest."""
    assert len(blake2b_256(b"")) == 32


def test_decode_canonical_accepts_canonical_bytes() -> None:
    """Bytes that msgspec itself would emit decode to their value."""
    data = encode([5, b"ab"])
    assert decode_canonical(data, _PAIR) == (5, b"ab")


def test_decode_canonical_rejects_a_wide_integer() -> None:
    """An integer in a wider encoding than needed (uint8 for 5) is NonCanonical."""
    with pytest.raises(NonCanonical):
        decode_canonical(b"\xcc\x05", _INT)


def test_decode_canonical_rejects_a_wide_length_prefix() -> None:
    """A bin16 length for a 1-byte string (bin8 suffices) is NonCanonical."""
    assert decode_canonical(b"\xc4\x01a", _BYTES) == b"a"
    with pytest.raises(NonCanonical):
        decode_canonical(b"\xc5\x00\x01a", _BYTES)


def test_decode_canonical_rejects_trailing_bytes_as_decode_error() -> None:
    """Trailing bytes after a value are a msgspec.DecodeError, not NonCanonical."""
    with pytest.raises(msgspec.DecodeError) as info:
        decode_canonical(b"\x05\x05", _INT)
    assert not isinstance(info.value, NonCanonical)


def test_non_canonical_is_a_value_error() -> None:
    """NonCanonical is a ValueError so generic handlers catch it."""
    assert issubclass(NonCanonical, ValueError)


@pytest.mark.parametrize("name", ["a", "police", "nl-north", "a_b-9", "z" * 32])
def test_is_name_accepts_valid_names(name: str) -> None:
    """Lowercase, starting with a letter, letters/digits/-/_, 1 to 32 characters."""
    assert is_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Police",
        "1police",
        "-police",
        "_police",
        "a.b",
        "a b",
        "a*",
        "a>",
        "z" * 33,
        "police\n",
        "pölice",
    ],
)
def test_is_name_refuses_invalid_names(name: str) -> None:
    """Upper case, leading digit/punctuation, dots, wildcards, spaces, >32 chars are refused."""
    assert not is_name(name)


def test_name_type_refuses_a_trailing_newline() -> None:
    """The msgspec Name type agrees with is_name: "police\\n" is not a name."""
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert("police\n", Name)


def test_b32_is_lowercase_unpadded() -> None:
    """b32() is RFC 4648 base32, lowercase, without '=' padding."""
    assert b32(b"\x00") == "aa"
    assert b32(b"hello") == "nbswy3dp"


def test_group_splits_into_blocks_of_four() -> None:
    """group() separates blocks of four characters with single spaces."""
    assert group("abcdefghij") == "abcd efgh ij"
