"""Property tests of the audit log: proofs from random trees verify, any damage is refused, and
hostile note or checkpoint bytes are answered with NoteError and nothing else.

``verify_*`` must refuse with ``ProofError`` and ``open_note``/``Checkpoint.parse`` with
``NoteError``; any other exception type escapes the CLI's error handling and is a bug.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from tfshare.audit import merkle
from tfshare.audit.merkle import ProofCode, ProofError, verify_consistency, verify_inclusion
from tfshare.audit.note import (
    Checkpoint,
    NoteError,
    NoteSigner,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
)
from tfshare.audit.tree import MemorySubtreeStore, MerkleLog

SIGNER: Final = NoteSigner("tfshare/nl-north/audit", hashlib.sha256(b"property key").digest())
VERIFIERS: Final = [SIGNER.verifier]
NOTE: Final = sign_note("tfshare/nl-north/audit\n7\n" + "A" * 43 + "=\n", [SIGNER])

entries_st = st.lists(st.binary(max_size=6), min_size=1, max_size=48)


def build(entries: list[bytes]) -> MerkleLog:
    log = MerkleLog(MemorySubtreeStore())
    for entry in entries:
        log.append(entry)
    return log


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- Merkle proofs -----------------------------------------------------------------------------


@given(entries=entries_st)
def test_every_inclusion_proof_of_a_random_tree_verifies(entries: list[bytes]) -> None:
    """For every entry of a random tree, the log's proof equals the reference and verifies."""
    log = build(entries)
    size, root = len(entries), merkle.root(entries)
    assert log.root() == root
    for index, entry in enumerate(entries):
        proof = log.inclusion_proof(index)
        assert proof == merkle.inclusion_proof(entries, index)
        verify_inclusion(merkle.leaf_hash(entry), index, size, proof, root)


@given(entries=entries_st)
def test_every_consistency_proof_of_a_random_tree_verifies(entries: list[bytes]) -> None:
    """From every earlier size of a random tree to its full size, the proof verifies."""
    log = build(entries)
    size, root = len(entries), log.root()
    for old in range(1, size + 1):
        proof = log.consistency_proof(old)
        assert proof == merkle.consistency_proof(entries, old)
        verify_consistency(old, size, merkle.root(entries[:old]), root, proof)


@given(entries=entries_st, data=st.data())
def test_any_single_bit_flip_breaks_an_inclusion_proof(
    entries: list[bytes], data: st.DataObject
) -> None:
    """One flipped bit anywhere in leaf hash, proof or root: E_PROOF_ROOT."""
    log = build(entries)
    index = data.draw(st.integers(0, len(entries) - 1), label="index")
    proof = log.inclusion_proof(index)
    parts = [log.leaf_hash(index), *proof, log.root()]
    target = data.draw(st.integers(0, len(parts) - 1), label="target")
    bit = data.draw(st.integers(0, 255), label="bit")
    parts[target] = flip(parts[target], bit)
    with pytest.raises(ProofError) as excinfo:
        verify_inclusion(parts[0], index, len(entries), parts[1:-1], parts[-1])
    assert excinfo.value.code == ProofCode.E_PROOF_ROOT


@given(entries=entries_st.filter(lambda e: len(e) >= 2), data=st.data())
def test_any_single_bit_flip_breaks_a_consistency_proof(
    entries: list[bytes], data: st.DataObject
) -> None:
    """One flipped bit anywhere in old root, proof or new root: E_PROOF_ROOT."""
    log = build(entries)
    size = len(entries)
    old = data.draw(st.integers(1, size - 1), label="old")
    parts = [log.root_at(old), *log.consistency_proof(old), log.root()]
    target = data.draw(st.integers(0, len(parts) - 1), label="target")
    bit = data.draw(st.integers(0, 255), label="bit")
    parts[target] = flip(parts[target], bit)
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(old, size, parts[0], parts[-1], parts[1:-1])
    assert excinfo.value.code == ProofCode.E_PROOF_ROOT


@given(entries=entries_st, data=st.data())
def test_a_proof_never_proves_another_position(entries: list[bytes], data: st.DataObject) -> None:
    """A valid proof checked for another index is refused (entries are distinct here)."""
    assume(len(set(entries)) == len(entries) >= 2)
    log = build(entries)
    index = data.draw(st.integers(0, len(entries) - 1), label="index")
    other = data.draw(st.integers(0, len(entries) - 1).filter(lambda i: i != index), label="other")
    with pytest.raises(ProofError):
        verify_inclusion(
            log.leaf_hash(index), other, len(entries), log.inclusion_proof(index), log.root()
        )


@given(
    leaf=st.binary(),
    index=st.integers(-(2**65), 2**65),
    size=st.integers(-(2**65), 2**65),
    proof=st.lists(st.binary(max_size=40), max_size=70),
    root=st.binary(max_size=40),
)
def test_arbitrary_inclusion_inputs_raise_only_proof_error(
    leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
) -> None:
    """Garbage in any argument is refused with ProofError, never another exception."""
    with pytest.raises(ProofError):
        verify_inclusion(leaf, index, size, proof, root)


@given(
    old=st.integers(-(2**65), 2**65),
    new=st.integers(-(2**65), 2**65),
    proof=st.lists(st.binary(min_size=32, max_size=32), max_size=70),
    roots=st.tuples(st.binary(min_size=31, max_size=33), st.binary(min_size=31, max_size=33)),
)
def test_arbitrary_consistency_inputs_raise_only_proof_error(
    old: int, new: int, proof: list[bytes], roots: tuple[bytes, bytes]
) -> None:
    """Random sizes, roots and proofs: refused with ProofError (a random match is 2^-256)."""
    # The one acceptable input: equal non-zero sizes, no proof, the same 32-byte root twice.
    assume(not (old == new and 0 < old < 2**64 and not proof and roots[0] == roots[1]))
    with pytest.raises(ProofError):
        verify_consistency(old, new, roots[0], roots[1], proof)


# --- signed notes ------------------------------------------------------------------------------


@given(data=st.binary(max_size=600))
@example(data=b"")
@example(data=b"\n\n")
@example(data=b"x\n\n\xe2\x80\x94 a AAAAAAA=\n")
@example(data=b"x\n\n\xe2\x80\x94 a \n")
@example(data=b"x\n\n\xe2\x80\x94  \n")
def test_random_bytes_as_a_note_raise_only_note_error(data: bytes) -> None:
    """Arbitrary bytes are refused with NoteError, whatever they contain."""
    with pytest.raises(NoteError):
        open_note(data, VERIFIERS)


@given(
    text=st.text(max_size=60),
    lines=st.lists(
        st.tuples(st.text(max_size=12), st.binary(max_size=80)).map(
            lambda t: f"\u2014 {t[0]} {base64.b64encode(t[1]).decode()}\n"
        ),
        max_size=4,
    ),
)
def test_note_shaped_garbage_raises_only_note_error(text: str, lines: list[str]) -> None:
    """Text, blank line and well-shaped signature lines with random names and bytes: refused
    with NoteError (none is a valid signature by the known key)."""
    try:
        note = (text + "\n\n" + "".join(lines)).encode("utf-8")
    except UnicodeEncodeError:
        return  # a lone surrogate cannot be sent as bytes at all
    with pytest.raises(NoteError):
        open_note(note, VERIFIERS)


@given(position=st.integers(0, len(NOTE) - 1), xor=st.integers(1, 255))
def test_any_damage_to_a_signed_note_is_refused(position: int, xor: int) -> None:
    """Changing any one byte of a signed note makes it fail, with NoteError only."""
    damaged = bytearray(NOTE)
    damaged[position] ^= xor
    with pytest.raises(NoteError):
        open_note(bytes(damaged), VERIFIERS)


@given(position=st.integers(0, len(NOTE)), insert=st.binary(min_size=1, max_size=3))
def test_inserting_bytes_into_a_signed_note_is_refused(position: int, insert: bytes) -> None:
    """Inserting bytes anywhere, even after the final newline, is refused with NoteError."""
    damaged = NOTE[:position] + insert + NOTE[position:]
    with pytest.raises(NoteError):
        open_note(damaged, VERIFIERS)


@given(text=st.text(max_size=80))
def test_any_text_signs_and_opens_or_is_refused(text: str) -> None:
    """sign_note either refuses a text with NoteError or produces a note that opens to it."""
    try:
        note = sign_note(text, [SIGNER])
    except NoteError:
        return
    assert open_note(note, VERIFIERS) == (text, (SIGNER.name,))


# --- checkpoints -------------------------------------------------------------------------------


@given(text=st.text(max_size=200))
@example(text="a\n0\n" + "A" * 43 + "=\n")
@example(text="a\n" + "9" * 5000 + "\n" + "A" * 43 + "=\n")
def test_random_checkpoint_text_raises_only_note_error(text: str) -> None:
    """Checkpoint.parse of any text: a checkpoint that formats back identically, or NoteError."""
    try:
        cp = Checkpoint.parse(text)
    except NoteError:
        return
    assert cp.format() == text


@given(
    origin=st.text(min_size=1, max_size=30).filter(lambda s: "\n" not in s),
    size=st.integers(0, 2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(st.text(min_size=1, max_size=20), max_size=3),
)
def test_checkpoints_round_trip_through_signed_notes(
    origin: str, size: int, root: bytes, extensions: list[str]
) -> None:
    """Any valid checkpoint survives sign/open unchanged; invalid ones raise NoteError."""
    try:
        cp = Checkpoint(origin, size, root, tuple(extensions))
        note = sign_checkpoint(cp, [SIGNER])
    except NoteError:
        return
    assert open_checkpoint(note, VERIFIERS, origin=origin) == (cp, (SIGNER.name,))
