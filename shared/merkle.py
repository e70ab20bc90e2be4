"""Merkle tree hashing and proofs as RFC 9162 (Certificate Transparency v2) defines them.

    leaf hash  = SHA-256(0x00 || entry)
    node hash  = SHA-256(0x01 || left || right)
    MTH(D[n])  = the root of the first n leaves, split at the largest power of two below n

Proofs are lists of MTH values over ranges of leaves. Every range that the RFC's recursion
visits is made of *perfect* subtrees: 2^level leaves starting at a multiple of 2^level. Those
are stored once (level, index) when the log grows, so a proof needs O(log n) stored hashes,
whatever the size of the log. This module is pure: callers fetch the perfect-subtree hashes
that ``nodes_for`` names and pass them in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

Node = tuple[int, int]  # (level, index): leaves [index * 2^level, (index + 1) * 2^level)


class NodeLookup(Protocol):
    def __getitem__(self, node: Node, /) -> bytes: ...


EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two strictly below ``size`` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def perfect_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees whose hashes give MTH(D[start:end]), left to right."""
    size = end - start
    if size <= 0:
        return []
    if size & (size - 1) == 0 and start % size == 0:
        return [(size.bit_length() - 1, start // size)]
    k = _split(size)
    return perfect_nodes(start, start + k) + perfect_nodes(start + k, end)


def range_hash(start: int, end: int, nodes: NodeLookup) -> bytes:
    size = end - start
    if size <= 0:
        return EMPTY_ROOT
    if size & (size - 1) == 0 and start % size == 0:
        return nodes[(size.bit_length() - 1, start // size)]
    k = _split(size)
    return node_hash(range_hash(start, start + k, nodes), range_hash(start + k, end, nodes))


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """RFC 9162 2.1.3.1 PATH(m, D[n]) as the leaf ranges whose MTH it lists, bottom first."""
    if not 0 <= index < size:
        raise ValueError("index outside the tree")

    def path(m: int, start: int, end: int) -> list[tuple[int, int]]:
        if end - start <= 1:
            return []
        k = _split(end - start)
        if m < k:
            return [*path(m, start, start + k), (start + k, end)]
        return [*path(m - k, start + k, end), (start, start + k)]

    return path(index, 0, size)


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """RFC 9162 2.1.4.1 PROOF(m, D[n]) as leaf ranges."""
    if not 0 < old_size <= new_size:
        raise ValueError("need 0 < old size <= new size")

    def subproof(m: int, start: int, end: int, whole: bool) -> list[tuple[int, int]]:
        n = end - start
        if m == n:
            return [] if whole else [(start, end)]
        k = _split(n)
        if m <= k:
            return [*subproof(m, start, start + k, whole), (start + k, end)]
        return [*subproof(m - k, start + k, end, False), (start, start + k)]

    return subproof(old_size, 0, new_size, True)


def nodes_for(ranges: Iterable[tuple[int, int]]) -> set[Node]:
    needed: set[Node] = set()
    for start, end in ranges:
        needed.update(perfect_nodes(start, end))
    return needed


def parents_completed_by(index: int) -> list[Node]:
    """Perfect subtrees above leaf ``index`` that it completes (level >= 1), lowest first."""
    completed = []
    level = 1
    while (index + 1) % (1 << level) == 0:
        completed.append((level, (index + 1) // (1 << level) - 1))
        level += 1
    return completed


# --- verification (RFC 9162 2.1.3.2 and 2.1.4.2), what a witness runs ------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    if old_size == new_size:
        return old_root == new_root and not proof
    if old_size == 0 or old_size > new_size or not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


def root_of(leaves: Sequence[bytes]) -> bytes:
    """MTH computed directly from leaf hashes (reference and verifier)."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root_of(leaves[:k]), root_of(leaves[k:]))
