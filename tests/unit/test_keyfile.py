"""Passphrase-protected key files: seal/open, KDF profiles and header bounds."""

from __future__ import annotations

import msgspec
import pytest
from nacl.pwhash import argon2id
from tfkit import DeterministicRng, identity

from tfshare.encoding import encode
from tfshare.errors import TrustError
from tfshare.keyfile import (
    DEFAULT_KDF,
    KDF_PROFILES,
    MAX_MEMLIMIT,
    MAX_OPSLIMIT,
    KeyFile,
    open_keyfile,
    read_keyfile_header,
    seal_keyfile,
)

PASSPHRASE = b"correct horse battery staple"
FAST = KDF_PROFILES["insecure-test"]


@pytest.fixture(scope="module")
def sealed() -> bytes:
    """The key file of "police", sealed with the cheapest KDF profile."""
    return seal_keyfile(identity("police"), PASSPHRASE, limits=FAST, rng=DeterministicRng("kf"))


def _header(data: bytes) -> KeyFile:
    return msgspec.msgpack.decode(data, type=KeyFile)


def _with(data: bytes, **changes: object) -> bytes:
    return encode(msgspec.structs.replace(_header(data), **changes))


def test_round_trip_restores_the_secret_keys(sealed: bytes) -> None:
    """open_keyfile(seal_keyfile(id)) gives back the same seeds."""
    original = identity("police")
    opened = open_keyfile(sealed, PASSPHRASE)
    assert opened.secret_material() == original.secret_material()


def test_round_trip_restores_the_public_facts(sealed: bytes) -> None:
    """The opened identity has the same agency, name, creation time and public keys."""
    original = identity("police")
    opened = open_keyfile(sealed, PASSPHRASE)
    assert opened.agency_id == original.agency_id
    assert opened.display_name == original.display_name
    assert opened.created_ms == original.created_ms
    assert opened.sign_pk == original.sign_pk
    assert opened.enc_pk == original.enc_pk
    assert opened.nats_user == original.nats_user


def test_wrong_passphrase_is_a_trust_error(sealed: bytes) -> None:
    """A wrong passphrase fails with TrustError naming the agency, not the passphrase."""
    with pytest.raises(TrustError, match="wrong passphrase") as info:
        open_keyfile(sealed, b"wrong passphrase!")
    assert "police" in str(info.value)
    assert "correct horse" not in str(info.value)


def test_tampered_agency_id_fails_to_open(sealed: bytes) -> None:
    """The header is associated data: renaming the agency makes the file fail to open."""
    with pytest.raises(TrustError):
        open_keyfile(_with(sealed, agency_id="customs"), PASSPHRASE)


def test_tampered_ciphertext_fails_to_open(sealed: bytes) -> None:
    """Flipping one ciphertext bit fails exactly like a wrong passphrase."""
    ct = bytearray(_header(sealed).ct)
    ct[0] ^= 1
    with pytest.raises(TrustError, match="wrong passphrase"):
        open_keyfile(_with(sealed, ct=bytes(ct)), PASSPHRASE)


def test_empty_passphrase_is_refused() -> None:
    """seal_keyfile refuses an empty passphrase."""
    with pytest.raises(TrustError, match="empty"):
        seal_keyfile(identity("police"), b"", limits=FAST, rng=DeterministicRng("kf"))


def test_header_records_the_kdf_limits_used(sealed: bytes) -> None:
    """The header carries argon2id and the limits the file was sealed with."""
    header = read_keyfile_header(sealed)
    assert header.kdf == "argon2id"
    assert (header.opslimit, header.memlimit) == (FAST.opslimit, FAST.memlimit)


def test_header_carries_the_public_keys(sealed: bytes) -> None:
    """The header exposes agency id and public keys without the passphrase."""
    header = read_keyfile_header(sealed)
    original = identity("police")
    assert header.agency_id == "police"
    assert header.sign_pk == original.sign_pk
    assert header.enc_pk == original.enc_pk


def test_insecure_test_profile_is_libsodium_minimum() -> None:
    """The "insecure-test" profile is the smallest cost libsodium allows."""
    assert FAST.opslimit == argon2id.OPSLIMIT_MIN
    assert FAST.memlimit == argon2id.MEMLIMIT_MIN


def test_default_profile_is_moderate() -> None:
    """The default KDF profile name is "moderate"."""
    assert DEFAULT_KDF == "moderate"


def test_moderate_profile_uses_libsodium_moderate_limits() -> None:
    """ "moderate" is libsodium's moderate class: 3 passes over 256 MiB."""
    moderate = KDF_PROFILES["moderate"]
    assert moderate.opslimit == argon2id.OPSLIMIT_MODERATE == 3
    assert moderate.memlimit == argon2id.MEMLIMIT_MODERATE == 256 * 1024 * 1024


def test_every_named_profile_is_within_the_header_bounds() -> None:
    """A file sealed with any named profile can be read back (limits within MAX_*)."""
    for limits in KDF_PROFILES.values():
        assert limits.opslimit <= MAX_OPSLIMIT
        assert limits.memlimit <= MAX_MEMLIMIT


def test_header_accepts_limits_at_the_maximum(sealed: bytes) -> None:
    """opslimit == MAX_OPSLIMIT and memlimit == MAX_MEMLIMIT are still accepted."""
    header = read_keyfile_header(_with(sealed, opslimit=MAX_OPSLIMIT, memlimit=MAX_MEMLIMIT))
    assert (header.opslimit, header.memlimit) == (MAX_OPSLIMIT, MAX_MEMLIMIT)


def test_header_refuses_opslimit_above_maximum(sealed: bytes) -> None:
    """An opslimit above MAX_OPSLIMIT is refused before any key stretching."""
    with pytest.raises(TrustError, match="limits"):
        read_keyfile_header(_with(sealed, opslimit=MAX_OPSLIMIT + 1))


def test_header_refuses_memlimit_above_maximum(sealed: bytes) -> None:
    """A memlimit above MAX_MEMLIMIT is refused before any allocation."""
    with pytest.raises(TrustError, match="limits"):
        read_keyfile_header(_with(sealed, memlimit=MAX_MEMLIMIT + 1))


def test_header_refuses_memlimit_below_libsodium_minimum(sealed: bytes) -> None:
    """A memlimit below libsodium's minimum is refused too."""
    with pytest.raises(TrustError, match="limits"):
        read_keyfile_header(_with(sealed, memlimit=argon2id.MEMLIMIT_MIN - 1))


def test_open_refuses_excessive_limits_too(sealed: bytes) -> None:
    """open_keyfile applies the same bound (it must not stretch with a crafted cost)."""
    with pytest.raises(TrustError, match="limits"):
        open_keyfile(_with(sealed, memlimit=2**40), PASSPHRASE)


def test_header_refuses_an_unknown_kdf(sealed: bytes) -> None:
    """A kdf other than argon2id is refused, naming it."""
    with pytest.raises(TrustError, match="unknown KDF"):
        read_keyfile_header(_with(sealed, kdf="scrypt"))


def test_header_refuses_garbage() -> None:
    """Bytes that are not a key file are a TrustError, not a msgspec exception."""
    with pytest.raises(TrustError, match="not a tfshare key file"):
        read_keyfile_header(b"\x93\x01\x02\x03")


def test_header_refuses_trailing_bytes(sealed: bytes) -> None:
    """A key file with extra bytes after it is refused (strict decoding)."""
    with pytest.raises(TrustError):
        read_keyfile_header(sealed + b"\x00")


def test_file_does_not_contain_the_passphrase(sealed: bytes) -> None:
    """The key file's bytes do not contain the passphrase."""
    assert PASSPHRASE not in sealed


def test_file_does_not_contain_the_seeds(sealed: bytes) -> None:
    """The key file's bytes contain none of the three seeds."""
    for secret in identity("police").secret_material():
        assert secret not in sealed
        assert secret[:16] not in sealed


def test_two_seals_use_fresh_salt_and_nonce() -> None:
    """Sealing twice with different randomness gives different salt, nonce and ciphertext."""
    ident = identity("police")
    a = _header(seal_keyfile(ident, PASSPHRASE, limits=FAST, rng=DeterministicRng("a")))
    b = _header(seal_keyfile(ident, PASSPHRASE, limits=FAST, rng=DeterministicRng("b")))
    assert a.salt != b.salt
    assert a.nonce != b.nonce
    assert a.ct != b.ct
