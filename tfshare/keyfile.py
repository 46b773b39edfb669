"""Passphrase-protected key files: Argon2id stretches the passphrase, XChaCha20-Poly1305 seals.

Owns: the key-file format (``tfshare-key/1``), the Argon2id cost profiles, and the checks that
a file was neither tampered with nor opened with the wrong passphrase.

Every field in front of the ciphertext is associated data, so changing the agency id, the
public keys or the KDF limits makes the file fail to open instead of silently changing meaning.
Decoding bounds the KDF limits first: a crafted file cannot make us allocate terabytes.

Never: touch the disk (``tfshare.files`` writes atomically with mode 0600); include the
passphrase or any seed in an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec
from nacl.exceptions import CryptoError
from nacl.pwhash import argon2id

from tfshare import primitives
from tfshare.encoding import (
    DECODE_ERRORS,
    Bytes16,
    Bytes24,
    Bytes32,
    DisplayName,
    Name,
    Uint,
    decode_canonical,
    encode,
)
from tfshare.errors import TrustError
from tfshare.keys import Identity, Random

KEYFILE_TAG: Final = "tfshare-key/1"


@dataclass(frozen=True)
class KdfLimits:
    """Argon2id cost: opslimit passes over memlimit bytes."""

    opslimit: int
    memlimit: int


# libsodium's named classes; "moderate" is the default (about a second on a laptop).
KDF_PROFILES: Final = {
    "interactive": KdfLimits(argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
    "moderate": KdfLimits(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
    "sensitive": KdfLimits(argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
    # For tests and throwaway demos only: the smallest cost libsodium allows.
    "insecure-test": KdfLimits(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN),
}
DEFAULT_KDF: Final = "moderate"

# A passphrase shorter than this is refused when a key file is created (unless the person
# says --allow-weak-passphrase): Argon2id slows each guess, it cannot make 8 characters strong.
MIN_PASSPHRASE_CHARS: Final = 12

# A file may ask for at most this much work; more is refused before any allocation.
MAX_OPSLIMIT: Final = 16
MAX_MEMLIMIT: Final = argon2id.MEMLIMIT_SENSITIVE


def passphrase_problem(passphrase: bytes) -> str | None:
    """Why ``passphrase`` is too weak to protect a new key file, or None. Counted in
    characters (UTF-8), so a passphrase in any script is judged by what was typed."""
    if len(passphrase.decode("utf-8", errors="replace")) < MIN_PASSPHRASE_CHARS:
        # Its length is not said: even that narrows a guesser's search.
        return f"the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters"
    return None


def is_test_cost(limits: KdfLimits) -> bool:
    """Whether a key file's Argon2id cost is below every profile meant for real keys (the
    ``insecure-test`` profile is): its passphrase can be guessed quickly by whoever copies it."""
    weakest = KDF_PROFILES["interactive"]
    return limits.opslimit < weakest.opslimit or limits.memlimit < weakest.memlimit


class KeyFile(
    msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True, tag=KEYFILE_TAG
):
    """The key file as stored; everything before ``ct`` is the AEAD's associated data."""

    kdf: str
    opslimit: Uint
    memlimit: Uint
    salt: Bytes16
    nonce: Bytes24
    agency_id: Name
    sign_pk: Bytes32
    enc_pk: Bytes32
    ct: bytes

    @property
    def limits(self) -> KdfLimits:
        return KdfLimits(self.opslimit, self.memlimit)

    def associated_data(self) -> bytes:
        """The canonical encoding of every field in front of ``ct`` (tag included)."""
        return encode(
            [
                KEYFILE_TAG,
                self.kdf,
                self.opslimit,
                self.memlimit,
                self.salt,
                self.nonce,
                self.agency_id,
                self.sign_pk,
                self.enc_pk,
            ]
        )


class _Secrets(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    sign_seed: Bytes32
    enc_sk: Bytes32
    nats_seed: Bytes32
    display_name: DisplayName
    created_ms: Uint


_keyfile_decoder: Final = msgspec.msgpack.Decoder(KeyFile)
_secrets_decoder: Final = msgspec.msgpack.Decoder(_Secrets)


def _stretch(passphrase: bytes, salt: bytes, limits: KdfLimits) -> bytes:
    key: bytes = argon2id.kdf(
        32, passphrase, salt, opslimit=limits.opslimit, memlimit=limits.memlimit
    )
    return key


def seal_keyfile(identity: Identity, passphrase: bytes, *, limits: KdfLimits, rng: Random) -> bytes:
    """Encrypt ``identity`` under ``passphrase``; returns the key file's bytes."""
    if not passphrase:
        raise TrustError("the passphrase is empty", hint="choose a passphrase of a few words")
    sign_seed, enc_sk, nats_seed = identity.secret_material()
    header = KeyFile(
        kdf="argon2id",
        opslimit=limits.opslimit,
        memlimit=limits.memlimit,
        salt=rng(16),
        nonce=rng(24),
        agency_id=identity.agency_id,
        sign_pk=identity.sign_pk,
        enc_pk=identity.enc_pk,
        ct=b"",
    )
    plaintext = encode(
        _Secrets(sign_seed, enc_sk, nats_seed, identity.display_name, identity.created_ms)
    )
    key = _stretch(passphrase, header.salt, limits)
    ct = primitives.aead_encrypt(plaintext, header.associated_data(), header.nonce, key)
    return encode(msgspec.structs.replace(header, ct=ct))


def read_keyfile_header(data: bytes) -> KeyFile:
    """Decode a key file without the passphrase (for ``keys show`` of public parts)."""
    try:
        keyfile = decode_canonical(data, _keyfile_decoder)
    except DECODE_ERRORS:
        raise TrustError(
            "this is not a tfshare key file, or it is damaged",
            hint="give the AGENCY.key file that 'tfshare keys init' wrote",
        ) from None
    if keyfile.kdf != "argon2id":
        raise TrustError(
            f"the key file uses an unknown KDF {keyfile.kdf!r}",
            hint="this key file was written by a newer tfshare; upgrade",
        )
    if not (
        argon2id.OPSLIMIT_MIN <= keyfile.opslimit <= MAX_OPSLIMIT
        and argon2id.MEMLIMIT_MIN <= keyfile.memlimit <= MAX_MEMLIMIT
    ):
        raise TrustError(
            "the key file asks for Argon2id limits outside the allowed range",
            hint="the file is damaged or not from tfshare; restore it from your backup",
        )
    return keyfile


def open_keyfile(data: bytes, passphrase: bytes) -> Identity:
    """Decrypt a key file. A wrong passphrase and a tampered file fail the same way."""
    keyfile = read_keyfile_header(data)
    key = _stretch(passphrase, keyfile.salt, KdfLimits(keyfile.opslimit, keyfile.memlimit))
    try:
        plaintext = primitives.aead_decrypt(
            keyfile.ct, keyfile.associated_data(), keyfile.nonce, key
        )
        secrets = decode_canonical(plaintext, _secrets_decoder)
    except (CryptoError, *DECODE_ERRORS):
        raise TrustError(
            f"cannot open the key file of {keyfile.agency_id!r}: wrong passphrase, or the file "
            "was modified",
            hint="check the passphrase; if it is right, restore the key file from your backup",
        ) from None
    identity = Identity(
        agency_id=keyfile.agency_id,
        display_name=secrets.display_name,
        sign_seed=secrets.sign_seed,
        enc_sk=secrets.enc_sk,
        nats_seed=secrets.nats_seed,
        created_ms=secrets.created_ms,
    )
    if identity.sign_pk != keyfile.sign_pk or identity.enc_pk != keyfile.enc_pk:
        # Only a writer that knew the passphrase can get here: a buggy or hostile tool.
        raise TrustError(
            "the key file's public keys do not match its secret keys",
            hint="restore the key file from your backup",
        )
    return identity
