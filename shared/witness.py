"""What a witness (the DPO, the préfecture, a court) checks offline, with no access to Témoin:
that an audit entry is in the log under a tree head they kept, signed by the log's key."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared import merkle
from shared.audit import canonical_bytes
from shared.signatures import tree_head_message, verify


def head_problems(head: Mapping[str, Any], public_key: str) -> list[str]:
    message = tree_head_message(
        int(head["tree_size"]), bytes.fromhex(head["root_hash"]), str(head["signed_at"])
    )
    if not verify(public_key, message, str(head["signature"])):
        return [f"tree head {head['tree_size']}: signature does not verify"]
    return []


def inclusion_problems(
    proof: Mapping[str, Any], witnessed: Iterable[Mapping[str, Any]], public_key: str
) -> list[str]:
    """Problems with an inclusion proof (as the vault API returns it); empty means valid."""
    problems: list[str] = []
    size = int(proof["tree_size"])
    kept = {int(h["tree_size"]): h for h in witnessed}
    head = kept.get(size)
    if head is None:
        problems.append(f"no witnessed tree head of size {size}")
        head = proof["head"]
    elif head["root_hash"] != proof["head"]["root_hash"]:
        problems.append(f"the proof's head {size} differs from the witnessed one")
    problems += head_problems(head, public_key)
    leaf = merkle.leaf_hash(canonical_bytes(proof["entry"]))
    if leaf.hex() != proof["leaf_hash"]:
        problems.append("the entry does not hash to the proof's leaf (entry altered)")
    path = [bytes.fromhex(h) for h in proof["audit_path"]]
    if not merkle.verify_inclusion(
        leaf, int(proof["leaf_index"]), size, path, bytes.fromhex(head["root_hash"])
    ):
        problems.append("the audit path does not lead to the tree head's root")
    return problems
