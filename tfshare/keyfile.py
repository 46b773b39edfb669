"""Passphrase-protected key files: Argon2id stretches the passphrase, XChaCha20-Poly1305 seals.

Owns: the key-file formats (``tfshare-key/1``, and ``tfshare-key/2``, which adds the state key
and the secrets a rotation retired), the Argon2id cost profiles, the checks that a file was
neither tampered with nor opened with the wrong passphrase, and the destruction of retired
secrets once their ``destroy_after_ms`` passed (``open_keyfile_at`` / ``expire_keyfile``),
except those whose public key the caller says to ``keep`` (the keys the roster in force still
lists as the agency's: a rotation the coordinators have not applied yet).

Every field in front of the ciphertext is associated data, so changing the agency id, the
public keys or the KDF limits makes the file fail to open instead of silently changing meaning.
Decoding bounds the KDF limits first: a crafted file cannot make us allocate terabytes.

Never: touch the disk (``tfshare.files`` writes atomically with mode 0600); include the
passphrase or any seed in an error.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

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
from tfshare.keys import Identity, Random, RetiredSecret, retired_specs

KEYFILE_TAG: Final = "tfshare-key/1"
KEYFILE_TAG_V2: Final = "tfshare-key/2"
KEYFILE_TAGS: Final = (KEYFILE_TAG, KEYFILE_TAG_V2)

# A key file holds at most this many retired secrets: far more than any grace period leaves
# (one rotation a day with the longest grace, 90 days, keeps 90 enc + 90 sign). Bounded so a
# decoded file's size is.
MAX_RETIRED: Final = 256


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

    @property
    def tag(self) -> str:
        """The file's kind-and-version tag (``tfshare-key/1`` or ``/2``)."""
        tag: str = self.__struct_config__.tag  # type: ignore[assignment]
        return tag

    def associated_data(self) -> bytes:
        """The canonical encoding of every field in front of ``ct`` (tag included)."""
        return encode(
            [
                self.tag,
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


class KeyFileV2(KeyFile, tag=KEYFILE_TAG_V2, frozen=True):
    """``tfshare-key/2``: the same header (``sign_pk``/``enc_pk`` are the current keys); its
    plaintext is ``_SecretsV2``."""


class _Secrets(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    sign_seed: Bytes32
    enc_sk: Bytes32
    nats_seed: Bytes32
    display_name: DisplayName
    created_ms: Uint


class _Retired(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    kind: Literal["enc", "sign"]
    secret: Bytes32
    not_after_ms: Uint
    destroy_after_ms: Uint


class _SecretsV2(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    sign_seed: Bytes32
    enc_sk: Bytes32
    nats_seed: Bytes32
    display_name: DisplayName
    created_ms: Uint
    state_key: Bytes32
    retired: Annotated[list[_Retired], msgspec.Meta(max_length=MAX_RETIRED)]


_keyfile_decoder: Final = msgspec.msgpack.Decoder(KeyFileV2 | KeyFile)
_secrets_decoder: Final = msgspec.msgpack.Decoder(_Secrets)
_secrets_v2_decoder: Final = msgspec.msgpack.Decoder(_SecretsV2)


def _stretch(passphrase: bytes, salt: bytes, limits: KdfLimits) -> bytes:
    key: bytes = argon2id.kdf(
        32, passphrase, salt, opslimit=limits.opslimit, memlimit=limits.memlimit
    )
    return key


def seal_keyfile(identity: Identity, passphrase: bytes, *, limits: KdfLimits, rng: Random) -> bytes:
    """Encrypt ``identity`` under ``passphrase``; returns the key file's bytes.

    Written as ``tfshare-key/1`` while the identity holds nothing that version cannot say (no
    retired secret, the state key derived from the encryption key, as a v1 reader derives it),
    so key files made before a first rotation open with every tfshare; else ``tfshare-key/2``.
    """
    if not passphrase:
        raise TrustError("the passphrase is empty", hint="choose a passphrase of a few words")
    header_type: type[KeyFile] = KeyFile if _fits_v1(identity) else KeyFileV2
    header = header_type(
        kdf="argon2id",
        opslimit=limits.opslimit,
        memlimit=limits.memlimit,
        salt=rng(16),
        nonce=rng(24),
        agency_id=identity.agency_id,
        sign_pk=identity.sign_keys_held[0],
        enc_pk=identity.enc_pk,
        ct=b"",
    )
    key = _stretch(passphrase, header.salt, limits)
    return _seal_with(header, key, identity)


def _fits_v1(identity: Identity) -> bool:
    derived = Identity(
        agency_id=identity.agency_id,
        display_name=identity.display_name,
        sign_seed=identity.secret_material()[0],
        enc_sk=identity.secret_material()[1],
        nats_seed=identity.secret_material()[2],
        created_ms=identity.created_ms,
    )
    return not identity.retired_secrets() and derived.state_key == identity.state_key


def _plaintext(identity: Identity, header: KeyFile) -> bytes:
    sign_seed, enc_sk, nats_seed = identity.secret_material()
    if header.tag == KEYFILE_TAG:
        return encode(
            _Secrets(sign_seed, enc_sk, nats_seed, identity.display_name, identity.created_ms)
        )
    retired = [
        _Retired(r.kind, r.secret, r.not_after_ms, r.destroy_after_ms)
        for r in identity.retired_secrets()
    ]
    if len(retired) > MAX_RETIRED:
        # A reader refuses more (a bound on what a crafted file makes it decode): never write
        # a file that would then not open at all.
        raise TrustError(
            f"the key file would hold {len(retired)} retired secrets; at most {MAX_RETIRED} fit",
            hint="wait until older secrets pass their grace period, or rotate with a shorter "
            "--grace",
        )
    return encode(
        _SecretsV2(
            sign_seed,
            enc_sk,
            nats_seed,
            identity.display_name,
            identity.created_ms,
            identity.state_key,
            retired,
        )
    )


def _seal_with(header: KeyFile, key: bytes, identity: Identity) -> bytes:
    ct = primitives.aead_encrypt(
        _plaintext(identity, header), header.associated_data(), header.nonce, key
    )
    return encode(msgspec.structs.replace(header, ct=ct))


def read_keyfile_header(data: bytes) -> KeyFile:
    """Decode a key file without the passphrase (for ``keys show`` of public parts)."""
    try:
        keyfile: KeyFile = decode_canonical(data, _keyfile_decoder)
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


class FileKey:
    """The Argon2id output a key file was opened with, tied to that file's salt and cost: an
    agent that stays up for weeks (and does not keep the passphrase) rewrites its key file with
    it when a retired secret's time is over (``expire_keyfile_with``). Secret: no repr of the
    key, never pickled."""

    __slots__ = ("_key", "limits", "salt")

    def __init__(self, key: bytes, salt: bytes, limits: KdfLimits) -> None:
        self._key = key
        self.salt = salt
        self.limits = limits

    def __repr__(self) -> str:
        return "FileKey(<secret>)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a key file's key cannot be pickled")

    def fits(self, header: KeyFile) -> bool:
        return header.salt == self.salt and header.limits == self.limits


@dataclass(frozen=True)
class OpenedKeyFile:
    """A key file opened at a given time: the identity without the secrets whose
    ``destroy_after_ms`` passed, the file's new bytes without them (None when nothing
    expired: the file stays as it is), and the key that opened it."""

    identity: Identity
    rewritten: bytes | None = field(repr=False)
    file_key: FileKey = field(repr=False)


def open_keyfile(data: bytes, passphrase: bytes) -> Identity:
    """Decrypt a key file (every secret it holds). A wrong passphrase and a tampered file
    fail the same way."""
    header = read_keyfile_header(data)
    return _open_with(header, _stretch(passphrase, header.salt, header.limits))


def open_keyfile_at(
    data: bytes, passphrase: bytes, *, now_ms: int, rng: Random, keep: Collection[bytes] = ()
) -> OpenedKeyFile:
    """Decrypt a key file as of ``now_ms``: retired secrets whose ``destroy_after_ms`` is before
    ``now_ms`` (and whose public key is not in ``keep``) are left out of the identity and out
    of ``rewritten``, the file to write in its place (same passphrase, salt and cost; a fresh
    nonce from ``rng``). One Argon2id run."""
    header = read_keyfile_header(data)
    file_key = FileKey(_stretch(passphrase, header.salt, header.limits), header.salt, header.limits)
    return _opened_at(header, file_key, now_ms, rng, keep)


def open_keyfile_keeping_all(data: bytes, passphrase: bytes) -> OpenedKeyFile:
    """Decrypt a key file with every secret it holds, expired or not, and the key that opened
    it: for a caller that learns only afterwards (from the roster) which secrets it must keep,
    and then destroys the others with ``expire_keyfile_with``. One Argon2id run."""
    header = read_keyfile_header(data)
    file_key = FileKey(_stretch(passphrase, header.salt, header.limits), header.salt, header.limits)
    return OpenedKeyFile(_open_with(header, file_key._key), None, file_key)


def expire_keyfile(
    data: bytes, passphrase: bytes, *, now_ms: int, rng: Random, keep: Collection[bytes] = ()
) -> bytes | None:
    """The key file rewritten without the secrets whose ``destroy_after_ms`` passed (except
    those of ``keep``), or None if none did."""
    return open_keyfile_at(data, passphrase, now_ms=now_ms, rng=rng, keep=keep).rewritten


def expire_keyfile_with(
    data: bytes, file_key: FileKey, *, now_ms: int, rng: Random, keep: Collection[bytes] = ()
) -> OpenedKeyFile | None:
    """``open_keyfile_at`` with the key a previous opening kept (no passphrase, no Argon2id).
    None when ``data`` is no longer the file that key opens (re-sealed since, by ``keys
    rotate``): its next opening with the passphrase destroys what expired."""
    header = read_keyfile_header(data)
    if not file_key.fits(header):
        return None
    return _opened_at(header, file_key, now_ms, rng, keep)


def _opened_at(
    header: KeyFile, file_key: FileKey, now_ms: int, rng: Random, keep: Collection[bytes]
) -> OpenedKeyFile:
    identity = _open_with(header, file_key._key)
    kept = identity_without_expired(identity, now_ms, keep=keep)
    if kept is identity:
        return OpenedKeyFile(identity, None, file_key)
    rewritten_header = KeyFileV2(
        kdf=header.kdf,
        opslimit=header.opslimit,
        memlimit=header.memlimit,
        salt=header.salt,
        nonce=rng(24),
        agency_id=header.agency_id,
        sign_pk=header.sign_pk,
        enc_pk=header.enc_pk,
        ct=b"",
    )
    return OpenedKeyFile(kept, _seal_with(rewritten_header, file_key._key, kept), file_key)


def identity_without_expired(
    identity: Identity, now_ms: int, *, keep: Collection[bytes] = ()
) -> Identity:
    """``identity`` without the retired secrets whose ``destroy_after_ms`` is before ``now_ms``
    (the same object when none is): what an agent that stays up keeps in memory. A secret
    whose public key is in ``keep`` stays whatever its time: the roster in force still lists
    that key as the agency's (its rotation is not applied), so senders still use it."""
    retired = identity.retired_secrets()
    kept = [r for r in retired if r.destroy_after_ms >= now_ms or r.public_key in keep]
    if len(kept) == len(retired):
        return identity
    return _rebuilt(identity, kept)


def _rebuilt(identity: Identity, retired: list[RetiredSecret]) -> Identity:
    sign_seed, enc_sk, nats_seed = identity.secret_material()
    rebuilt = Identity(
        agency_id=identity.agency_id,
        display_name=identity.display_name,
        sign_seed=sign_seed,
        enc_sk=enc_sk,
        nats_seed=nats_seed,
        created_ms=identity.created_ms,
        state_key=identity.state_key,
        retired_enc=retired_specs(retired, "enc"),
        retired_sign=retired_specs(retired, "sign"),
    )
    # Keep signing with the key that was chosen, while it is still held.
    if identity.sign_pk in rebuilt.sign_keys_held:
        return rebuilt.with_signing_key(identity.sign_pk)
    return rebuilt


def _open_with(keyfile: KeyFile, key: bytes) -> Identity:
    wrong = TrustError(
        f"cannot open the key file of {keyfile.agency_id!r}: wrong passphrase, or the file "
        "was modified",
        hint="check the passphrase; if it is right, restore the key file from your backup",
    )
    try:
        plaintext = primitives.aead_decrypt(
            keyfile.ct, keyfile.associated_data(), keyfile.nonce, key
        )
        if keyfile.tag == KEYFILE_TAG:
            v1 = decode_canonical(plaintext, _secrets_decoder)
            secrets = _SecretsV2(
                v1.sign_seed, v1.enc_sk, v1.nats_seed, v1.display_name, v1.created_ms, b"", []
            )
        else:
            secrets = decode_canonical(plaintext, _secrets_v2_decoder)
    except (CryptoError, *DECODE_ERRORS):
        raise wrong from None
    identity = Identity(
        agency_id=keyfile.agency_id,
        display_name=secrets.display_name,
        sign_seed=secrets.sign_seed,
        enc_sk=secrets.enc_sk,
        nats_seed=secrets.nats_seed,
        created_ms=secrets.created_ms,
        # v1: derived from enc_sk (Identity's default), and kept as is from then on.
        state_key=secrets.state_key or None,
        retired_enc=retired_specs(secrets.retired, "enc"),
        retired_sign=retired_specs(secrets.retired, "sign"),
    )
    if identity.sign_pk != keyfile.sign_pk or identity.enc_pk != keyfile.enc_pk:
        # Only a writer that knew the passphrase can get here: a buggy or hostile tool.
        raise TrustError(
            "the key file's public keys do not match its secret keys",
            hint="restore the key file from your backup",
        )
    return identity
