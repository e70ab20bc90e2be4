"""The check of an inclusion proof, made by the dashboard's server with the code a witness runs
offline (shared/witness.py, shared/merkle.py: what `temoin audit check` uses), said in French.

The dashboard recomputes; it does not take the vault's word: the entry's leaf hash from its
canonical bytes, the audit path up to the head's root (RFC 9162 2.1.3.2), and the head's
signature with the log's public key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared import merkle
from shared.audit import canonical_bytes
from shared.notes import NoteError
from shared.witness import NotAProof, head_problems, open_head, proofs_in


@dataclass(frozen=True)
class ProofCheck:
    """What the check found: no problem means the entry is in the signed log."""

    problems: tuple[str, ...]
    tree_size: int | None = None
    leaf_index: int | None = None
    # When the log signed the head: from the verified checkpoint (the time it signs), else
    # the head's own field (older heads, whose signature covers it too).
    signed_at: datetime | str | None = None

    @property
    def verified(self) -> bool:
        return not self.problems


def check_inclusion(proof: Any, public_key: str) -> ProofCheck:
    """Check an inclusion proof as GET …/audit/entries/{id}/proof answers it."""
    try:
        proofs_in(proof)  # the shape a witness expects, before any field is read
    except NotAProof:
        return ProofCheck(
            ("La réponse du coffre n'a pas la forme d'une preuve d'inclusion.",),
        )
    assert isinstance(proof, Mapping)
    head: Mapping[str, Any] = proof["head"]
    size, index = int(proof["tree_size"]), int(proof["leaf_index"])
    problems: list[str] = []
    signed_at: datetime | str | None = str(head["signed_at"])

    if int(head["tree_size"]) != size:
        problems.append(
            f"La preuve porte sur un journal de taille {size}, mais la tête jointe est celle "
            f"de la taille {head['tree_size']}."
        )
    if head_problems(head, public_key):
        problems.append(
            "La signature de la tête n'est pas celle du journal : elle ne se vérifie pas avec "
            "la clé publique du journal."
        )
    elif head.get("checkpoint"):
        try:
            signed_at = open_head(str(head["checkpoint"]), public_key).signed_at_datetime
        except NoteError:  # already reported by head_problems; kept for the type checker
            pass

    leaf = merkle.leaf_hash(canonical_bytes(proof["entry"]))
    if leaf.hex() != proof["leaf_hash"]:
        problems.append(
            "L'entrée ne correspond pas à la feuille de la preuve : son contenu a été modifié."
        )
    path = [bytes.fromhex(node) for node in proof["audit_path"]]
    if not merkle.verify_inclusion(leaf, index, size, path, bytes.fromhex(head["root_hash"])):
        problems.append(
            "Le chemin d'audit ne mène pas à la racine de la tête signée : l'entrée n'est pas "
            "prouvée dans le journal."
        )
    return ProofCheck(tuple(problems), tree_size=size, leaf_index=index, signed_at=signed_at)
