"""Poison input (issue 11, item 1): inputs that make a libsodium call fail in an unforeseen way.

A member can sign anything. An envelope whose ciphertext is shorter than the AEAD's 16-byte tag
made PyNaCl raise a builtin ``ValueError`` ("negative array length") instead of a
``CryptoError``, and that escaped every receive and verify function; a key file with such a
ciphertext made ``open_keyfile`` fail the same way. These tests build such inputs with real
keys and real signatures and assert the one outcome each must end in, with its code.
"""

from __future__ import annotations

import os

import msgspec
import pytest
from nacl.exceptions import CryptoError
from tfkit import DeterministicRng, TaskForce, build_taskforce, identity

from tfshare import primitives
from tfshare.envelope import Envelope
from tfshare.errors import RejectCode, Rejected, TrustError
from tfshare.keyfile import KDF_PROFILES, open_keyfile, read_keyfile_header, seal_keyfile
from tfshare.messages import MessageType
from tfshare.protocol import Receiver, Rejection
from tfshare.replay import MemoryReplayStore
from tfshare.seal import (
    ReceivePolicy,
    open_with_key,
    payload_key_of,
    signed_message,
    verify_envelope,
)

POLICY = ReceivePolicy()


@pytest.fixture(scope="module")
def tf() -> TaskForce:
    return build_taskforce()


def resigned(tf: TaskForce, data: bytes, *, ct: bytes, sender: str = "police") -> bytes:
    """``data`` with its ciphertext replaced by ``ct``, signed again by ``sender``'s real key."""
    env = msgspec.msgpack.decode(data, type=Envelope)
    sig = tf.ids[sender].sign(signed_message(env.hdr, ct))
    return msgspec.msgpack.encode(Envelope(env.v, env.hdr, ct, sig))


@pytest.mark.parametrize("length", [0, 1, 15])
def test_a_signed_envelope_with_a_ciphertext_shorter_than_the_tag_is_e_decrypt(
    tf: TaskForce, length: int
) -> None:
    """Re-signed by a real member, with 0, 1 or 15 bytes of ciphertext: the receiver refuses
    it with E_DECRYPT (its signature verified, so the rejection says so), nothing escapes."""
    poison = resigned(tf, tf.seal("police").data, ct=bytes(length))
    outcome = tf.receiver("ngo").receive(poison)
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_DECRYPT
    assert outcome.verified


def test_the_verify_functions_refuse_a_short_ciphertext_with_its_code(tf: TaskForce) -> None:
    """verify_envelope checks only the signature (it verifies); payload_key_of, which opens the
    payload to refuse disclosing a key delivery, refuses it with E_DECRYPT; open_with_key with
    the message's K (the header and its wraps are intact) refuses the payload with E_DECRYPT."""
    original = tf.seal("police").data
    poison = resigned(tf, original, ct=b"short")
    roster = tf.trusted()
    verified = verify_envelope(poison, roster=roster, now_ms=tf.now_ms, subject=None, policy=POLICY)
    assert verified.header.sender == "police"
    with pytest.raises(Rejected) as at_source:
        payload_key_of(
            poison, identity=tf.ids["ngo"], roster=roster, now_ms=tf.now_ms, policy=POLICY
        )
    assert at_source.value.reject_code is RejectCode.E_DECRYPT
    key = payload_key_of(
        original, identity=tf.ids["ngo"], roster=roster, now_ms=tf.now_ms, policy=POLICY
    )
    with pytest.raises(Rejected) as refused:
        open_with_key(
            poison, key, roster=roster, schemas=tf.schemas, now_ms=tf.now_ms, policy=POLICY
        )
    assert refused.value.reject_code is RejectCode.E_DECRYPT


def test_every_guarded_primitive_turns_a_builtin_error_into_crypto_error() -> None:
    """The guard itself: input refused below PyNaCl's checks is a CryptoError, and the message
    names the primitive and the exception's type, never the input."""
    with pytest.raises(CryptoError) as short:
        primitives.aead_decrypt(b"secret-ish", b"", bytes(24), bytes(32))
    assert "secret-ish" not in str(short.value)
    assert "ValueError" in str(short.value)
    with pytest.raises(CryptoError):
        primitives.scalarmult(bytes(32), b"not a point")
    with pytest.raises(CryptoError):
        primitives.sign_open(b"x", bytes(32))
    with pytest.raises(CryptoError):
        primitives.aead_encrypt(b"m", b"", bytes(23), bytes(32))


def test_the_guard_lets_a_memory_error_through_as_what_it_is() -> None:
    """Review finding F5: an out-of-memory moment says nothing about the input. Turned into a
    CryptoError it became a verdict (E_DECRYPT on a valid message, acknowledged for good);
    let through, the agent's bounded retries give the message its next chance."""

    def out_of_memory(*_args: object) -> bytes:
        raise MemoryError

    guarded = primitives._guarded(out_of_memory)
    with pytest.raises(MemoryError):
        guarded(b"")

    def refuses_argument(*_args: object) -> bytes:
        raise OverflowError("int too big")

    with pytest.raises(CryptoError):
        primitives._guarded(refuses_argument)(b"")


class ExplodingSchemas:
    """A schema book with a bug: any lookup raises something no check expects."""

    def lookup(self, name: str) -> MessageType | None:
        raise RuntimeError("a bug in the schema book")


def test_receiver_open_turns_an_unexpected_exception_into_e_internal(tf: TaskForce) -> None:
    """The last-resort guard: a fault after the signature check becomes a Rejection with
    E_INTERNAL (naming only the exception type), marked verified, and never a Delivered."""
    receiver = Receiver(
        identity=tf.ids["ngo"],
        roster=tf.trusted(),
        replay=MemoryReplayStore(),
        schemas=ExplodingSchemas(),
        clock=lambda: tf.now_ms,
        policy=POLICY,
    )
    outcome = receiver.receive(tf.seal("police").data)
    assert isinstance(outcome, Rejection)
    assert outcome.code is RejectCode.E_INTERNAL
    assert "RuntimeError" in outcome.reason
    assert "a bug" not in outcome.reason
    assert outcome.verified


def test_an_unsigned_rejection_is_not_verified_and_a_signed_one_is(tf: TaskForce) -> None:
    """``verified`` is what decides receipts: False for a bad signature, True once it held."""
    sealed = tf.seal("police")
    bad_sig = bytearray(sealed.data)
    bad_sig[-1] ^= 1
    outcome = tf.receiver("ngo").receive(bytes(bad_sig))
    assert isinstance(outcome, Rejection) and outcome.code is RejectCode.E_BAD_SIG
    assert not outcome.verified
    replay = MemoryReplayStore()
    tf.receiver("ngo", replay=replay).receive(sealed.data)
    equivocation = resigned(tf, sealed.data, ct=b"other content entirely, same msg_id")
    again = tf.receiver("ngo", replay=replay).receive(equivocation)
    assert isinstance(again, Rejection) and again.code is RejectCode.E_EQUIVOCATION
    assert again.verified


@pytest.mark.parametrize("length", [0, 15])
def test_a_key_file_with_a_ciphertext_shorter_than_the_tag_is_a_trust_error(
    length: int,
) -> None:
    """A key file whose ciphertext is cut below the tag: TrustError (exit 6), like any damaged
    key file, not a ValueError."""
    passphrase = b"correct horse"
    data = seal_keyfile(
        identity("police"),
        passphrase,
        limits=KDF_PROFILES["insecure-test"],
        rng=DeterministicRng("keyfile"),
    )
    header = read_keyfile_header(data)
    cut = msgspec.msgpack.encode(msgspec.structs.replace(header, ct=os.urandom(length)))
    with pytest.raises(TrustError) as refused:
        open_keyfile(cut, passphrase)
    assert refused.value.exit_code == 6
    assert "wrong passphrase, or the file was modified" in refused.value.message
