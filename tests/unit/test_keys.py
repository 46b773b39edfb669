"""Agency identities: key ids, fingerprints, the secret Identity and the public card."""

from __future__ import annotations

import base64
import copy
import hashlib
import pickle
import re

import msgspec
import nkeys  # type: ignore[import-untyped,unused-ignore]
import pytest
from tfkit import NOW_MS, identity

from tfshare.encoding import encode, label, u32
from tfshare.errors import TrustError
from tfshare.keys import (
    Card,
    CardBody,
    Identity,
    enc_binding_message,
    fingerprint,
    kid_enc,
    kid_sig,
    usable_x25519_key,
    verify_card,
    verify_signature,
)

PK = bytes(range(32))


class _RecordingRng:
    """Counter-based randomness that remembers every chunk it handed out."""

    def __init__(self) -> None:
        self.draws: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        chunk = hashlib.sha512(len(self.draws).to_bytes(4, "big")).digest()[:n]
        self.draws.append(chunk)
        return chunk


def _decode_card(data: bytes) -> Card:
    return msgspec.msgpack.decode(data, type=Card)


def _resigned_card(signer: Identity, body: CardBody) -> Card:
    """A card whose self-signature is valid for ``body`` (as a forger holding the key makes it)."""
    body_bytes = encode(body)
    return Card(body=body_bytes, self_sig=signer.sign(label("tfshare/v1/card") + u32(body_bytes)))


def test_kid_sig_is_8_bytes() -> None:
    """kid_sig() is 8 bytes long."""
    assert len(kid_sig(PK)) == 8


def test_kid_enc_is_8_bytes() -> None:
    """kid_enc() is 8 bytes long."""
    assert len(kid_enc(PK)) == 8


def test_kid_sig_follows_the_spec() -> None:
    """kid_sig(pk) = BLAKE2b-256(L("tfshare/v1/kid/sig") || pk)[:8]."""
    expected = hashlib.blake2b(b"tfshare/v1/kid/sig\x00" + PK, digest_size=32).digest()[:8]
    assert kid_sig(PK) == expected


def test_kid_enc_follows_the_spec() -> None:
    """kid_enc(pk) = BLAKE2b-256(L("tfshare/v1/kid/enc") || pk)[:8]."""
    expected = hashlib.blake2b(b"tfshare/v1/kid/enc\x00" + PK, digest_size=32).digest()[:8]
    assert kid_enc(PK) == expected


def test_kid_sig_and_kid_enc_differ_for_the_same_key() -> None:
    """The sign and enc labels separate the two key-id spaces."""
    assert kid_sig(PK) != kid_enc(PK)


def test_fingerprint_is_32_base32_chars_in_8_groups() -> None:
    """The fingerprint is 32 lowercase base32 characters in 8 space-separated groups of 4."""
    fp = fingerprint(PK)
    assert re.fullmatch(r"([a-z2-7]{4} ){7}[a-z2-7]{4}", fp)


def test_fingerprint_follows_the_spec() -> None:
    """fp = lowercase base32 of BLAKE2b-256(L("tfshare/v1/fp") || sign_pk)[:20]."""
    digest = hashlib.blake2b(b"tfshare/v1/fp\x00" + PK, digest_size=32).digest()[:20]
    assert fingerprint(PK).replace(" ", "") == base64.b32encode(digest).decode().lower()


def test_fingerprint_differs_between_keys() -> None:
    """Two different signing keys have different fingerprints."""
    assert fingerprint(PK) != fingerprint(bytes(32))


def test_identity_repr_contains_no_secret_hex() -> None:
    """repr(Identity) shows none of the seeds as hex."""
    ident = identity("police")
    text = repr(ident)
    for secret in ident.secret_material():
        assert secret.hex() not in text
        assert secret.hex()[:16] not in text


def test_identity_repr_contains_no_raw_secret_bytes() -> None:
    """repr(Identity) shows none of the seeds as a bytes literal or latin-1 text."""
    ident = identity("police")
    text = repr(ident)
    for secret in ident.secret_material():
        assert repr(secret)[2:-1] not in text
        assert secret.decode("latin-1") not in text


def test_identity_repr_names_the_agency_and_kid() -> None:
    """repr(Identity) does show the public agency id and signing key id."""
    ident = identity("police")
    assert "police" in repr(ident)
    assert ident.kid_sig.hex() in repr(ident)


def test_identity_str_contains_no_secret_hex() -> None:
    """str(Identity) shows none of the seeds either."""
    ident = identity("police")
    for secret in ident.secret_material():
        assert secret.hex() not in str(ident)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_identity_refuses_pickling(protocol: int) -> None:
    """Pickling an Identity raises TypeError under every protocol."""
    with pytest.raises(TypeError):
        pickle.dumps(identity("police"), protocol=protocol)


def test_identity_refuses_copying() -> None:
    """copy.copy goes through the same refusal as pickle."""
    with pytest.raises(TypeError):
        copy.copy(identity("police"))


def test_identity_requires_32_byte_seeds() -> None:
    """A short seed is refused rather than silently padded."""
    with pytest.raises(ValueError, match="32-byte"):
        Identity(
            agency_id="police",
            display_name="Police",
            sign_seed=b"\x01" * 31,
            enc_sk=b"\x02" * 32,
            nats_seed=b"\x03" * 32,
            created_ms=NOW_MS,
        )


def test_generate_draws_three_independent_seeds() -> None:
    """generate() takes sign, enc and NATS seeds from three separate rng draws."""
    rng = _RecordingRng()
    ident = Identity.generate("police", "Police", rng=rng, now_ms=NOW_MS)
    assert [len(d) for d in rng.draws] == [32, 32, 32]
    assert ident.secret_material() == tuple(rng.draws)


def test_generate_seeds_are_pairwise_distinct() -> None:
    """The three seeds of a generated identity are all different."""
    sign_seed, enc_sk, nats_seed = identity("police").secret_material()
    assert len({sign_seed, enc_sk, nats_seed}) == 3


def test_generate_sign_and_enc_public_keys_differ() -> None:
    """The Ed25519 and X25519 public keys come from different seeds and differ."""
    ident = identity("police")
    assert ident.sign_pk != ident.enc_pk
    assert len(ident.sign_pk) == 32
    assert len(ident.enc_pk) == 32


def test_enc_pk_is_not_derived_from_the_signing_seed() -> None:
    """Changing only the encryption seed changes enc_pk and leaves sign_pk alone."""
    base = identity("police")
    sign_seed, enc_sk, nats_seed = base.secret_material()
    other = Identity(
        agency_id="police",
        display_name="Police",
        sign_seed=sign_seed,
        enc_sk=bytes(b ^ 0xFF for b in enc_sk),
        nats_seed=nats_seed,
        created_ms=NOW_MS,
    )
    assert other.sign_pk == base.sign_pk
    assert other.enc_pk != base.enc_pk


def test_nats_user_is_a_56_char_user_nkey() -> None:
    """nats_user is a NATS user public nkey: "U" followed by 55 base32 characters."""
    user = identity("police").nats_user
    assert user.startswith("U")
    assert len(user) == 56
    assert re.fullmatch(r"U[A-Z2-7]{55}", user)


def test_nats_user_comes_from_the_nats_seed() -> None:
    """nats_user is the public key of the identity's third (NATS) seed."""
    ident = identity("police")
    seed = nkeys.encode_seed(ident.secret_material()[2], nkeys.PREFIX_BYTE_USER)
    assert ident.nats_user == nkeys.from_seed(seed).public_key.decode()


def test_nats_seed_encoded_is_a_user_seed() -> None:
    """The NATS seed in text form starts with "SU" (a user seed)."""
    assert identity("police").nats_seed_encoded().startswith(b"SU")


def test_sign_produces_a_verifiable_64_byte_signature() -> None:
    """Identity.sign output verifies under sign_pk with verify_signature."""
    ident = identity("police")
    sig = ident.sign(b"message")
    assert len(sig) == 64
    assert verify_signature(ident.sign_pk, b"message", sig)


def test_verify_signature_answers_false_for_another_message() -> None:
    """verify_signature returns False (does not raise) for a signature over other bytes."""
    ident = identity("police")
    assert not verify_signature(ident.sign_pk, b"other", ident.sign(b"message"))


def test_verify_signature_answers_false_for_bad_lengths() -> None:
    """verify_signature returns False for a short signature or a short key."""
    ident = identity("police")
    sig = ident.sign(b"message")
    assert not verify_signature(ident.sign_pk, b"message", sig[:63])
    assert not verify_signature(ident.sign_pk[:31], b"message", sig)


def test_card_round_trips_through_verify_card() -> None:
    """An encoded card decodes and verifies to the identity's card body."""
    ident = identity("police")
    body = verify_card(_decode_card(encode(ident.card())))
    assert body == ident.card_body()
    assert body.sign_pk == ident.sign_pk
    assert body.enc_pk == ident.enc_pk
    assert body.nats_user == ident.nats_user


def test_card_contains_no_secret_material() -> None:
    """The encoded card carries none of the identity's seeds."""
    ident = identity("police")
    data = encode(ident.card())
    for secret in ident.secret_material():
        assert secret not in data


def test_card_with_modified_display_name_fails_self_signature() -> None:
    """Changing the display name after signing breaks the card's self-signature."""
    ident = identity("police")
    card = ident.card()
    body = msgspec.msgpack.decode(card.body, type=CardBody)
    forged = Card(
        body=encode(msgspec.structs.replace(body, display_name="Evil Police")),
        self_sig=card.self_sig,
    )
    with pytest.raises(TrustError, match="self-signature"):
        verify_card(forged)


def test_card_with_swapped_enc_key_fails() -> None:
    """Swapping in another encryption key (even with a fresh self-signature) fails the binding."""
    ident = identity("police")
    body = msgspec.structs.replace(ident.card_body(), enc_pk=identity("mallory").enc_pk)
    with pytest.raises(TrustError, match="does not bind"):
        verify_card(_resigned_card(ident, body))


def test_card_with_swapped_enc_key_and_old_self_sig_fails() -> None:
    """Swapping the encryption key without re-signing fails the self-signature."""
    ident = identity("police")
    card = ident.card()
    body = msgspec.structs.replace(ident.card_body(), enc_pk=identity("mallory").enc_pk)
    with pytest.raises(TrustError):
        verify_card(Card(body=encode(body), self_sig=card.self_sig))


def test_card_with_a_degenerate_enc_key_is_refused() -> None:
    """An all-zero encryption key is refused even when signed and bound by the agency."""
    ident = identity("police")
    zero = bytes(32)
    body = msgspec.structs.replace(
        ident.card_body(),
        enc_pk=zero,
        enc_bind_sig=ident.sign(enc_binding_message("police", zero)),
    )
    with pytest.raises(TrustError, match="unusable encryption key"):
        verify_card(_resigned_card(ident, body))


def test_usable_x25519_key_accepts_a_real_key() -> None:
    """A generated X25519 public key is usable."""
    assert usable_x25519_key(identity("police").enc_pk)


def test_usable_x25519_key_refuses_low_order_points() -> None:
    """The all-zero point and the order-1 point (u=1) are not usable."""
    assert not usable_x25519_key(bytes(32))
    assert not usable_x25519_key(b"\x01" + bytes(31))


def test_card_with_renamed_agency_fails_the_binding() -> None:
    """The enc-key binding names the agency: a re-signed card under another id fails."""
    ident = identity("police")
    body = msgspec.structs.replace(ident.card_body(), agency_id="customs")
    with pytest.raises(TrustError, match="does not bind"):
        verify_card(_resigned_card(ident, body))


def test_card_with_non_canonical_body_is_malformed() -> None:
    """A body that is not canonical msgpack is refused as malformed."""
    ident = identity("police")
    body = encode(ident.card_body())
    with pytest.raises(TrustError, match="malformed"):
        verify_card(Card(body=body + b"\x00", self_sig=ident.card().self_sig))


def test_enc_binding_message_names_agency_and_key() -> None:
    """The binding message is L(enc-bind) || u32(agency_id) || enc_pk."""
    assert (
        enc_binding_message("police", PK) == b"tfshare/v1/enc-bind\x00\x00\x00\x00\x06police" + PK
    )
