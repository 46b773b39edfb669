"""The incremental log (tfshare.audit.tree) against the reference tree in tfshare.audit.merkle.

MerkleLog answers from stored perfect-subtree hashes; every answer must equal the reference,
exhaustively for sizes 0..70, at random beyond, and stay fast and correct at sizes up to 2^64-1.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfshare.audit import merkle
from tfshare.audit.merkle import (
    EMPTY_ROOT,
    MAX_TREE_SIZE,
    ProofCode,
    ProofError,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from tfshare.audit.tree import (
    CompactRange,
    MemorySubtreeStore,
    MerkleLog,
    SubtreeStore,
    perfect_subtrees,
)

VECTORS: Final[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "rfc6962.json").read_text()
)
LEAVES: Final = [bytes.fromhex(x) for x in VECTORS["leaves_hex"]]
ENTRIES: Final = [bytes([i % 251]) * (i % 5) + i.to_bytes(2, "big") for i in range(70)]


def build(entries: list[bytes]) -> tuple[MerkleLog, MemorySubtreeStore]:
    store = MemorySubtreeStore()
    log = MerkleLog(store)
    for entry in entries:
        log.append(entry)
    return log, store


@pytest.fixture(scope="module")
def log70() -> MerkleLog:
    return build(ENTRIES)[0]


class UniformStore:
    """A read-only store of ``count`` identical leaves, of any size up to 2^64-1.

    Every perfect subtree of level L has the same hash, so the store is a consistent tree
    that costs nothing to build: proofs for trillions of leaves can be made and verified.
    """

    def __init__(self, count: int, leaf: bytes = leaf_hash(b"same")) -> None:
        self.count = count
        self.levels = [leaf]
        for _ in range(64):
            self.levels.append(node_hash(self.levels[-1], self.levels[-1]))
        self.gets = 0

    def get(self, level: int, index: int) -> bytes:
        if (index + 1) << level > self.count:
            raise KeyError((level, index))
        self.gets += 1
        return self.levels[level]

    def put(self, level: int, index: int, node: bytes) -> None:
        raise AssertionError("read-only")

    def leaf_count(self) -> int:
        return self.count

    def set_leaf_count(self, count: int) -> None:
        raise AssertionError("read-only")


# --- the vectors -------------------------------------------------------------------------------


def test_log_roots_match_the_vector_roots() -> None:
    """After each append, and via root_at for every earlier size, the published roots."""
    log, _ = build([])
    assert log.root().hex() == VECTORS["roots"]["0"]
    for n, entry in enumerate(LEAVES, start=1):
        assert log.append(entry) == n - 1
        assert log.size == n
        assert log.root().hex() == VECTORS["roots"][str(n)]
    for n in range(9):
        assert log.root_at(n).hex() == VECTORS["roots"][str(n)]


def test_stored_nodes_are_the_vector_node_hashes() -> None:
    """The store holds exactly the published perfect-subtree hashes, by (level, index)."""
    _, store = build(LEAVES)
    for level, nodes in enumerate(VECTORS["node_hashes"]["levels"]):
        for index, want in enumerate(nodes):
            assert store.get(level, index).hex() == want
    with pytest.raises(KeyError):
        store.get(4, 0)  # no 16-leaf subtree yet
    assert store.leaf_count() == 8


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: c["source_file"])
def test_log_inclusion_proofs_match_the_vectors(case: dict[str, Any]) -> None:
    """MerkleLog.inclusion_proof at an earlier size gives the published path."""
    log, _ = build(LEAVES)
    proof = log.inclusion_proof(case["index"], case["size"])
    assert [p.hex() for p in proof] == case["proof"]


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: c["source_file"])
def test_log_consistency_proofs_match_the_vectors(case: dict[str, Any]) -> None:
    """MerkleLog.consistency_proof between earlier sizes gives the published proof."""
    log, _ = build(LEAVES)
    proof = log.consistency_proof(case["size1"], case["size2"])
    assert [p.hex() for p in proof] == case["proof"]


# --- exhaustive agreement with the reference ---------------------------------------------------


@pytest.mark.parametrize("size", range(71))
def test_log_agrees_with_reference_for_every_size_and_index(log70: MerkleLog, size: int) -> None:
    """Sizes 0..70: root_at, every inclusion proof and every consistency proof equal the
    reference computed from the entries, and verify."""
    leaves = ENTRIES[:size]
    want_root = merkle.root(leaves)
    assert log70.root_at(size) == want_root
    for index in range(size):
        proof = log70.inclusion_proof(index, size)
        assert proof == merkle.inclusion_proof(leaves, index)
        verify_inclusion(log70.leaf_hash(index), index, size, proof, want_root)
    for old in range(1, size + 1):
        proof = log70.consistency_proof(old, size)
        assert proof == merkle.consistency_proof(leaves, old)
        verify_consistency(old, size, log70.root_at(old), want_root, proof)


def test_root_after_every_append_equals_reference() -> None:
    """The right-edge root after each append equals the reference root of the prefix."""
    log, _ = build([])
    for n, entry in enumerate(ENTRIES, start=1):
        log.append(entry)
        assert log.root() == merkle.root(ENTRIES[:n])
        assert log.leaf_hash(n - 1) == leaf_hash(entry)


@given(
    entries=st.lists(st.binary(max_size=8), min_size=1, max_size=300),
    data=st.data(),
)
def test_log_agrees_with_reference_at_random(entries: list[bytes], data: st.DataObject) -> None:
    """Random trees up to 300 entries: random sizes, indices and old sizes agree."""
    log, _ = build(entries)
    size = data.draw(st.integers(1, len(entries)), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old = data.draw(st.integers(1, size), label="old")
    leaves = entries[:size]
    assert log.root_at(size) == merkle.root(leaves)
    assert log.inclusion_proof(index, size) == merkle.inclusion_proof(leaves, index)
    assert log.consistency_proof(old, size) == merkle.consistency_proof(leaves, old)


# --- CompactRange ------------------------------------------------------------------------------


def test_compact_range_keeps_one_hash_per_set_bit() -> None:
    """The edge holds popcount(size) hashes, the perfect subtrees largest first."""
    edge = CompactRange()
    assert edge.root() == EMPTY_ROOT
    hashes = [leaf_hash(e) for e in ENTRIES]
    for n, lh in enumerate(hashes, start=1):
        edge.append(lh)
        assert edge.size == n
        assert len(edge.hashes) == n.bit_count()
        assert edge.root() == merkle.root(ENTRIES[:n])
        want = [merkle.root(ENTRIES[i << lv : (i + 1) << lv]) for lv, i in perfect_subtrees(0, n)]
        assert list(edge.hashes) == want


def test_compact_range_append_reports_completed_nodes() -> None:
    """Appending leaf 7 completes the leaf, (1, 3), (2, 1) and (3, 0): the whole 8-tree."""
    edge = CompactRange()
    hashes = [leaf_hash(e) for e in LEAVES]
    for lh in hashes[:7]:
        edge.append(lh)
    completed = edge.append(hashes[7])
    levels = VECTORS["node_hashes"]["levels"]
    assert [(lv, i) for lv, i, _ in completed] == [(0, 7), (1, 3), (2, 1), (3, 0)]
    assert [node.hex() for lv, i, node in completed] == [levels[lv][i] for lv, i, _ in completed]
    assert edge.hashes == (bytes.fromhex(levels[3][0]),)


def test_compact_range_can_resume_from_its_hashes() -> None:
    """A range rebuilt from (size, hashes) continues exactly like the original."""
    edge = CompactRange()
    for entry in ENTRIES[:37]:
        edge.append(leaf_hash(entry))
    resumed = CompactRange(edge.size, edge.hashes)
    copy = edge.copy()
    for entry in ENTRIES[37:]:
        edge.append(leaf_hash(entry))
        resumed.append(leaf_hash(entry))
    assert resumed.root() == edge.root() == merkle.root(ENTRIES)
    assert copy.size == 37  # the copy did not move
    assert copy.root() == merkle.root(ENTRIES[:37])


def test_compact_range_refuses_inconsistent_state() -> None:
    """Wrong number of edge hashes, short hashes, sizes out of range, short leaf hashes."""
    h = leaf_hash(b"x")
    cases = [
        ((3, [h]), ProofCode.E_PROOF_LENGTH),
        ((4, [h, h]), ProofCode.E_PROOF_LENGTH),
        ((1, [h[:31]]), ProofCode.E_PROOF_HASH),
        ((-1, []), ProofCode.E_PROOF_SIZE),
        ((2**64, []), ProofCode.E_PROOF_SIZE),
    ]
    for (size, hashes), code in cases:
        with pytest.raises(ProofError) as excinfo:
            CompactRange(size, hashes)
        assert excinfo.value.code == code
    with pytest.raises(ProofError) as excinfo:
        CompactRange().append(b"short")
    assert excinfo.value.code == ProofCode.E_PROOF_HASH
    full = CompactRange(MAX_TREE_SIZE, [h] * 64)
    with pytest.raises(ProofError) as excinfo:
        full.append(h)
    assert excinfo.value.code == ProofCode.E_PROOF_SIZE


def test_perfect_subtrees_decomposes_by_set_bits() -> None:
    """[0, 13) = 8 + 4 + 1 leaves; [8, 11) = 2 + 1 leaves starting at 8."""
    assert perfect_subtrees(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert perfect_subtrees(8, 3) == [(1, 4), (0, 10)]
    assert perfect_subtrees(5, 0) == []


# --- MemorySubtreeStore ------------------------------------------------------------------------


def test_memory_store_get_and_put() -> None:
    """Nodes come back as stored; missing or negative positions are KeyError."""
    store = MemorySubtreeStore()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    store.put(0, 0, a)
    store.put(0, 1, b)
    store.put(1, 0, node_hash(a, b))
    assert store.get(0, 0) == a
    assert store.get(0, 1) == b
    assert store.get(1, 0) == node_hash(a, b)
    assert isinstance(store.get(0, 0), bytes)
    for level, index in ((0, 2), (2, 0), (-1, 0), (0, -1), (1, 1)):
        with pytest.raises(KeyError):
            store.get(level, index)
    store.put(0, 1, a)  # a node at or beyond the leaf count may be rewritten
    assert store.get(0, 1) == a


def test_memory_store_refuses_bad_puts() -> None:
    """Puts must be 32 bytes, in index order per level, at non-negative positions."""
    store = MemorySubtreeStore()
    with pytest.raises(ValueError, match="before its left neighbours"):
        store.put(0, 1, leaf_hash(b"a"))
    for level, index, node in ((0, 0, b"x" * 31), (-1, 0, bytes(32)), (0, -1, bytes(32))):
        with pytest.raises(ValueError, match="cannot store"):
            store.put(level, index, node)
    with pytest.raises(ValueError, match="leaf count"):
        store.set_leaf_count(-1)


def test_memory_store_is_a_subtree_store() -> None:
    """MemorySubtreeStore satisfies the protocol (checked by mypy through this assignment)."""
    store: SubtreeStore = MemorySubtreeStore()
    store.set_leaf_count(0)
    assert store.leaf_count() == 0


# --- MerkleLog ---------------------------------------------------------------------------------


def test_log_reopened_from_its_store_continues_identically() -> None:
    """A new MerkleLog over the same store has the same size and root, and appends alike."""
    log, store = build(ENTRIES[:45])
    reopened = MerkleLog(store)
    assert reopened.size == 45
    assert reopened.root() == log.root() == merkle.root(ENTRIES[:45])
    assert reopened.edge.hashes == log.edge.hashes
    for entry in ENTRIES[45:]:
        reopened.append(entry)
    assert reopened.root() == merkle.root(ENTRIES)
    assert reopened.inclusion_proof(3) == merkle.inclusion_proof(ENTRIES, 3)


class RecordingStore(MemorySubtreeStore):
    """Remembers every committed leaf count."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: list[int] = []

    def set_leaf_count(self, count: int) -> None:
        self.counts.append(count)
        super().set_leaf_count(count)


def test_extend_commits_once_and_returns_the_new_size() -> None:
    """extend_leaf_hashes sets the leaf count once, at the end."""
    store = RecordingStore()
    log = MerkleLog(store)
    assert log.extend_leaf_hashes(leaf_hash(e) for e in ENTRIES[:10]) == 10
    assert store.counts == [10]
    assert log.extend_leaf_hashes([]) == 10
    assert store.counts == [10]  # nothing appended: nothing committed
    assert log.append_leaf_hash(leaf_hash(ENTRIES[10])) == 10
    assert store.counts == [10, 11]
    assert log.root() == merkle.root(ENTRIES[:11])


class FailingStore(MemorySubtreeStore):
    """Fails the n-th put, like a disk that fills up."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.puts = 0
        self.fail_at = fail_at

    def put(self, level: int, index: int, node: bytes) -> None:
        self.puts += 1
        if self.puts == self.fail_at:
            raise OSError("disk full")
        super().put(level, index, node)


def test_failed_append_commits_nothing() -> None:
    """When the store fails mid-append, size, root and leaf count stay as they were, and a
    retry gives the right tree."""
    store = FailingStore(fail_at=13)  # 11 puts for 7 leaves; then leaf 7 is put, (1, 3) fails
    log = MerkleLog(store)
    log.extend_leaf_hashes(leaf_hash(e) for e in ENTRIES[:7])
    before = log.root()
    with pytest.raises(OSError, match="disk full"):
        log.extend_leaf_hashes(leaf_hash(e) for e in ENTRIES[7:9])
    assert log.size == 7
    assert store.leaf_count() == 7
    assert log.root() == before
    log.extend_leaf_hashes(leaf_hash(e) for e in ENTRIES[7:9])
    assert log.root() == merkle.root(ENTRIES[:9])
    assert MerkleLog(store).root() == merkle.root(ENTRIES[:9])


def test_log_refuses_sizes_and_indices_outside_it(log70: MerkleLog) -> None:
    """Indices at or past the size, sizes past the log, and consistency from 0 are refused."""
    checks: list[tuple[Callable[[], object], ProofCode]] = [
        (lambda: log70.inclusion_proof(70), ProofCode.E_PROOF_INDEX),
        (lambda: log70.inclusion_proof(-1), ProofCode.E_PROOF_INDEX),
        (lambda: log70.inclusion_proof(5, 5), ProofCode.E_PROOF_INDEX),
        (lambda: log70.inclusion_proof(0, 0), ProofCode.E_PROOF_INDEX),
        (lambda: log70.inclusion_proof(0, 71), ProofCode.E_PROOF_SIZE),
        (lambda: log70.root_at(71), ProofCode.E_PROOF_SIZE),
        (lambda: log70.root_at(-1), ProofCode.E_PROOF_SIZE),
        (lambda: log70.consistency_proof(0), ProofCode.E_PROOF_SIZE),
        (lambda: log70.consistency_proof(0, 0), ProofCode.E_PROOF_SIZE),
        (lambda: log70.consistency_proof(6, 5), ProofCode.E_PROOF_SIZE),
        (lambda: log70.consistency_proof(-3, 5), ProofCode.E_PROOF_SIZE),
        (lambda: log70.consistency_proof(1, 71), ProofCode.E_PROOF_SIZE),
        (lambda: log70.leaf_hash(70), ProofCode.E_PROOF_INDEX),
    ]
    for call, code in checks:
        with pytest.raises(ProofError) as excinfo:
            call()
        assert excinfo.value.code == code
    assert log70.consistency_proof(70) == []
    assert log70.root_at(0) == EMPTY_ROOT


# --- very large trees --------------------------------------------------------------------------

HUGE_SIZES: Final = [2**32, 2**32 + 1, 10**12 + 7, 2**63, 2**63 + 1, 2**64 - 2, MAX_TREE_SIZE]


def uniform_root(size: int, store: UniformStore) -> bytes:
    """Root of ``size`` identical leaves, independently: MTH recursion on the size alone."""
    if size & (size - 1) == 0:
        return store.levels[size.bit_length() - 1]
    k = merkle.split_point(size)
    return node_hash(uniform_root(k, store), uniform_root(size - k, store))


@pytest.mark.parametrize("size", HUGE_SIZES)
def test_proofs_for_huge_trees_verify(size: int) -> None:
    """Trees up to 2^64-1 leaves: proofs have at most 64 hashes, O(log n) lookups, verify."""
    store = UniformStore(size)
    log = MerkleLog(store)
    want_root = uniform_root(size, store)
    assert log.root() == want_root
    leaf = store.levels[0]
    for index in (0, 1, size // 2, size // 3, size - 2, size - 1):
        store.gets = 0
        proof = log.inclusion_proof(index)
        assert len(proof) == merkle.inclusion_proof_size(index, size) <= 64
        assert store.gets <= 2 * 64
        verify_inclusion(leaf, index, size, proof, want_root)
    for old in (1, 2, 3, size // 2 + 1, size - 1):
        proof = log.consistency_proof(old)
        assert len(proof) == merkle.consistency_proof_size(old, size) <= 65
        verify_consistency(old, size, log.root_at(old), want_root, proof)
        assert log.root_at(old) == uniform_root(old, store)


def _median_seconds(call: Callable[[int], object], args: list[int]) -> float:
    """Median wall time of ``call(a)`` over ``args``."""
    samples = []
    for arg in args:
        start = time.perf_counter()
        call(arg)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


@pytest.mark.slow
def test_proofs_from_a_million_entry_log_take_well_under_a_millisecond() -> None:
    """A real 1,000,000-leaf log in memory: inclusion and consistency proofs in < 1 ms."""
    store = MemorySubtreeStore()
    log = MerkleLog(store)
    size = log.extend_leaf_hashes(os.urandom(32) for _ in range(1_000_000))
    assert size == 1_000_000
    indices = [int.from_bytes(os.urandom(8), "big") % size for _ in range(500)]
    root_now = log.root()
    inclusion = _median_seconds(log.inclusion_proof, indices)
    consistency = _median_seconds(log.consistency_proof, [i + 1 for i in indices])
    assert inclusion < 1e-3
    assert consistency < 1e-3
    for i in indices[:20]:
        verify_inclusion(log.leaf_hash(i), i, size, log.inclusion_proof(i), root_now)
        verify_consistency(i + 1, size, log.root_at(i + 1), root_now, log.consistency_proof(i + 1))
