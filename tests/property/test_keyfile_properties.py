"""Property tests of passphrase-protected key files.

Every example uses the "insecure-test" Argon2id profile (libsodium's minimum cost: well under a
millisecond per derivation here), so the default example count stays cheap. A damaged key file
or a wrong passphrase must raise ``TrustError`` and nothing else, and no error may repeat the
passphrase in its message, hint, str or repr.
"""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tfkit import NOW_MS, DeterministicRng, identity

from tfshare.errors import TrustError
from tfshare.keyfile import KDF_PROFILES, open_keyfile, seal_keyfile
from tfshare.keys import Identity

LIMITS: Final = KDF_PROFILES["insecure-test"]
OWNER: Final = identity("police")

# Long enough that a random passphrase is not, by chance, a word of an error message.
passphrases: Final = st.text(min_size=8, max_size=64).map(str.encode)
seeds: Final = st.binary(min_size=1, max_size=16)


def sealed_for(passphrase: bytes, seed: bytes) -> bytes:
    return seal_keyfile(OWNER, passphrase, limits=LIMITS, rng=DeterministicRng(seed))


REFERENCE: Final = sealed_for(b"correct horse battery staple", b"reference")
# Offsets of the file's text fields: its tag, the KDF name and the agency id.
TAG_AT: Final = REFERENCE.index(b"tfshare-key/1")
KDF_AT: Final = REFERENCE.index(b"argon2id")
AGENCY_AT: Final = REFERENCE.index(b"police")


def flip(data: bytes, position: int, xor: int) -> bytes:
    out = bytearray(data)
    out[position] ^= xor
    return bytes(out)


def assert_refused_without_leak(data: bytes, tried: bytes, *hidden: bytes) -> None:
    """open_keyfile(data, tried) raises TrustError whose text shows no passphrase in any form."""
    with pytest.raises(TrustError) as info:
        open_keyfile(data, tried)
    error = info.value
    texts = (str(error), repr(error), error.message, error.hint)
    # The same refusal for a passphrase no wording contains: text that occurs there too is
    # the message's fixed wording ("passphra" is part of "wrong passphrase"), not a leak.
    with pytest.raises(TrustError) as baseline_info:
        open_keyfile(data, b"\x01\x02 unrelated \x03\x04")
    baseline = " ".join(
        (str(baseline_info.value), baseline_info.value.message, baseline_info.value.hint)
    )
    for secret in (tried, *hidden):
        for form in (secret.decode(), repr(secret), secret.hex()):
            if form in baseline:
                continue
            for text in texts:
                assert form not in text, (form, text)


@st.composite
def identities(draw: st.DrawFn) -> Identity:
    return Identity(
        agency_id=draw(st.from_regex(r"[a-z][a-z0-9_-]{0,31}", fullmatch=True)),
        display_name=draw(st.text(min_size=1, max_size=128)),
        sign_seed=draw(st.binary(min_size=32, max_size=32)),
        enc_sk=draw(st.binary(min_size=32, max_size=32)),
        nats_seed=draw(st.binary(min_size=32, max_size=32)),
        created_ms=draw(st.integers(0, 2**53 - 1)),
    )


@given(ident=identities(), passphrase=st.binary(min_size=1, max_size=256), seed=seeds)
def test_keyfile_round_trip(ident: Identity, passphrase: bytes, seed: bytes) -> None:
    """A key file opens with its passphrase to the same identity, secrets included."""
    data = seal_keyfile(ident, passphrase, limits=LIMITS, rng=DeterministicRng(seed))
    opened = open_keyfile(data, passphrase)
    assert opened.agency_id == ident.agency_id
    assert opened.display_name == ident.display_name
    assert opened.created_ms == ident.created_ms
    assert opened.sign_pk == ident.sign_pk
    assert opened.enc_pk == ident.enc_pk
    assert opened.secret_material() == ident.secret_material()


@given(passphrase=passphrases, wrong=passphrases, seed=seeds)
def test_wrong_passphrase_is_refused_without_leak(
    passphrase: bytes, wrong: bytes, seed: bytes
) -> None:
    """Another passphrase raises TrustError naming neither the tried nor the real one."""
    if wrong == passphrase:
        wrong += b"!"
    assert_refused_without_leak(sealed_for(passphrase, seed), wrong, passphrase)


@given(
    passphrase=passphrases,
    seed=seeds,
    position=st.integers(0, len(REFERENCE) - 1),
    xor=st.integers(1, 255),
)
@example(passphrase=b"correct horse", seed=b"s", position=TAG_AT, xor=0x80)
@example(passphrase=b"correct horse", seed=b"s", position=KDF_AT + 1, xor=0x80)
@example(passphrase=b"correct horse", seed=b"s", position=AGENCY_AT, xor=0x80)
def test_flipped_keyfile_byte_is_refused_without_leak(
    passphrase: bytes, seed: bytes, position: int, xor: int
) -> None:
    """A flipped byte anywhere raises TrustError only, and the error hides the passphrase."""
    data = sealed_for(passphrase, seed)
    assert_refused_without_leak(flip(data, position % len(data), xor), passphrase)


def test_every_keyfile_position_flipped_is_refused() -> None:
    """Sweep: each key-file byte flipped by 0x01 and by 0x80 raises TrustError only."""
    passphrase = b"correct horse battery staple"
    failures: list[str] = []
    for position in range(len(REFERENCE)):
        for xor in (0x01, 0x80):
            try:
                open_keyfile(flip(REFERENCE, position, xor), passphrase)
            except TrustError:
                continue
            except Exception as exc:
                failures.append(f"byte {position} ^ {xor:#04x}: raised {exc!r}")
            else:
                failures.append(f"byte {position} ^ {xor:#04x}: opened")
    assert not failures, f"{len(failures)} bad outcomes, first: {failures[:5]}"


@given(passphrase=passphrases, seed=seeds, cut=st.integers(1, len(REFERENCE)))
def test_truncated_keyfile_is_refused_without_leak(
    passphrase: bytes, seed: bytes, cut: int
) -> None:
    """A key file missing its last bytes raises TrustError only, hiding the passphrase."""
    data = sealed_for(passphrase, seed)
    assert_refused_without_leak(data[: max(0, len(data) - cut)], passphrase)


@given(passphrase=passphrases, seed=seeds, tail=st.binary(min_size=1, max_size=256))
def test_extended_keyfile_is_refused_without_leak(
    passphrase: bytes, seed: bytes, tail: bytes
) -> None:
    """A key file with bytes appended raises TrustError only, hiding the passphrase."""
    assert_refused_without_leak(sealed_for(passphrase, seed) + tail, passphrase)


def test_empty_passphrase_is_refused() -> None:
    """Sealing under an empty passphrase raises TrustError."""
    with pytest.raises(TrustError):
        seal_keyfile(OWNER, b"", limits=LIMITS, rng=DeterministicRng(str(NOW_MS)))
