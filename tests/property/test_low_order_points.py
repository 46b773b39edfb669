"""``keys.usable_x25519_key`` (a set look-up) answers exactly as libsodium's X25519 did.

Before issue 15 the check was a scalar multiplication: a key was usable when
``primitives.scalarmult`` (libsodium's crypto_scalarmult) neither refused it nor gave an
all-zero shared secret. The set comparison must agree with that on every 32-byte string:

- random points (almost all usable);
- each blocklisted encoding, with the top bit set or clear (X25519 ignores it);
- every non-canonical encoding (u >= p), with either top bit;
- a blocklisted encoding with any other single bit flipped (the set compares all the rest);
- strings of other lengths, which the scalar multiplication refused.

And the blocklist is what it says: each value is a point of small order (three x-only
doublings reach the point at infinity), computed here independently of libsodium.
"""

from __future__ import annotations

from typing import Final

from hypothesis import example, given
from hypothesis import strategies as st
from nacl.exceptions import CryptoError

from tfshare import primitives
from tfshare.keys import LOW_ORDER_X25519, usable_x25519_key

P: Final = 2**255 - 19
# What the old check multiplied by: clamped, 2^254.
SCALAR: Final = b"\x01" + bytes(30) + b"\x40"


def usable_by_scalarmult(point: bytes) -> bool:
    """The old definition: libsodium computes a non-zero shared secret with the point."""
    try:
        shared = primitives.scalarmult(SCALAR, point)
    except CryptoError:
        return False
    return shared != bytes(32)


def with_top_bit(point: bytes, top: bool) -> bytes:
    return point[:31] + bytes(((point[31] & 0x7F) | (0x80 if top else 0),))


BLOCKLISTED: Final = sorted(LOW_ORDER_X25519)
NON_CANONICAL: Final = [u.to_bytes(32, "little") for u in range(P, 2**255)]


def test_the_blocklist_is_libsodiums_seven_encodings() -> None:
    assert len(LOW_ORDER_X25519) == 7
    assert all(len(point) == 32 and point[31] < 0x80 for point in LOW_ORDER_X25519)
    values = {int.from_bytes(point, "little") for point in LOW_ORDER_X25519}
    assert {0, 1, P - 1, P, P + 1} <= values


def _double(x: int, z: int) -> tuple[int, int]:
    """x-only doubling on the Montgomery curve (RFC 7748's ladder step, one half)."""
    xx, zz = x * x % P, z * z % P
    e = (xx - zz) % P
    return e * e % P, 4 * x * z * (xx + 486662 * x * z + zz) % P


def test_every_blocklisted_point_has_small_order() -> None:
    """8 * P is the point at infinity (z = 0) for each, so any clamped scalar (a multiple of
    8) gives an all-zero secret: the refusal is about the point, not about libsodium."""
    for point in LOW_ORDER_X25519:
        x, z = int.from_bytes(point, "little") % P, 1
        for _ in range(3):
            x, z = _double(x, z)
        assert z == 0, point.hex()


def test_each_blocklisted_encoding_is_refused_with_either_top_bit() -> None:
    for point in BLOCKLISTED:
        for top in (False, True):
            candidate = with_top_bit(point, top)
            assert not usable_by_scalarmult(candidate)
            assert not usable_x25519_key(candidate)


def test_every_non_canonical_encoding_answers_as_libsodium() -> None:
    """u in [p, 2^255): only p and p + 1 (0 and 1) are refused; with either top bit."""
    refused = []
    for point in NON_CANONICAL:
        for top in (False, True):
            candidate = with_top_bit(point, top)
            assert usable_x25519_key(candidate) is usable_by_scalarmult(candidate)
            if not usable_x25519_key(candidate):
                refused.append(int.from_bytes(candidate, "little") & ~(1 << 255))
    assert sorted(set(refused)) == [P, P + 1]


@given(st.binary(min_size=32, max_size=32))
@example(bytes(32))
@example(b"\xff" * 32)
@example(bytes(31) + b"\x80")
def test_a_random_point_answers_as_libsodium(point: bytes) -> None:
    assert usable_x25519_key(point) is usable_by_scalarmult(point)


@given(
    st.sampled_from(BLOCKLISTED),
    st.integers(min_value=0, max_value=254),
    st.booleans(),
)
def test_a_blocklisted_encoding_with_one_bit_flipped_answers_as_libsodium(
    point: bytes, bit: int, top: bool
) -> None:
    flipped = bytearray(with_top_bit(point, top))
    flipped[bit // 8] ^= 1 << (bit % 8)
    candidate = bytes(flipped)
    assert usable_x25519_key(candidate) is usable_by_scalarmult(candidate)


@given(st.binary(max_size=64).filter(lambda b: len(b) != 32))
def test_a_key_of_another_length_is_unusable_as_before(point: bytes) -> None:
    assert not usable_by_scalarmult(point)
    assert not usable_x25519_key(point)
