"""The incremental audit log tree: appends in O(1) amortized hashes, proofs in O(log n) lookups.

Owns: ``SubtreeStore``, the tiny storage protocol (the hash of every perfect subtree by
(level, index), plus the committed leaf count) that an in-memory and later an SQLite store
implement; ``MemorySubtreeStore``; ``CompactRange``, the right edge of a tree (one perfect
subtree hash per set bit of its size); and ``MerkleLog``, which appends leaf hashes and answers
``root_at``, ``inclusion_proof`` and ``consistency_proof`` for the current or ANY earlier size
from stored perfect subtrees only.

Every answer equals what ``tfshare.audit.merkle`` computes from the entries themselves (the
reference); the tests check that for every size and index up to 70 and at random beyond.

Perfect subtree (level, index) covers leaves [index * 2^level, (index + 1) * 2^level). A node
never changes once its subtree is complete, which is why a tree of any earlier size can be
rebuilt from them: the tree of n leaves is the right-to-left fold of the perfect subtrees given
by the set bits of n, largest first.

Never: recompute a subtree from its leaves, or read a node at or beyond the leaf count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from tfshare.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_TREE_SIZE,
    ProofCode,
    ProofError,
    node_hash,
    split_point,
)
from tfshare.audit.merkle import leaf_hash as _leaf_hash


class SubtreeStore(Protocol):
    """Where a ``MerkleLog`` keeps perfect subtree hashes and how many leaves are committed.

    ``get`` raises ``KeyError`` for a node it does not hold. ``put`` may overwrite a node at or
    beyond the leaf count (left there by an append that failed before ``set_leaf_count``);
    nodes below it are final. ``set_leaf_count`` is the commit point of an append: a store
    that has transactions commits the preceding ``put`` calls with it.
    """

    def get(self, level: int, index: int) -> bytes: ...

    def put(self, level: int, index: int, node: bytes) -> None: ...

    def leaf_count(self) -> int: ...

    def set_leaf_count(self, count: int) -> None: ...


class MemorySubtreeStore:
    """A ``SubtreeStore`` in memory: one bytearray of concatenated 32-byte hashes per level.

    About 64 bytes per leaf (the leaf hash plus, on average, one interior node), so a
    million-entry log takes about 64 MB; nodes of a level must be put in index order, which
    ``MerkleLog`` does.
    """

    __slots__ = ("_count", "_levels")

    def __init__(self) -> None:
        self._levels: list[bytearray] = []
        self._count = 0

    def get(self, level: int, index: int) -> bytes:
        if level < 0 or index < 0 or level >= len(self._levels):
            raise KeyError((level, index))
        offset = index * HASH_SIZE
        node = bytes(self._levels[level][offset : offset + HASH_SIZE])
        if len(node) != HASH_SIZE:
            raise KeyError((level, index))
        return node

    def put(self, level: int, index: int, node: bytes) -> None:
        if len(node) != HASH_SIZE or level < 0 or index < 0:
            raise ValueError(f"cannot store node ({level}, {index}) of {len(node)} bytes")
        while len(self._levels) <= level:
            self._levels.append(bytearray())
        row = self._levels[level]
        offset = index * HASH_SIZE
        if offset == len(row):
            row += node
        elif offset < len(row):
            row[offset : offset + HASH_SIZE] = node
        else:
            raise ValueError(f"node ({level}, {index}) put before its left neighbours")

    def leaf_count(self) -> int:
        return self._count

    def set_leaf_count(self, count: int) -> None:
        if not 0 <= count <= MAX_TREE_SIZE:
            raise ValueError(f"leaf count {count} is outside 0..2^64-1")
        self._count = count


class CompactRange:
    """The right edge of the tree of ``size`` leaves: its perfect subtree hashes, largest first.

    Enough to append and to compute the current root without any stored node; ``hashes`` has
    one element per set bit of ``size``.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if not 0 <= size <= MAX_TREE_SIZE:
            raise ProofError(ProofCode.E_PROOF_SIZE, f"tree size {size} is outside 0..2^64-1")
        if len(hashes) != size.bit_count():
            raise ProofError(
                ProofCode.E_PROOF_LENGTH,
                f"a tree of size {size} has {size.bit_count()} edge hashes, not {len(hashes)}",
            )
        for node in hashes:
            if len(node) != HASH_SIZE:
                raise ProofError(ProofCode.E_PROOF_HASH, f"edge hash is {len(node)} bytes")
        self._size = size
        self._hashes = list(hashes)

    @property
    def size(self) -> int:
        """How many leaves the range covers (from leaf 0)."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The perfect subtree hashes along the right edge, largest (leftmost) first."""
        return tuple(self._hashes)

    def copy(self) -> CompactRange:
        """An independent copy (appending to it leaves this one unchanged)."""
        return CompactRange(self._size, self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns every node it completed as (level, index, hash).

        The first is the leaf itself at level 0; each further one is the parent completed by
        merging with the edge's last subtree, as long as the new node is a right child.
        """
        if len(leaf_hash) != HASH_SIZE:
            raise ProofError(ProofCode.E_PROOF_HASH, f"leaf hash is {len(leaf_hash)} bytes")
        if self._size == MAX_TREE_SIZE:
            raise ProofError(ProofCode.E_PROOF_SIZE, "the tree is full (2^64-1 leaves)")
        index = self._size
        level = 0
        node = leaf_hash
        completed = [(0, index, node)]
        while index & 1:
            node = node_hash(self._hashes.pop(), node)
            index >>= 1
            level += 1
            completed.append((level, index, node))
        self._hashes.append(node)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """The root hash of the tree of ``size`` leaves (SHA-256(b"") when empty)."""
        if not self._hashes:
            return EMPTY_ROOT
        node = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            node = node_hash(left, node)
        return node


def perfect_subtrees(start: int, count: int) -> list[tuple[int, int]]:
    """(level, index) of the perfect subtrees making up leaves [start, start + count).

    Largest first, by the set bits of ``count``; ``start`` must be a multiple of the largest
    (true for every range the RFC 6962 tree has as a subtree).
    """
    out: list[tuple[int, int]] = []
    while count:
        level = count.bit_length() - 1
        out.append((level, start >> level))
        start += 1 << level
        count -= 1 << level
    return out


class MerkleLog:
    """An append-only RFC 6962 tree over a ``SubtreeStore``.

    Appends write the leaf hash and each subtree it completes. ``root_at``,
    ``inclusion_proof`` and ``consistency_proof`` work for any size up to the current one with
    O(log n) store lookups and at most O(log n) hashes, never touching the leaves' entries.
    """

    __slots__ = ("_edge", "_store")

    def __init__(self, store: SubtreeStore) -> None:
        self._store = store
        size = store.leaf_count()
        edge = [store.get(level, index) for level, index in perfect_subtrees(0, size)]
        self._edge = CompactRange(size, edge)

    @property
    def size(self) -> int:
        """The number of committed leaves."""
        return self._edge.size

    @property
    def edge(self) -> CompactRange:
        """A copy of the right edge at the current size."""
        return self._edge.copy()

    def append(self, entry: bytes) -> int:
        """Append one entry (its bytes; hashed here); returns its 0-based index."""
        return self.append_leaf_hash(_leaf_hash(entry))

    def append_leaf_hash(self, leaf_hash: bytes) -> int:
        """Append one leaf hash (SHA-256(0x00 || entry)); returns its 0-based index."""
        return self.extend_leaf_hashes((leaf_hash,)) - 1

    def extend_leaf_hashes(self, leaf_hashes: Iterable[bytes]) -> int:
        """Append several leaf hashes with one commit; returns the new size.

        If the store fails part way, nothing is committed and this log stays at its old size.
        """
        edge = self._edge.copy()
        put = self._store.put
        for leaf_hash in leaf_hashes:
            for level, index, node in edge.append(leaf_hash):
                put(level, index, node)
        if edge.size != self._edge.size:
            self._store.set_leaf_count(edge.size)
            self._edge = edge
        return edge.size

    def leaf_hash(self, index: int) -> bytes:
        """The stored leaf hash of entry ``index``."""
        self._check_index(index, self.size)
        return self._store.get(0, index)

    def root(self) -> bytes:
        """The root hash at the current size."""
        return self._edge.root()

    def root_at(self, size: int) -> bytes:
        """The root hash the tree had when it held ``size`` leaves (0 <= size <= current)."""
        self._check_size(size)
        if size == self.size:
            return self._edge.root()
        if size == 0:
            return EMPTY_ROOT
        return self._range_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) for entry ``index`` in the tree at ``size`` (default: now)."""
        size = self.size if size is None else size
        self._check_size(size)
        self._check_index(index, size)
        get = self._store.get
        proof: list[bytes] = []
        # Top-down as PATH recurses; the list is reversed at the end (nearest the leaf first).
        lo, n = 0, size
        while n > 1:
            k = split_point(n)
            level = k.bit_length() - 1
            if index - lo < k:
                # The right part may be incomplete; once we go left, every subtree is perfect.
                proof.append(self._range_hash(lo + k, n - k))
                n = k
            else:
                proof.append(get(level, lo >> level))
                lo += k
                n -= k
        proof.reverse()
        return proof

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) between two sizes of this log (new default: now)."""
        new_size = self.size if new_size is None else new_size
        self._check_size(new_size)
        if old_size == 0:
            raise ProofError(
                ProofCode.E_PROOF_SIZE, "a consistency proof from the empty tree proves nothing"
            )
        if not 0 < old_size <= new_size:
            raise ProofError(
                ProofCode.E_PROOF_SIZE,
                f"old tree size {old_size} is not within 1..{new_size}",
            )
        get = self._store.get
        proof: list[bytes] = []
        lo, m, n = 0, old_size, new_size
        whole = True  # still inside the subtree that is the whole old tree
        while m != n:
            k = split_point(n)
            level = k.bit_length() - 1
            if m <= k:
                proof.append(self._range_hash(lo + k, n - k))
                n = k
            else:
                proof.append(get(level, lo >> level))
                lo += k
                m -= k
                n -= k
                whole = False
        if not whole:
            proof.append(self._range_hash(lo, n))
        proof.reverse()
        return proof

    def _range_hash(self, start: int, count: int) -> bytes:
        """MTH of leaves [start, start + count): fold its perfect subtrees right to left."""
        get = self._store.get
        nodes = [get(level, index) for level, index in perfect_subtrees(start, count)]
        node = nodes.pop()
        while nodes:
            node = node_hash(nodes.pop(), node)
        return node

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ProofError(
                ProofCode.E_PROOF_SIZE,
                f"tree size {size} is not within 0..{self.size} (the log's size)",
            )

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise ProofError(
                ProofCode.E_PROOF_INDEX, f"entry index {index} is not inside a tree of size {size}"
            )
