"""Key file v2 (tfshare-key/2): the state key, retired secrets, and their destruction."""

from __future__ import annotations

import pickle
from typing import Final

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.pwhash import argon2id
from tfkit import NOW_MS, DeterministicRng, identity

from tfshare import primitives
from tfshare.encoding import blake2b_256, encode, label
from tfshare.errors import TrustError
from tfshare.keyfile import (
    KDF_PROFILES,
    KEYFILE_TAG,
    KEYFILE_TAG_V2,
    KeyFile,
    KeyFileV2,
    expire_keyfile,
    expire_keyfile_with,
    identity_without_expired,
    open_keyfile,
    open_keyfile_at,
    read_keyfile_header,
    seal_keyfile,
)
from tfshare.keys import Identity

PASSPHRASE: Final = b"correct horse battery staple"
FAST: Final = KDF_PROFILES["insecure-test"]
GRACE_MS: Final = 7 * 86_400_000
ROTATED_AT: Final = NOW_MS


def _seal(ident: Identity, seed: str = "kf") -> bytes:
    return seal_keyfile(ident, PASSPHRASE, limits=FAST, rng=DeterministicRng(seed))


def _rotated(*, enc: bool = True, sign: bool = False) -> tuple[Identity, Identity]:
    before = identity("police")
    after = before.rotated(
        rng=DeterministicRng("rotate"), now_ms=ROTATED_AT, grace_ms=GRACE_MS, enc=enc, sign=sign
    )
    return before, after


def test_a_key_file_never_rotated_is_still_written_as_v1() -> None:
    """Files made before a first rotation keep opening with every tfshare (v1)."""
    assert read_keyfile_header(_seal(identity("police"))).tag == KEYFILE_TAG


def test_v1_key_file_opens_and_rewrites_as_v2_with_the_same_state_key() -> None:
    v1 = _seal(identity("police"))
    opened = open_keyfile(v1, PASSPHRASE)
    derived = blake2b_256(
        label("tfshare/v1/state-key"), key=identity("police").secret_material()[1]
    )
    assert opened.state_key == derived
    rotated = opened.rotated(rng=DeterministicRng("r"), now_ms=ROTATED_AT, grace_ms=GRACE_MS)
    v2 = _seal(rotated)
    assert read_keyfile_header(v2).tag == KEYFILE_TAG_V2
    reopened = open_keyfile(v2, PASSPHRASE)
    # The encryption key changed; what the agent's state is sealed under did not.
    assert reopened.enc_pk != opened.enc_pk
    assert reopened.state_key == derived


def test_v2_round_trip_keeps_current_and_retired_keys() -> None:
    before, after = _rotated(enc=True, sign=True)
    opened = open_keyfile(_seal(after), PASSPHRASE)
    assert opened.enc_kids == (after.kid_enc, before.kid_enc)
    assert opened.sign_keys_held == (after.sign_pk, before.sign_pk)
    assert opened.secret_material() == after.secret_material()
    assert opened.retired_secrets() == after.retired_secrets()
    assert {(r.kind, r.not_after_ms, r.destroy_after_ms) for r in opened.retired_secrets()} == {
        ("enc", ROTATED_AT, ROTATED_AT + GRACE_MS),
        ("sign", ROTATED_AT, ROTATED_AT + GRACE_MS),
    }
    assert opened.nats_user == before.nats_user
    assert opened.state_key == before.state_key


def test_a_random_state_key_is_kept_in_v2() -> None:
    base = identity("police")
    sign_seed, enc_sk, nats_seed = base.secret_material()
    state_key = DeterministicRng("state")(32)
    ident = Identity(
        agency_id="police",
        display_name="Police",
        sign_seed=sign_seed,
        enc_sk=enc_sk,
        nats_seed=nats_seed,
        created_ms=1,
        state_key=state_key,
    )
    data = _seal(ident)
    assert read_keyfile_header(data).tag == KEYFILE_TAG_V2
    assert open_keyfile(data, PASSPHRASE).state_key == state_key


def test_nothing_is_rewritten_before_the_grace_period_ends() -> None:
    before, after = _rotated()
    data = _seal(after)
    at_edge = open_keyfile_at(
        data, PASSPHRASE, now_ms=ROTATED_AT + GRACE_MS, rng=DeterministicRng("n")
    )
    assert at_edge.rewritten is None
    assert before.kid_enc in at_edge.identity.enc_kids


def test_expired_secrets_are_left_out_of_the_identity_and_the_rewritten_file() -> None:
    before, after = _rotated(enc=True, sign=True)
    data = _seal(after)
    later = ROTATED_AT + GRACE_MS + 1
    opened = open_keyfile_at(data, PASSPHRASE, now_ms=later, rng=DeterministicRng("n"))
    assert opened.identity.enc_kids == (after.kid_enc,)
    assert opened.identity.sign_keys_held == (after.sign_pk,)
    assert opened.rewritten is not None
    reopened = open_keyfile(opened.rewritten, PASSPHRASE)
    assert reopened.enc_kids == (after.kid_enc,)
    assert reopened.retired_secrets() == ()
    assert reopened.state_key == before.state_key
    # The secrets are gone from the bytes, not merely unlisted.
    for secret in (before.secret_material()[0], before.secret_material()[1]):
        assert secret not in opened.rewritten
    assert (
        expire_keyfile(opened.rewritten, PASSPHRASE, now_ms=later, rng=DeterministicRng("x"))
        is None
    )


def test_expire_keyfile_gives_the_rewritten_bytes() -> None:
    _, after = _rotated()
    data = _seal(after)
    later = ROTATED_AT + GRACE_MS + 1
    rewritten = expire_keyfile(data, PASSPHRASE, now_ms=later, rng=DeterministicRng("n"))
    assert rewritten is not None
    assert open_keyfile(rewritten, PASSPHRASE).retired_secrets() == ()


def test_identity_without_expired_keeps_the_chosen_signing_key_while_held() -> None:
    before, after = _rotated(enc=True, sign=True)
    old_signer = after.with_signing_key(before.sign_pk)
    assert identity_without_expired(old_signer, ROTATED_AT) is old_signer
    later = identity_without_expired(old_signer, ROTATED_AT + GRACE_MS + 1)
    assert later.sign_pk == after.sign_pk
    assert later.enc_kids == (after.kid_enc,)


def test_v2_header_changed_to_v1_tag_does_not_open() -> None:
    """The tag is associated data: a v2 file relabelled v1 fails as a modified file."""
    _, after = _rotated()
    data = _seal(after)
    header = msgspec.msgpack.decode(data, type=KeyFileV2)
    relabelled = encode(KeyFile(*(getattr(header, f) for f in header.__struct_fields__)))
    with pytest.raises(TrustError, match="wrong passphrase, or the file was modified"):
        open_keyfile(relabelled, PASSPHRASE)


def _v2_file_with_plaintext(plaintext: bytes) -> bytes:
    """A v2 file whose AEAD opens with PASSPHRASE to ``plaintext`` (any bytes)."""
    rng = DeterministicRng("plain")
    header = KeyFileV2(
        kdf="argon2id",
        opslimit=FAST.opslimit,
        memlimit=FAST.memlimit,
        salt=rng(16),
        nonce=rng(24),
        agency_id="police",
        sign_pk=bytes(32),
        enc_pk=bytes(32),
        ct=b"",
    )
    key = argon2id.kdf(32, PASSPHRASE, header.salt, opslimit=FAST.opslimit, memlimit=FAST.memlimit)
    ct = primitives.aead_encrypt(plaintext, header.associated_data(), header.nonce, key)
    return encode(msgspec.structs.replace(header, ct=ct))


_V2_KEY: Final = _v2_file_with_plaintext(b"")


@given(plaintext=st.binary(max_size=300))
def test_v2_secrets_of_any_bytes_are_refused_with_trust_error_only(plaintext: bytes) -> None:
    """Whatever decrypts (a hostile writer knew the passphrase) opens or raises TrustError."""
    data = _v2_file_with_plaintext(plaintext)
    with pytest.raises(TrustError):
        open_keyfile_at(data, PASSPHRASE, now_ms=NOW_MS, rng=DeterministicRng("n"))


retired_entries: Final = st.lists(
    st.tuples(
        st.sampled_from(["enc", "sign", "other"]),
        st.binary(min_size=31, max_size=33),
        st.integers(0, 2**64 - 1),
        st.integers(-1, 2**64 - 1),
    ),
    max_size=3,
)


@given(
    retired=retired_entries,
    state_key=st.binary(min_size=31, max_size=33),
    extra=st.lists(st.integers(0, 3), max_size=1),
)
def test_v2_secrets_shaped_almost_right_raise_trust_error_only(
    retired: list[tuple[str, bytes, int, int]], state_key: bytes, extra: list[int]
) -> None:
    """Plaintexts close to the v2 layout (bad kinds, lengths, negative times, extra fields)
    open to an identity whose public keys do not match the header, or raise TrustError."""
    sign_seed, enc_sk, nats_seed = identity("police").secret_material()
    plaintext = encode(
        [sign_seed, enc_sk, nats_seed, "Police", 1, state_key, [list(r) for r in retired], *extra]
    )
    with pytest.raises(TrustError):
        open_keyfile(_v2_file_with_plaintext(plaintext), PASSPHRASE)


@given(data=st.binary(max_size=400))
def test_random_bytes_as_a_key_file_raise_trust_error_only(data: bytes) -> None:
    with pytest.raises(TrustError):
        open_keyfile(data, PASSPHRASE)


@given(position=st.integers(0, 10_000), xor=st.integers(1, 255))
def test_a_flipped_byte_of_a_v2_file_raises_trust_error_only(position: int, xor: int) -> None:
    data = bytearray(_ROTATED_FILE)
    data[position % len(data)] ^= xor
    with pytest.raises(TrustError):
        open_keyfile(bytes(data), PASSPHRASE)


_ROTATED_FILE: Final = _seal(_rotated(enc=True, sign=True)[1])


def test_the_file_key_rewrites_without_the_passphrase_and_only_its_own_file() -> None:
    _, after = _rotated()
    data = _seal(after)
    opened = open_keyfile_at(data, PASSPHRASE, now_ms=ROTATED_AT, rng=DeterministicRng("n"))
    later = ROTATED_AT + GRACE_MS + 1
    again = expire_keyfile_with(data, opened.file_key, now_ms=later, rng=DeterministicRng("y"))
    assert again is not None and again.rewritten is not None
    assert open_keyfile(again.rewritten, PASSPHRASE).retired_secrets() == ()
    # A file sealed again since (a new salt: keys rotate) is left to its next opening.
    resealed = _seal(after, seed="other")
    assert (
        expire_keyfile_with(resealed, opened.file_key, now_ms=later, rng=DeterministicRng("z"))
        is None
    )


def test_the_file_key_has_no_secret_repr_and_is_not_pickled() -> None:
    _, after = _rotated()
    opened = open_keyfile_at(_seal(after), PASSPHRASE, now_ms=NOW_MS, rng=DeterministicRng("n"))
    assert repr(opened.file_key) == "FileKey(<secret>)"
    assert "file_key" not in repr(opened)
    with pytest.raises(TypeError):
        pickle.dumps(opened.file_key)
