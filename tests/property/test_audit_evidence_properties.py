"""Property tests of proof bundles: bundles of random logs check, and no single-bit change to an
encoded bundle survives ``check_bundle``; hostile bytes raise ``BundleError`` and nothing else.

Every bit of a bundle is bound by some check (see tfshare.audit.evidence): the exhaustive test
flips each one of a real bundle, in both trust modes.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfshare.audit.entry import RECEIPT_OF, LogEntry, encode_entry
from tfshare.audit.evidence import (
    BundleError,
    ProofBundle,
    check_bundle,
    decode_bundle,
    encode_bundle,
    make_bundle,
)
from tfshare.audit.note import Checkpoint, NoteSigner, checkpoint_origin, sign_checkpoint
from tfshare.audit.tree import MemorySubtreeStore, MerkleLog

TASKFORCE: Final = "nl-north"
ORIGIN: Final = checkpoint_origin(TASKFORCE)
KEY_A: Final = NoteSigner(ORIGIN, hashlib.sha256(b"property coordinator a").digest())
KEY_B: Final = NoteSigner(ORIGIN, hashlib.sha256(b"property coordinator b").digest())
VKEYS: Final = [KEY_A.verifier.format(), KEY_B.verifier.format()]


class MemoryLog:
    """An in-memory ``ProofSource``: entry bytes plus the incremental tree over them."""

    def __init__(self, entries: list[LogEntry]) -> None:
        self.data = [encode_entry(entry) for entry in entries]
        self.log = MerkleLog(MemorySubtreeStore())
        for data in self.data:
            self.log.append(data)

    @property
    def size(self) -> int:
        return self.log.size

    def entry_bytes(self, index: int) -> bytes:
        return self.data[index]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return self.log.inclusion_proof(index, size)

    def note(self, size: int, keys: list[NoteSigner]) -> bytes:
        return sign_checkpoint(Checkpoint(ORIGIN, size, self.log.root_at(size)), keys)


def entry(seed: int, kind: int) -> LogEntry:
    h = hashlib.sha256(seed.to_bytes(8, "big")).digest()
    refs: list[tuple[int, bytes, bytes]] = []
    entry_type, channel = "message", "ops"
    if kind == 1:
        refs = [(3, h[8:24], hashlib.sha256(h).digest())]
    elif kind == 2:
        entry_type, channel = "receipt", "receipts"
        refs = [(RECEIPT_OF, h[8:24], hashlib.sha256(h).digest())]
    return LogEntry(
        entry_type=entry_type,
        msg_id=h[:16],
        sender=("police", "ngo")[seed % 2],
        sender_kid=h[16:24],
        taskforce=TASKFORCE,
        channel=channel,
        ts_ms=seed % 2**53,
        env_sha256=h,
        refs=refs,
        observed_ms=(seed * 7) % 2**53,
    )


entries_st = st.lists(
    st.builds(entry, st.integers(0, 2**63), st.integers(0, 2)), min_size=1, max_size=40
)


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# A real bundle: entry 13 of a 21-entry log, its checkpoint signed by two coordinator keys.
LOG: Final = MemoryLog([entry(seed, seed % 3) for seed in range(21)])
BUNDLE: Final = make_bundle(LOG, 13, LOG.note(21, [KEY_A, KEY_B]), VKEYS, TASKFORCE)
DATA: Final = encode_bundle(BUNDLE)


@given(entries=entries_st, data=st.data())
def test_bundles_of_random_logs_check(entries: list[LogEntry], data: st.DataObject) -> None:
    log = MemoryLog(entries)
    size = data.draw(st.integers(1, len(entries)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    bundle = make_bundle(log, index, log.note(size, [KEY_A]), VKEYS[:1], TASKFORCE)
    encoded = encode_bundle(bundle)
    assert decode_bundle(encoded) == bundle
    checked = check_bundle(encoded, trusted_vkeys=VKEYS, taskforce=TASKFORCE)
    assert (checked.entry, checked.index, checked.size) == (entries[index], index, size)
    assert checked.root == log.log.root_at(size)
    assert check_bundle(encoded, trusted_vkeys=None, taskforce=None).self_asserted


@given(entries=entries_st, data=st.data())
def test_a_flipped_bit_of_a_random_bundle_is_refused(
    entries: list[LogEntry], data: st.DataObject
) -> None:
    log = MemoryLog(entries)
    index = data.draw(st.integers(0, len(entries) - 1), label="index")
    encoded = encode_bundle(
        make_bundle(log, index, log.note(len(entries), [KEY_A]), VKEYS[:1], TASKFORCE)
    )
    bit = data.draw(st.integers(0, 8 * len(encoded) - 1), label="bit")
    with pytest.raises(BundleError):
        check_bundle(flip(encoded, bit), trusted_vkeys=VKEYS, taskforce=TASKFORCE)
    with pytest.raises(BundleError):
        check_bundle(flip(encoded, bit), trusted_vkeys=None, taskforce=None)


@given(bit=st.integers(0, 8 * len(DATA) - 1))
def test_a_flipped_bit_at_any_position_is_refused(bit: int) -> None:
    with pytest.raises(BundleError):
        check_bundle(flip(DATA, bit), trusted_vkeys=VKEYS[1:], taskforce=TASKFORCE)


@pytest.mark.parametrize(
    ("trusted", "taskforce"), [(VKEYS, TASKFORCE), (None, None)], ids=["trusted", "self"]
)
def test_every_single_bit_flip_of_a_bundle_is_refused(
    trusted: list[str] | None, taskforce: str | None
) -> None:
    """Exhaustive: all 8 * len(bundle) single-bit changes, each refused with BundleError."""
    assert check_bundle(DATA, trusted_vkeys=trusted, taskforce=taskforce).index == 13
    survivors = []
    codes: set[str | None] = set()
    for bit in range(8 * len(DATA)):
        try:
            check_bundle(flip(DATA, bit), trusted_vkeys=trusted, taskforce=taskforce)
        except BundleError as exc:
            codes.add(exc.code)
        else:
            survivors.append(bit)
    assert survivors == []
    # The flips land on every kind of check, not just on decoding.
    assert {"E_BUNDLE_MALFORMED", "E_BUNDLE_SIGNATURE", "E_BUNDLE_PROOF"} <= codes


@given(index=st.integers(0, 2**64 - 1), size=st.integers(0, 2**64 - 1))
def test_any_other_index_or_size_is_refused(index: int, size: int) -> None:
    changed = msgspec.structs.replace(BUNDLE, index=index, size=size)
    if (index, size) == (BUNDLE.index, BUNDLE.size):
        return
    with pytest.raises(BundleError):
        check_bundle(changed, trusted_vkeys=VKEYS, taskforce=TASKFORCE)


@given(proof=st.lists(st.binary(min_size=32, max_size=32), max_size=8))
def test_any_other_proof_is_refused(proof: list[bytes]) -> None:
    if proof == BUNDLE.proof:
        return
    with pytest.raises(BundleError):
        check_bundle(
            msgspec.structs.replace(BUNDLE, proof=proof), trusted_vkeys=VKEYS, taskforce=None
        )


@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes_raise_bundle_error_only(data: bytes) -> None:
    with pytest.raises(BundleError):
        check_bundle(data, trusted_vkeys=VKEYS, taskforce=TASKFORCE)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=40)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=9),
    max_leaves=30,
)  # fmt: skip


@given(value=msgpack_values)
def test_arbitrary_msgpack_raises_bundle_error_only(value: object) -> None:
    with pytest.raises(BundleError):
        check_bundle(msgspec.msgpack.encode(value), trusted_vkeys=None, taskforce=None)


@given(position=st.integers(0, 7), value=msgpack_values)
def test_any_field_replaced_by_junk_is_refused(position: int, value: object) -> None:
    array = msgspec.msgpack.decode(DATA)
    if array[position] == value:
        return
    array[position] = value
    with pytest.raises(BundleError):
        check_bundle(msgspec.msgpack.encode(array), trusted_vkeys=None, taskforce=None)


def test_the_fixed_bundle_is_what_the_tests_assume() -> None:
    assert isinstance(BUNDLE, ProofBundle)
    assert len(BUNDLE.vkeys) == 2
    assert BUNDLE.checkpoint.count("\u2014".encode()) == 2  # two signature lines
    assert len(DATA) > 500
