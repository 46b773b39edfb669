"""The one guard around libsodium: every primitive tfshare calls fails only with ``CryptoError``.

Owns: the libsodium calls of the core (AEAD encrypt and decrypt, X25519, Ed25519 sign and
verify, key pairs from seeds), each behind ``_guarded``, which turns whatever else the binding
raises into a ``CryptoError``.

Why: PyNaCl checks some arguments itself (raising its own ``TypeError``/``ValueError``, which
are ``CryptoError`` subclasses) and passes others straight to cffi, which raises builtin
exceptions -- an AEAD ciphertext shorter than the 16-byte tag makes
``crypto_aead_xchacha20poly1305_ietf_decrypt`` raise a builtin ``ValueError`` ("negative array
length"). Every caller already turns ``CryptoError`` into its refusal (a ``RejectCode``, a
``TrustError``); with this guard, no input that reaches a primitive can make anything else
escape, whichever field of a signed envelope or key file it came from. Callers import these
functions instead of ``nacl.bindings``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from nacl import bindings
from nacl.exceptions import CryptoError

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(primitive: Callable[_P, _R]) -> Callable[_P, _R]:
    """``primitive`` that raises ``CryptoError`` (or a subclass) and nothing else."""

    @functools.wraps(primitive)
    def call(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return primitive(*args, **kwargs)
        except CryptoError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:
            # The argument was refused below PyNaCl's own checks (cffi's ValueError, say).
            # Only the exception's type is kept: its text could quote an argument. Nothing
            # else is caught: a MemoryError says nothing about the input, and turning it into
            # a verdict would refuse a valid message for good (the caller retries it).
            raise CryptoError(
                f"{primitive.__name__} refused its input ({type(exc).__name__})"
            ) from None

    return call


def _exact(name: str, value: bytes, size: int) -> None:
    # PyNaCl passes these straight to libsodium, which reads exactly ``size`` bytes: a shorter
    # buffer would be read past its end, so its length is checked here, before the C call.
    if not isinstance(value, bytes) or len(value) != size:
        raise CryptoError(f"{name} must be {size} bytes")


aead_encrypt: Callable[[bytes, bytes | None, bytes, bytes], bytes] = _guarded(
    bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
)
"""XChaCha20-Poly1305 (IETF): ``aead_encrypt(message, aad, nonce, key)``."""

aead_decrypt: Callable[[bytes, bytes | None, bytes, bytes], bytes] = _guarded(
    bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
)
"""``aead_decrypt(ciphertext, aad, nonce, key)``; ``CryptoError`` if it does not open."""


@_guarded
def scalarmult(secret: bytes, public: bytes) -> bytes:
    """X25519(secret, public); ``CryptoError`` for a point libsodium refuses."""
    _exact("an X25519 secret key", secret, bindings.crypto_scalarmult_SCALARBYTES)
    _exact("an X25519 public key", public, bindings.crypto_scalarmult_BYTES)
    shared: bytes = bindings.crypto_scalarmult(secret, public)
    return shared


@_guarded
def scalarmult_base(secret: bytes) -> bytes:
    """The X25519 public key of a secret key."""
    _exact("an X25519 secret key", secret, bindings.crypto_scalarmult_SCALARBYTES)
    public: bytes = bindings.crypto_scalarmult_base(secret)
    return public


@_guarded
def sign(message: bytes, secret_key: bytes) -> bytes:
    """Ed25519: signature || message (combined form)."""
    _exact("an Ed25519 secret key", secret_key, bindings.crypto_sign_SECRETKEYBYTES)
    signed: bytes = bindings.crypto_sign(message, secret_key)
    return signed


@_guarded
def sign_open(signed: bytes, public_key: bytes) -> bytes:
    """Verify signature || message with a public key; ``CryptoError`` if it does not verify."""
    _exact("an Ed25519 public key", public_key, bindings.crypto_sign_PUBLICKEYBYTES)
    message: bytes = bindings.crypto_sign_open(signed, public_key)
    return message


sign_seed_keypair: Callable[[bytes], tuple[bytes, bytes]] = _guarded(
    bindings.crypto_sign_seed_keypair
)
"""(public key, secret key) of an Ed25519 seed."""
