"""The RFC 6962 Merkle tree over SHA-256: hashing, reference proofs and proof verification.

Owns: ``leaf_hash``/``node_hash`` (RFC 6962 section 2.1, the 0x00/0x01 domain separation),
``root``, ``inclusion_proof`` and ``consistency_proof`` computed from the entries themselves
(the literal definitions MTH, PATH and PROOF/SUBPROOF of RFC 6962 section 2.1.1-2.1.2: the
reference every faster structure, such as ``tfshare.audit.tree``, must agree with), the
expected proof lengths, and ``verify_inclusion``/``verify_consistency`` (RFC 9162 sections
2.1.3.2 and 2.1.4.2), which refuse with a ``ProofError`` whose ``code`` names the reason.

Indices are 0-based. Sizes are RFC 6962 tree sizes: 0 to 2^64-1.

Never: accept a hash that is not 32 bytes, accept a consistency proof from the empty tree, or
recurse deeper than the height of the tree (at most 64 levels).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum
from typing import Final

from tfshare.errors import TrustError

HASH_SIZE: Final = 32
MAX_TREE_SIZE: Final = 2**64 - 1  # tree sizes are uint64 in RFC 6962/9162 and in checkpoints
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()

_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"


class ProofCode(StrEnum):
    """Why a proof was refused. Stable: callers and tests match on them."""

    E_PROOF_SIZE = "E_PROOF_SIZE"  # a tree size is negative, too large, zero, or shrinking
    E_PROOF_INDEX = "E_PROOF_INDEX"  # the leaf index is not inside the tree
    E_PROOF_HASH = "E_PROOF_HASH"  # a hash (leaf, root or proof element) is not 32 bytes
    E_PROOF_LENGTH = "E_PROOF_LENGTH"  # the proof has the wrong number of hashes
    E_PROOF_ROOT = "E_PROOF_ROOT"  # the proof does not lead to the given root(s)


_HINTS: Final = {
    ProofCode.E_PROOF_SIZE: (
        "check the tree sizes: they must come from signed checkpoints, the old one not larger "
        "than the new one, and a proof from the empty tree proves nothing"
    ),
    ProofCode.E_PROOF_INDEX: "the entry index must be below the tree size of the checkpoint",
    ProofCode.E_PROOF_HASH: (
        "every hash in a proof, and every root, is exactly 32 bytes (SHA-256); the proof bundle "
        "is damaged or not an RFC 6962 proof"
    ),
    ProofCode.E_PROOF_LENGTH: (
        "the number of hashes does not fit this index and tree size; ask the log for a fresh "
        "proof for exactly these sizes"
    ),
    ProofCode.E_PROOF_ROOT: (
        "the proof does not reproduce the signed root: the entry is not in this log at that "
        "position, or the log was rewritten; keep the bundle and report it"
    ),
}


class ProofError(TrustError):
    """A Merkle proof, or the request for one, was refused; ``code`` is a ``ProofCode``."""

    def __init__(self, code: ProofCode, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or _HINTS[code], code=code.value)
        self.proof_code = code


# --- hashing -------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry (RFC 6962 section 2.1)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node (RFC 6962 section 2.1)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """k, the largest power of two strictly below n (n >= 2): where RFC 6962 splits n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


# --- reference tree (RFC 6962 section 2.1, literally) ---------------------------------------
# These work on leaf hashes over index ranges [lo, hi) instead of slicing, so that the whole
# computation is O(n) hashes; recursion depth is the tree height, at most 64.


def _mth(hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    n = hi - lo
    if n == 1:
        return hashes[lo]
    k = split_point(n)
    return node_hash(_mth(hashes, lo, lo + k), _mth(hashes, lo + k, hi))


def _path(hashes: Sequence[bytes], m: int, lo: int, hi: int) -> list[bytes]:
    n = hi - lo
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return [*_path(hashes, m, lo, lo + k), _mth(hashes, lo + k, hi)]
    return [*_path(hashes, m - k, lo + k, hi), _mth(hashes, lo, lo + k)]


def _subproof(hashes: Sequence[bytes], m: int, lo: int, hi: int, whole: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        # The old tree is this whole subtree: the verifier knows its hash (the old root) only
        # if it is the complete old tree, so it is sent unless it is.
        return [] if whole else [_mth(hashes, lo, hi)]
    k = split_point(n)
    if m <= k:
        return [*_subproof(hashes, m, lo, lo + k, whole), _mth(hashes, lo + k, hi)]
    return [*_subproof(hashes, m - k, lo + k, hi, False), _mth(hashes, lo, lo + k)]


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the entries ``leaves`` (entry bytes, not hashes); SHA-256(b"") if empty."""
    if not leaves:
        return EMPTY_ROOT
    hashes = [leaf_hash(leaf) for leaf in leaves]
    return _mth(hashes, 0, len(hashes))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]): the audit path of entry ``index``, nearest the leaf first."""
    _check_size(len(leaves), "tree size")
    _check_index(index, len(leaves))
    hashes = [leaf_hash(leaf) for leaf in leaves]
    return _path(hashes, index, 0, len(hashes))


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]): proves the first ``old_size`` entries are a prefix of ``leaves``."""
    new_size = len(leaves)
    _check_sizes(old_size, new_size)
    hashes = [leaf_hash(leaf) for leaf in leaves]
    return _subproof(hashes, old_size, 0, new_size, True)


# --- proof lengths --------------------------------------------------------------------------


def inclusion_proof_size(index: int, size: int) -> int:
    """How many hashes PATH(index, D[size]) has.

    Below the highest level where ``index`` and ``size - 1`` part ways the subtree around the
    leaf is perfect (one sibling per level); above it, the leaf is on the right edge and gets
    one left sibling for each set bit left of that level.
    """
    _check_size(size, "tree size")
    _check_index(index, size)
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def consistency_proof_size(old_size: int, new_size: int) -> int:
    """How many hashes PROOF(old_size, D[new_size]) has (0 when the sizes are equal)."""
    _check_sizes(old_size, new_size)
    if old_size == new_size:
        return 0
    # The proof is the inclusion path of leaf old_size-1 in the new tree, started at the level
    # of the largest perfect subtree that ends at old_size, plus that subtree's hash unless it
    # is the whole old tree (old_size a power of two), which the verifier already holds.
    shift = _trailing_zeros(old_size)
    last = old_size - 1
    diverge = (last ^ (new_size - 1)).bit_length()
    seed = 0 if old_size == 1 << shift else 1
    return seed + (diverge - shift) + (last >> diverge).bit_count()


# --- verification (RFC 9162 section 2.1.3.2 and 2.1.4.2) -----------------------------------


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is entry ``index`` of the tree of ``size`` entries with ``root``.

    Returns None on success; raises ``ProofError`` (E_PROOF_SIZE, E_PROOF_INDEX, E_PROOF_HASH,
    E_PROOF_LENGTH, E_PROOF_ROOT) otherwise.
    """
    _check_size(size, "tree size")
    _check_index(index, size)
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    _check_proof_hashes(proof)
    want = inclusion_proof_size(index, size)
    if len(proof) != want:
        raise ProofError(
            ProofCode.E_PROOF_LENGTH,
            f"inclusion proof for entry {index} of {size} has {len(proof)} hashes, not {want}",
        )
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:  # cannot happen after the length check; kept as RFC 9162 states it
            raise ProofError(ProofCode.E_PROOF_LENGTH, "inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if fn:
                # Right edge: skip the levels where this node has no right sibling.
                shift = _trailing_zeros(fn)
                fn >>= shift
                sn >>= shift
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(ProofCode.E_PROOF_LENGTH, "inclusion proof is too short")
    if r != root:
        raise ProofError(
            ProofCode.E_PROOF_ROOT,
            f"inclusion proof for entry {index} of {size} does not lead to the given root",
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``old_size`` with ``old_root`` is a prefix of the newer one.

    Returns None on success; raises ``ProofError`` otherwise. From size 0 nothing can be
    proven (E_PROOF_SIZE); equal sizes need an empty proof and equal roots.
    """
    _check_sizes(old_size, new_size)
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    _check_proof_hashes(proof)
    if old_size == new_size:
        if proof:
            raise ProofError(
                ProofCode.E_PROOF_LENGTH,
                f"consistency proof between equal sizes must be empty, has {len(proof)} hashes",
            )
        if old_root != new_root:
            raise ProofError(
                ProofCode.E_PROOF_ROOT, f"two different roots for the same tree size {old_size}"
            )
        return
    want = consistency_proof_size(old_size, new_size)
    if len(proof) != want:
        raise ProofError(
            ProofCode.E_PROOF_LENGTH,
            f"consistency proof {old_size} -> {new_size} has {len(proof)} hashes, not {want}",
        )
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)  # the old tree is one perfect subtree: its root seeds the path
    fn, sn = old_size - 1, new_size - 1
    if fn & 1:
        shift = _trailing_zeros(fn + 1)  # the number of trailing one bits of fn
        fn >>= shift
        sn >>= shift
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # cannot happen after the length check; kept as RFC 9162 states it
            raise ProofError(ProofCode.E_PROOF_LENGTH, "consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if fn:
                shift = _trailing_zeros(fn)
                fn >>= shift
                sn >>= shift
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(ProofCode.E_PROOF_LENGTH, "consistency proof is too short")
    if fr != old_root:
        raise ProofError(
            ProofCode.E_PROOF_ROOT,
            f"consistency proof {old_size} -> {new_size} does not lead to the old root",
        )
    if sr != new_root:
        raise ProofError(
            ProofCode.E_PROOF_ROOT,
            f"consistency proof {old_size} -> {new_size} does not lead to the new root",
        )


# --- argument checks ------------------------------------------------------------------------


def _trailing_zeros(n: int) -> int:
    """The number of trailing zero bits of n > 0 (n & -n isolates the lowest set bit)."""
    return (n & -n).bit_length() - 1


def _check_size(size: int, what: str) -> None:
    if not 0 <= size <= MAX_TREE_SIZE:
        raise ProofError(ProofCode.E_PROOF_SIZE, f"{what} {size} is outside 0..2^64-1")


def _check_index(index: int, size: int) -> None:
    if not 0 <= index < size:
        raise ProofError(
            ProofCode.E_PROOF_INDEX, f"entry index {index} is not inside a tree of size {size}"
        )


def _check_sizes(old_size: int, new_size: int) -> None:
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    if old_size == 0:
        raise ProofError(
            ProofCode.E_PROOF_SIZE, "a consistency proof from the empty tree proves nothing"
        )
    if old_size > new_size:
        raise ProofError(
            ProofCode.E_PROOF_SIZE,
            f"old tree size {old_size} is larger than the new tree size {new_size}",
        )


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(ProofCode.E_PROOF_HASH, f"{what} is {len(value)} bytes, not 32")


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for i, element in enumerate(proof):
        _check_hash(element, f"proof[{i}]")
