"""The reference Merkle tree (tfshare.audit.merkle) against the RFC 6962 vectors and edge cases.

Every vector of tests/vectors/rfc6962.json (transparency-dev/merkle and Certificate
Transparency) is checked: roots, node hashes, hasher answers, proofs produced and verified,
and every negative case refused with the code its defect calls for.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

import pytest

from tfshare.audit.merkle import (
    EMPTY_ROOT,
    MAX_TREE_SIZE,
    ProofCode,
    ProofError,
    consistency_proof,
    consistency_proof_size,
    inclusion_proof,
    inclusion_proof_size,
    leaf_hash,
    node_hash,
    root,
    split_point,
    verify_consistency,
    verify_inclusion,
)
from tfshare.errors import ExitCode, TfshareError, TrustError

VECTORS: Final[dict[str, Any]] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "rfc6962.json").read_text()
)
LEAVES: Final = [bytes.fromhex(x) for x in VECTORS["leaves_hex"]]
# Entries for trees beyond the vectors: distinct, of varied lengths (including empty).
ENTRIES: Final = [bytes([i % 251]) * (i % 7) + i.to_bytes(2, "big") for i in range(140)]


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def hs(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def case_id(case: dict[str, Any]) -> str:
    return f"{case['source_file']}"


def code_of(excinfo: pytest.ExceptionInfo[ProofError]) -> str | None:
    return excinfo.value.code


# --- the vector file itself ----------------------------------------------------------------


def test_vector_counts_match_the_file() -> None:
    """The 'counts' block agrees with what the file holds, so no case is silently skipped."""
    counts = VECTORS["counts"]
    assert counts["leaves"] == len(VECTORS["leaves_hex"]) == 8
    assert counts["roots"] == len(VECTORS["roots"]) == 9
    assert counts["inclusion"] == len(VECTORS["inclusion"])
    assert counts["consistency"] == len(VECTORS["consistency"])
    edge = VECTORS["edge_cases"]
    assert counts["edge_cases"] == len(edge["inclusion"]) + len(edge["consistency"])
    assert counts["node_hashes"] == sum(len(level) for level in VECTORS["node_hashes"]["levels"])
    assert counts["hasher_kats"] == len(VECTORS["hasher_kats"])
    assert counts["negative_inclusion"] == len(VECTORS["negative_inclusion"]["cases"]) == 92
    assert counts["negative_consistency"] == len(VECTORS["negative_consistency"]["cases"]) == 92
    assert counts["signed_note_kats"] == len(VECTORS["signed_note_kats"]["cases"])
    assert VECTORS["hash"] == "SHA-256"
    assert VECTORS["index_base"] == 0


# --- hashing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kat", VECTORS["hasher_kats"], ids=lambda k: k["desc"])
def test_hasher_known_answers(kat: dict[str, Any]) -> None:
    """Empty root, leaf and node hashes give the published answers."""
    if kat["op"] == "empty_root":
        got = root([])
        assert got == EMPTY_ROOT
    elif kat["op"] == "leaf":
        got = leaf_hash(h(kat["input_hex"]))
    else:
        assert kat["op"] == "node"
        got = node_hash(h(kat["left_hex"]), h(kat["right_hex"]))
    assert got.hex() == kat["want"]


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    """A leaf over l||r never equals the node over (l, r): 0x00 and 0x01 prefixes differ."""
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    assert leaf_hash(left + right) != node_hash(left, right)
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


@pytest.mark.parametrize(
    ("n", "k"), [(2, 1), (3, 2), (4, 2), (5, 4), (8, 4), (9, 8), (2**40, 2**39)]
)
def test_split_point_is_the_largest_power_of_two_below_n(n: int, k: int) -> None:
    """RFC 6962 splits n leaves at the largest power of two strictly smaller than n."""
    assert split_point(n) == k


# --- roots and node hashes ---------------------------------------------------------------------


@pytest.mark.parametrize("size", sorted(int(s) for s in VECTORS["roots"]))
def test_root_of_the_first_n_vector_leaves(size: int) -> None:
    """root(D[0:n]) equals the published root for n = 0..8."""
    assert root(LEAVES[:size]).hex() == VECTORS["roots"][str(size)]


def test_node_hashes_are_roots_of_perfect_subtrees() -> None:
    """Each published node hash is the root of its 2^level leaves."""
    levels = VECTORS["node_hashes"]["levels"]
    assert len(levels) == 4
    for level, nodes in enumerate(levels):
        width = 1 << level
        assert len(nodes) == 8 // width
        for index, want in enumerate(nodes):
            assert root(LEAVES[index * width : (index + 1) * width]).hex() == want


def test_root_follows_the_recursive_definition() -> None:
    """MTH(D[n]) = node(MTH(D[0:k]), MTH(D[k:n])) with k the split point, for n = 2..70."""
    for n in range(2, 71):
        k = split_point(n)
        assert root(ENTRIES[:n]) == node_hash(root(ENTRIES[:k]), root(ENTRIES[k:n]))


def test_single_leaf_root_is_its_leaf_hash() -> None:
    """A one-entry tree's root is that entry's leaf hash (no padding, no extra node)."""
    assert root([b"only"]) == leaf_hash(b"only")


# --- vector proofs -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=case_id)
def test_inclusion_vector_is_produced_and_verifies(case: dict[str, Any]) -> None:
    """inclusion_proof gives the published path, and verify_inclusion accepts it."""
    leaves = LEAVES[: case["size"]]
    assert leaves[case["index"]].hex() == case["leaf_hex"]
    assert leaf_hash(h(case["leaf_hex"])).hex() == case["leaf_hash"]
    assert root(leaves).hex() == case["root"]
    assert [p.hex() for p in inclusion_proof(leaves, case["index"])] == case["proof"]
    verify_inclusion(
        h(case["leaf_hash"]), case["index"], case["size"], hs(case["proof"]), h(case["root"])
    )


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=case_id)
def test_consistency_vector_is_produced_and_verifies(case: dict[str, Any]) -> None:
    """consistency_proof gives the published proof, and verify_consistency accepts it."""
    assert root(LEAVES[: case["size1"]]).hex() == case["root1"]
    assert root(LEAVES[: case["size2"]]).hex() == case["root2"]
    proof = consistency_proof(LEAVES[: case["size2"]], case["size1"])
    assert [p.hex() for p in proof] == case["proof"]
    verify_consistency(
        case["size1"], case["size2"], h(case["root1"]), h(case["root2"]), hs(case["proof"])
    )


def test_edge_case_single_entry_tree_with_matching_root_and_leaf() -> None:
    """A one-leaf tree ('data'): empty proof, root equal to the leaf hash, verifies."""
    (case,) = VECTORS["edge_cases"]["inclusion"]
    assert leaf_hash(h(case["leaf_hex"])).hex() == case["leaf_hash"] == case["root"]
    assert root([h(case["leaf_hex"])]).hex() == case["root"]
    assert inclusion_proof([h(case["leaf_hex"])], 0) == []
    verify_inclusion(h(case["leaf_hash"]), 0, 1, [], h(case["root"]))


def test_edge_case_equal_sizes_with_placeholder_roots_is_refused_for_their_length() -> None:
    """Deliberate difference from upstream: its 12-byte placeholder roots are not hashes.

    Upstream accepts size1 == size2 == 1 with identical roots of any length; tfshare refuses
    every hash that is not 32 bytes. The same case with 32-byte identical roots verifies.
    """
    (case,) = VECTORS["edge_cases"]["consistency"]
    assert len(h(case["root1"])) == 12
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(case["size1"], case["size2"], h(case["root1"]), h(case["root2"]), [])
    assert code_of(excinfo) == ProofCode.E_PROOF_HASH
    same = hashlib.sha256(h(case["root1"])).digest()
    verify_consistency(case["size1"], case["size2"], same, same, [])


# --- negative vectors --------------------------------------------------------------------------


def _all_32(*values: bytes) -> bool:
    return all(len(v) == 32 for v in values)


def expected_inclusion_code(case: dict[str, Any]) -> ProofCode:
    """The first defect, in the documented order: size, index, hash length, proof length."""
    size, index = case["size"], case["index"]
    if not 0 <= size <= MAX_TREE_SIZE:
        return ProofCode.E_PROOF_SIZE
    if not 0 <= index < size:
        return ProofCode.E_PROOF_INDEX
    if not _all_32(h(case["leaf_hash"]), h(case["root"]), *hs(case["proof"])):
        return ProofCode.E_PROOF_HASH
    # The right length, from the reference PATH over placeholder entries.
    if len(case["proof"]) != len(inclusion_proof([b""] * size, index)):
        return ProofCode.E_PROOF_LENGTH
    return ProofCode.E_PROOF_ROOT


def expected_consistency_code(case: dict[str, Any]) -> ProofCode:
    size1, size2 = case["size1"], case["size2"]
    if size1 == 0 or size1 > size2:
        return ProofCode.E_PROOF_SIZE
    if not _all_32(h(case["root1"]), h(case["root2"]), *hs(case["proof"])):
        return ProofCode.E_PROOF_HASH
    if len(case["proof"]) != len(consistency_proof([b""] * size2, size1)):
        return ProofCode.E_PROOF_LENGTH
    return ProofCode.E_PROOF_ROOT


@pytest.mark.parametrize(
    "case",
    VECTORS["negative_inclusion"]["cases"],
    ids=lambda c: f"{c['source_file']}-{c['size']}-{c['index']}",
)
def test_negative_inclusion_vector_is_refused(case: dict[str, Any]) -> None:
    """Each of the 92 damaged inclusion proofs is refused, with the code of its defect."""
    with pytest.raises(ProofError) as excinfo:
        verify_inclusion(
            h(case["leaf_hash"]), case["index"], case["size"], hs(case["proof"]), h(case["root"])
        )
    assert code_of(excinfo) == expected_inclusion_code(case)


@pytest.mark.parametrize(
    "case",
    VECTORS["negative_consistency"]["cases"],
    ids=lambda c: f"{c['source_file']}-{c['size1']}-{c['size2']}",
)
def test_negative_consistency_vector_is_refused(case: dict[str, Any]) -> None:
    """Each of the 92 damaged consistency proofs is refused, with the code of its defect."""
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(
            case["size1"], case["size2"], h(case["root1"]), h(case["root2"]), hs(case["proof"])
        )
    assert code_of(excinfo) == expected_consistency_code(case)


def test_negative_vectors_cover_every_code_path() -> None:
    """The vectors exercise all five refusal reasons, not just root mismatches."""
    inclusion = {expected_inclusion_code(c) for c in VECTORS["negative_inclusion"]["cases"]}
    consistency = {expected_consistency_code(c) for c in VECTORS["negative_consistency"]["cases"]}
    assert inclusion == {
        ProofCode.E_PROOF_INDEX,
        ProofCode.E_PROOF_HASH,
        ProofCode.E_PROOF_LENGTH,
        ProofCode.E_PROOF_ROOT,
    }
    assert consistency == {
        ProofCode.E_PROOF_SIZE,
        ProofCode.E_PROOF_HASH,
        ProofCode.E_PROOF_LENGTH,
        ProofCode.E_PROOF_ROOT,
    }


# --- sizes and indices -------------------------------------------------------------------------

SIZES: Final = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129]


def test_empty_tree() -> None:
    """Size 0: root is SHA-256(''), no entry can be proven, no consistency from it."""
    assert root([]) == hashlib.sha256(b"").digest() == EMPTY_ROOT
    with pytest.raises(ProofError) as excinfo:
        inclusion_proof([], 0)
    assert code_of(excinfo) == ProofCode.E_PROOF_INDEX
    with pytest.raises(ProofError) as excinfo:
        verify_inclusion(leaf_hash(b""), 0, 0, [], EMPTY_ROOT)
    assert code_of(excinfo) == ProofCode.E_PROOF_INDEX
    for leaves in ([], [b"a"]):
        with pytest.raises(ProofError) as excinfo:
            consistency_proof(leaves, 0)
        assert code_of(excinfo) == ProofCode.E_PROOF_SIZE
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert code_of(excinfo) == ProofCode.E_PROOF_SIZE
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(0, 1, EMPTY_ROOT, leaf_hash(b"a"), [])
    assert code_of(excinfo) == ProofCode.E_PROOF_SIZE


@pytest.mark.parametrize("size", SIZES)
def test_every_inclusion_proof_verifies(size: int) -> None:
    """Sizes 1, powers of two and one past them: every entry's proof verifies, with the
    predicted length."""
    leaves = ENTRIES[:size]
    tree_root = root(leaves)
    for index in range(size):
        proof = inclusion_proof(leaves, index)
        assert len(proof) == inclusion_proof_size(index, size)
        verify_inclusion(leaf_hash(leaves[index]), index, size, proof, tree_root)


@pytest.mark.parametrize("size", SIZES)
def test_every_consistency_proof_verifies(size: int) -> None:
    """From every old size 1..n to n, the proof verifies and has the predicted length."""
    leaves = ENTRIES[:size]
    new_root = root(leaves)
    for old in range(1, size + 1):
        proof = consistency_proof(leaves, old)
        assert len(proof) == consistency_proof_size(old, size)
        verify_consistency(old, size, root(leaves[:old]), new_root, proof)


def test_proof_of_a_power_of_two_tree_is_one_sibling_per_level() -> None:
    """In a perfect tree of 2^k leaves every proof has exactly k hashes."""
    for k in range(8):
        assert {inclusion_proof_size(i, 1 << k) for i in range(1 << k)} == {k}


def test_consistency_between_equal_sizes_is_empty() -> None:
    """PROOF(n, D[n]) is empty, and verifies only with equal roots."""
    r = root(ENTRIES[:9])
    assert consistency_proof(ENTRIES[:9], 9) == []
    verify_consistency(9, 9, r, r, [])
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(9, 9, r, flip(r, 0), [])
    assert code_of(excinfo) == ProofCode.E_PROOF_ROOT
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(9, 9, r, r, [r])
    assert code_of(excinfo) == ProofCode.E_PROOF_LENGTH


@pytest.mark.parametrize("index", [5, 6, 100, 2**64 - 1, 2**64, -1])
def test_index_outside_the_tree_is_refused(index: int) -> None:
    """index >= size (or negative) is refused, by the generator and the verifier."""
    leaves = ENTRIES[:5]
    with pytest.raises(ProofError) as excinfo:
        inclusion_proof(leaves, index)
    assert code_of(excinfo) == ProofCode.E_PROOF_INDEX
    with pytest.raises(ProofError) as excinfo:
        verify_inclusion(leaf_hash(b"x"), index, 5, inclusion_proof(leaves, 0), root(leaves))
    assert code_of(excinfo) == ProofCode.E_PROOF_INDEX


@pytest.mark.parametrize("size", [-1, -(2**70), 2**64, 2**64 + 5])
def test_sizes_outside_uint64_are_refused(size: int) -> None:
    """Negative sizes and sizes beyond 2^64-1 are refused as E_PROOF_SIZE."""
    with pytest.raises(ProofError) as excinfo:
        verify_inclusion(leaf_hash(b""), 0, size, [], EMPTY_ROOT)
    assert code_of(excinfo) == ProofCode.E_PROOF_SIZE
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(1, size, EMPTY_ROOT, EMPTY_ROOT, [])
    assert code_of(excinfo) == ProofCode.E_PROOF_SIZE
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(size, 2**64 - 1, EMPTY_ROOT, EMPTY_ROOT, [])
    assert code_of(excinfo) == ProofCode.E_PROOF_SIZE


def test_old_size_larger_than_new_size_is_refused() -> None:
    """A consistency proof cannot go backwards."""
    with pytest.raises(ProofError) as excinfo:
        consistency_proof(ENTRIES[:3], 4)
    assert code_of(excinfo) == ProofCode.E_PROOF_SIZE
    with pytest.raises(ProofError) as excinfo:
        verify_consistency(4, 3, root(ENTRIES[:4]), root(ENTRIES[:3]), [EMPTY_ROOT])
    assert code_of(excinfo) == ProofCode.E_PROOF_SIZE


@pytest.mark.parametrize("size", [2, 3, 8, 9, 13])
def test_wrong_inclusion_proof_length_is_refused(size: int) -> None:
    """One hash too many or too few (or none) is E_PROOF_LENGTH, wherever it is."""
    leaves = ENTRIES[:size]
    r = root(leaves)
    for index in range(size):
        proof = inclusion_proof(leaves, index)
        lh = leaf_hash(leaves[index])
        variants = [[*proof, r], [r, *proof], proof[:-1], proof[1:], []]
        for bad in variants:
            if len(bad) == len(proof):
                continue
            with pytest.raises(ProofError) as excinfo:
                verify_inclusion(lh, index, size, bad, r)
            assert code_of(excinfo) == ProofCode.E_PROOF_LENGTH


@pytest.mark.parametrize(("old", "new"), [(1, 2), (2, 3), (3, 8), (4, 9), (6, 13), (7, 8)])
def test_wrong_consistency_proof_length_is_refused(old: int, new: int) -> None:
    """Consistency proofs with a hash added or removed are E_PROOF_LENGTH."""
    leaves = ENTRIES[:new]
    r1, r2 = root(leaves[:old]), root(leaves)
    proof = consistency_proof(leaves, old)
    for bad in ([*proof, r1], [r2, *proof], proof[:-1], proof[1:], []):
        with pytest.raises(ProofError) as excinfo:
            verify_consistency(old, new, r1, r2, bad)
        assert code_of(excinfo) == ProofCode.E_PROOF_LENGTH


@pytest.mark.parametrize("size", [1, 2, 5, 8, 13])
def test_any_flipped_bit_in_an_inclusion_proof_is_refused(size: int) -> None:
    """Flipping any one of 256 bits in the leaf hash, a proof hash or the root is detected."""
    leaves = ENTRIES[:size]
    r = root(leaves)
    for index in range(size):
        proof = inclusion_proof(leaves, index)
        lh = leaf_hash(leaves[index])
        for bit in range(0, 256, 37):
            for position in range(len(proof)):
                bad = list(proof)
                bad[position] = flip(bad[position], bit)
                with pytest.raises(ProofError) as excinfo:
                    verify_inclusion(lh, index, size, bad, r)
                assert code_of(excinfo) == ProofCode.E_PROOF_ROOT
            for args in ((flip(lh, bit), r), (lh, flip(r, bit))):
                with pytest.raises(ProofError) as excinfo:
                    verify_inclusion(args[0], index, size, proof, args[1])
                assert code_of(excinfo) == ProofCode.E_PROOF_ROOT


@pytest.mark.parametrize(("old", "new"), [(1, 2), (2, 5), (3, 8), (4, 9), (6, 13), (7, 8)])
def test_any_flipped_bit_in_a_consistency_proof_is_refused(old: int, new: int) -> None:
    """Flipping a bit in any proof hash, the old root or the new root is detected."""
    leaves = ENTRIES[:new]
    r1, r2 = root(leaves[:old]), root(leaves)
    proof = consistency_proof(leaves, old)
    for bit in range(0, 256, 29):
        cases = [(r1, r2, [*proof[:i], flip(p, bit), *proof[i + 1 :]]) for i, p in enumerate(proof)]
        cases += [(flip(r1, bit), r2, proof), (r1, flip(r2, bit), proof)]
        for a, b, p in cases:
            with pytest.raises(ProofError) as excinfo:
                verify_consistency(old, new, a, b, p)
            assert code_of(excinfo) == ProofCode.E_PROOF_ROOT


def test_proof_for_one_entry_does_not_prove_another() -> None:
    """A valid proof checked against another index, size or leaf is refused."""
    leaves = ENTRIES[:11]
    r = root(leaves)
    proof = inclusion_proof(leaves, 4)
    verify_inclusion(leaf_hash(leaves[4]), 4, 11, proof, r)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(leaves[5]), 4, 11, proof, r)
    for index in (0, 3, 5, 6, 7, 10):
        with pytest.raises(ProofError):
            verify_inclusion(leaf_hash(leaves[4]), index, 11, proof, r)
    # Sizes whose path has another length are refused. (Sizes with the same path shape, such
    # as 12 here, cannot be told apart by the proof: the size is bound to the root by the
    # signed checkpoint, which is where it must come from.)
    for size in (5, 6, 7, 8):
        with pytest.raises(ProofError) as excinfo:
            verify_inclusion(leaf_hash(leaves[4]), 4, size, proof, r)
        assert code_of(excinfo) == ProofCode.E_PROOF_LENGTH


@pytest.mark.parametrize("bad_len", [0, 31, 33, 64])
def test_hashes_that_are_not_32_bytes_are_refused(bad_len: int) -> None:
    """Leaf hash, root, proof element, old/new root: 32 bytes or E_PROOF_HASH."""
    leaves = ENTRIES[:6]
    r = root(leaves)
    proof = inclusion_proof(leaves, 2)
    lh = leaf_hash(leaves[2])
    bad = b"\x01" * bad_len
    for args in ((bad, r, proof), (lh, bad, proof), (lh, r, [bad, *proof[1:]])):
        with pytest.raises(ProofError) as excinfo:
            verify_inclusion(args[0], 2, 6, args[2], args[1])
        assert code_of(excinfo) == ProofCode.E_PROOF_HASH
    r1 = root(leaves[:3])
    cproof = consistency_proof(leaves, 3)
    for a, b, p in ((bad, r, cproof), (r1, bad, cproof), (r1, r, [*cproof[:-1], bad])):
        with pytest.raises(ProofError) as excinfo:
            verify_consistency(3, 6, a, b, p)
        assert code_of(excinfo) == ProofCode.E_PROOF_HASH


def test_proof_sizes_match_the_reference_for_all_small_trees() -> None:
    """The closed-form proof lengths equal the lengths of the reference proofs, n <= 64."""
    for size in range(1, 65):
        leaves = ENTRIES[:size]
        for index in range(size):
            assert inclusion_proof_size(index, size) == len(inclusion_proof(leaves, index))
        for old in range(1, size + 1):
            assert consistency_proof_size(old, size) == len(consistency_proof(leaves, old))


def test_proof_sizes_at_the_uint64_limit() -> None:
    """Sizes up to 2^64-1 are handled without recursion: at most 64 hashes per proof."""
    top = MAX_TREE_SIZE  # a perfect left half of 2^63 leaves, a right part of 2^63-1
    # Leaf 0: 63 siblings inside the left half, then the right part.
    assert inclusion_proof_size(0, top) == 64
    # The last leaf: one left sibling per perfect subtree of the 63 set bits of 2^64-2.
    assert inclusion_proof_size(top - 1, top) == 63
    # The first leaf of the right part: 62 siblings inside its first 2^62 leaves, the rest of
    # the right part, then the left half.
    assert inclusion_proof_size(2**63, top) == 64
    # From the left half (the old root is known) only the right part's hash is needed.
    assert consistency_proof_size(2**63, top) == 1
    # From one leaf: that leaf's whole audit path.
    assert consistency_proof_size(1, top) == 64
    assert max(inclusion_proof_size(2**k, top) for k in range(64)) <= 64


def test_proof_error_is_a_trust_error_with_code_and_hint() -> None:
    """ProofError belongs to the project's error family (exit code TRUST) with a hint."""
    with pytest.raises(ProofError) as excinfo:
        verify_inclusion(leaf_hash(b""), 0, 1, [], EMPTY_ROOT)
    err = excinfo.value
    assert isinstance(err, TrustError)
    assert isinstance(err, TfshareError)
    assert err.exit_code == ExitCode.TRUST
    assert err.code == "E_PROOF_ROOT"
    assert err.proof_code is ProofCode.E_PROOF_ROOT
    assert err.hint
    assert str(err).startswith("E_PROOF_ROOT: ")
