"""What a witness (the DPO, the préfecture, a court) checks offline, with no access to Témoin:
that an audit entry is in the log under a tree head they kept, signed by the log's key.

Tree heads are C2SP checkpoints (shared/notes.py) signed by the vault, whose two extension
lines bind the time the vault signed it and the head before it (docs/audit.md):

    <origin>
    <tree size>
    <root hash, base64>
    time <POSIX seconds>
    previous <tree size> <root hash, base64>

Heads signed before checkpoints existed (migration 0010) carry the older message of
``shared.signatures.tree_head_message`` and still verify.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared import merkle
from shared.audit import CANONICAL_FIELDS, canonical_bytes
from shared.notes import ED25519, EMPTY_ROOT, Checkpoint, Note, NoteError, VerifierKey
from shared.signatures import b64decode, b64encode, tree_head_message, verify

TIME_LINE = "time"
PREVIOUS_LINE = "previous"


@dataclass(frozen=True)
class LogHead:
    """What the vault signs of its log at a tree size: the checkpoint and its chain link."""

    origin: str
    size: int
    root: bytes
    signed_at: int  # POSIX seconds
    previous_size: int  # 0 for the first head
    previous_root: bytes  # the empty tree's root for the first head

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            origin=self.origin,
            size=self.size,
            root=self.root,
            extensions=(
                f"{TIME_LINE} {self.signed_at}",
                f"{PREVIOUS_LINE} {self.previous_size} {b64encode(self.previous_root)}",
            ),
        )

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> LogHead:
        if len(checkpoint.extensions) != 2:
            raise NoteError("a Témoin checkpoint has two extension lines: time and previous")
        time_line, previous_line = (line.split(" ") for line in checkpoint.extensions)
        try:
            if time_line[0] != TIME_LINE or len(time_line) != 2:
                raise ValueError(TIME_LINE)
            if previous_line[0] != PREVIOUS_LINE or len(previous_line) != 3:
                raise ValueError(PREVIOUS_LINE)
            signed_at, previous_size = int(time_line[1]), int(previous_line[1])
            previous_root = b64decode(previous_line[2])
        except ValueError as exc:
            raise NoteError(f"malformed extension line: {exc}") from exc
        if len(previous_root) != 32 or not 0 <= previous_size < max(checkpoint.size, 1):
            raise NoteError("a head's previous head is smaller than itself")
        return cls(
            origin=checkpoint.origin,
            size=checkpoint.size,
            root=checkpoint.root,
            signed_at=signed_at,
            previous_size=previous_size,
            previous_root=previous_root,
        )

    @classmethod
    def first(cls, origin: str, size: int, root: bytes, signed_at: int) -> LogHead:
        return cls(origin, size, root, signed_at, 0, EMPTY_ROOT)

    @property
    def signed_at_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.signed_at, UTC)


def log_key(origin: str, public_key: str) -> VerifierKey:
    """The vault's head key as a note verifier key: named after the log's origin."""
    return VerifierKey(origin, ED25519, b64decode(public_key))


def open_head(note_text: str, public_key: str) -> LogHead:
    """A signed checkpoint of the log, its signature checked (NoteError if it fails)."""
    note = Note.parse(note_text)
    checkpoint = Checkpoint.parse(note.text)
    if not note.verified_by([log_key(checkpoint.origin, public_key)]):
        raise NoteError("the checkpoint is not signed by the log's key")
    return LogHead.from_checkpoint(checkpoint)


def head_problems(head: Mapping[str, Any], public_key: str) -> list[str]:
    """Problems with a tree head as the API gives it (a checkpoint, or an older head)."""
    where = f"tree head {head['tree_size']}"
    if head.get("checkpoint"):
        try:
            opened = open_head(str(head["checkpoint"]), public_key)
        except NoteError as exc:
            return [f"{where}: signature does not verify ({exc})"]
        if (opened.size, opened.root.hex()) != (int(head["tree_size"]), head["root_hash"]):
            return [f"{where}: the checkpoint names another tree"]
        return []
    message = tree_head_message(
        int(head["tree_size"]), bytes.fromhex(head["root_hash"]), str(head["signed_at"])
    )
    if not verify(public_key, message, str(head["signature"])):
        return [f"{where}: signature does not verify"]
    return []


class NotAProof(ValueError):
    """A document that is not what a witness checks: it says what is wrong, in one line."""


_PROOF_SOURCE = (
    "an inclusion proof is what GET /v1/organisations/{org_id}/audit/entries/{entry_id}/proof "
    "answers (or a JSON list of them)"
)
_HEADS_SOURCE = "the witnessed heads are what `temoin audit heads` writes"


def _is_hash(value: Any) -> bool:
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0  # bool is an int too: not a count


def _head_problem(head: Any) -> str | None:
    if not isinstance(head, Mapping):
        return "a tree head is not a JSON object"
    if not _is_count(head.get("tree_size")):
        return "a tree head has no tree_size (a whole number)"
    if not _is_hash(head.get("root_hash")):
        return "a tree head has no root_hash (64 hex digits)"
    if not isinstance(head.get("signature"), str) or not isinstance(head.get("signed_at"), str):
        return "a tree head has no signature or signed_at"
    if head.get("checkpoint") is not None and not isinstance(head["checkpoint"], str):
        return "a tree head's checkpoint is not text"
    return None


def _proof_problem(proof: Any) -> str | None:
    if not isinstance(proof, Mapping):
        return "not a JSON object"
    entry = proof.get("entry")
    if not isinstance(entry, Mapping):
        return "no entry (a JSON object)"
    missing = [name for name in CANONICAL_FIELDS if name not in entry]
    if missing:
        return f"its entry lacks {', '.join(missing)}"
    for name in ("leaf_index", "tree_size"):
        if not _is_count(proof.get(name)):
            return f"no {name} (a whole number)"
    if not _is_hash(proof.get("leaf_hash")):
        return "no leaf_hash (64 hex digits)"
    path = proof.get("audit_path")
    if not isinstance(path, list) or not all(_is_hash(h) for h in path):
        return "no audit_path (a list of 64-hex-digit hashes)"
    return _head_problem(proof.get("head"))


def proofs_in(document: Any) -> list[Mapping[str, Any]]:
    """The inclusion proofs of a document (one proof, or a list of them), each of the shape
    the vault gives, or NotAProof saying what is wrong."""
    proofs = document if isinstance(document, list) else [document]
    if not proofs:
        raise NotAProof(f"an empty list holds no proof: {_PROOF_SOURCE}")
    for number, proof in enumerate(proofs, 1):
        problem = _proof_problem(proof)
        if problem is not None:
            where = (
                f"item {number} is not an inclusion proof"
                if isinstance(document, list)
                else ("not an inclusion proof")
            )
            raise NotAProof(f"{where}: {problem}; {_PROOF_SOURCE}")
    return proofs


def heads_in(document: Any) -> list[Mapping[str, Any]]:
    """The witnessed tree heads of a document (a list), or NotAProof saying what is wrong."""
    if not isinstance(document, list):
        raise NotAProof(f"not a list of tree heads: {_HEADS_SOURCE}")
    for number, head in enumerate(document, 1):
        problem = _head_problem(head)
        if problem is not None:
            raise NotAProof(f"item {number}: {problem}; {_HEADS_SOURCE}")
    return document


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
