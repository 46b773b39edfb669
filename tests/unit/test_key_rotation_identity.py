"""Identity after a key rotation: several encryption and signing keys, a stable state key."""

from __future__ import annotations

import pickle

import pytest
from tfkit import DeterministicRng

from tfshare import primitives
from tfshare.encoding import blake2b_256, label
from tfshare.keys import Identity, kid_enc, kid_sig, verify_signature


def _seeds(tag: str, n: int) -> list[bytes]:
    rng = DeterministicRng(tag)
    return [rng(32) for _ in range(n)]


def _rotated() -> tuple[Identity, list[bytes]]:
    s = _seeds("rotated", 6)
    ident = Identity(
        agency_id="police",
        display_name="Police",
        sign_seed=s[0],
        enc_sk=s[1],
        nats_seed=s[2],
        created_ms=1,
        retired_enc=[(s[3], 1_000)],
        retired_sign=[(s[4], 1_000, 500)],
    )
    return ident, s


def test_enc_kids_lists_the_current_key_first_then_the_retired_one() -> None:
    ident, s = _rotated()
    old_pk = primitives.scalarmult_base(s[3])
    assert ident.enc_kids == (ident.kid_enc, kid_enc(old_pk))
    assert ident.enc_pk_of(kid_enc(old_pk)) == old_pk
    assert ident.enc_pk_of(ident.kid_enc) == ident.enc_pk


def test_x25519_kid_uses_the_secret_of_that_key() -> None:
    ident, s = _rotated()
    peer_sk = _seeds("peer", 1)[0]
    peer_pk = primitives.scalarmult_base(peer_sk)
    old_pk = primitives.scalarmult_base(s[3])
    assert ident.x25519_kid(kid_enc(old_pk), peer_pk) == primitives.scalarmult(peer_sk, old_pk)
    assert ident.x25519_kid(ident.kid_enc, peer_pk) == ident.x25519(peer_pk)


def test_x25519_kid_of_a_key_not_held_is_a_key_error() -> None:
    ident, _ = _rotated()
    with pytest.raises(KeyError):
        ident.x25519_kid(bytes(8), ident.enc_pk)
    with pytest.raises(KeyError):
        ident.enc_pk_of(bytes(8))


def test_state_key_is_derived_from_the_encryption_secret_when_not_given() -> None:
    ident, s = _rotated()
    assert ident.state_key == blake2b_256(label("tfshare/v1/state-key"), key=s[1])
    given = Identity(
        agency_id="police",
        display_name="Police",
        sign_seed=s[0],
        enc_sk=s[1],
        nats_seed=s[2],
        created_ms=1,
        state_key=s[5],
    )
    assert given.state_key == s[5]


def test_signing_uses_the_newest_key_unless_another_held_one_is_chosen() -> None:
    ident, _ = _rotated()
    newest, older = ident.sign_keys_held
    assert ident.sign_pk == newest
    older_identity = ident.with_signing_key(older)
    assert older_identity.sign_pk == older
    assert older_identity.kid_sig == kid_sig(older)
    assert verify_signature(older, b"m", older_identity.sign(b"m"))
    assert not verify_signature(newest, b"m", older_identity.sign(b"m"))
    # The chosen key changes nothing the key file stores.
    assert older_identity.secret_material() == ident.secret_material()
    assert older_identity.retired_secrets() == ident.retired_secrets()
    assert older_identity.state_key == ident.state_key


def test_with_signing_key_refuses_a_key_not_held() -> None:
    ident, _ = _rotated()
    with pytest.raises(KeyError):
        ident.with_signing_key(bytes(32))


def test_repr_and_pickling_never_carry_the_retired_secrets() -> None:
    ident, s = _rotated()
    for text in (repr(ident), repr(ident.retired_secrets())):
        for secret in s:
            assert secret.hex() not in text
            assert repr(secret) not in text
    with pytest.raises(TypeError):
        pickle.dumps(ident)
    with pytest.raises(TypeError):
        pickle.dumps(ident.retired_secrets()[0])


def test_signing_with_listed_picks_the_newest_held_key_the_roster_lists() -> None:
    ident, _ = _rotated()
    newest, older = ident.sign_keys_held
    assert ident.signing_with_listed([older]).sign_pk == older
    assert ident.signing_with_listed([older, newest]).sign_pk == newest
    assert ident.signing_with_listed({newest}).sign_pk == newest
    assert ident.signing_with_listed([bytes(32)]) is ident
