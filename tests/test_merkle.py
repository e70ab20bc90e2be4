"""The Merkle tree against a direct reading of RFC 9162: roots, inclusion and consistency
proofs built from stored perfect subtrees verify, and every altered proof fails."""

from __future__ import annotations

import pytest

from shared import merkle


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"entry {i}".encode()) for i in range(n)]


def _nodes(leaves: list[bytes]) -> dict[merkle.Node, bytes]:
    """Every perfect subtree, built the way the log grows: one leaf at a time."""
    nodes: dict[merkle.Node, bytes] = {}
    for index, leaf in enumerate(leaves):
        nodes[(0, index)] = leaf
        for level, idx in merkle.parents_completed_by(index):
            nodes[(level, idx)] = merkle.node_hash(
                nodes[(level - 1, 2 * idx)], nodes[(level - 1, 2 * idx + 1)]
            )
    return nodes


def _rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1, literally."""
    n = len(leaves)
    if n <= 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return _rfc_path(m, leaves[:k]) + [merkle.root_of(leaves[k:])]
    return _rfc_path(m - k, leaves[k:]) + [merkle.root_of(leaves[:k])]


def _rfc_subproof(m: int, leaves: list[bytes], b: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if b else [merkle.root_of(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return _rfc_subproof(m, leaves[:k], b) + [merkle.root_of(leaves[k:])]
    return _rfc_subproof(m - k, leaves[k:], False) + [merkle.root_of(leaves[:k])]


def test_empty_and_single() -> None:
    assert merkle.root_of([]) == bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    leaf = merkle.leaf_hash(b"")
    assert merkle.root_of([leaf]) == leaf


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 16, 17, 31, 100])
def test_stored_subtrees_give_rfc_roots_and_proofs(size: int) -> None:
    leaves = _leaves(size)
    nodes = _nodes(leaves)
    root = merkle.range_hash(0, size, nodes)
    assert root == merkle.root_of(leaves)
    for m in range(size):
        ranges = merkle.inclusion_ranges(m, size)
        assert merkle.nodes_for(ranges) <= set(nodes)
        proof = [merkle.range_hash(a, b, nodes) for a, b in ranges]
        assert proof == _rfc_path(m, leaves)
        assert merkle.verify_inclusion(leaves[m], m, size, proof, root)
        assert (
            not merkle.verify_inclusion(leaves[m], (m + 1) % size, size, proof, root) or size == 1
        )
        if proof:
            bad = [bytes(32)] + proof[1:]
            assert not merkle.verify_inclusion(leaves[m], m, size, bad, root)
    for old in range(1, size + 1):
        ranges = merkle.consistency_ranges(old, size)
        proof = [merkle.range_hash(a, b, nodes) for a, b in ranges]
        assert proof == _rfc_subproof(old, leaves, True)
        old_root = merkle.root_of(leaves[:old])
        assert merkle.verify_consistency(old, size, old_root, root, proof)
        if old < size:
            assert not merkle.verify_consistency(old, size, bytes(32), root, proof)
            assert not merkle.verify_consistency(old, size, old_root, bytes(32), proof)


def test_proof_needs_logarithmic_nodes() -> None:
    size = 1_000_000
    ranges = merkle.inclusion_ranges(123_456, size)
    assert len(merkle.nodes_for(ranges)) <= 2 * size.bit_length()
