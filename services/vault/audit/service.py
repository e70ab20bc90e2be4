"""The audit log: sequencing entries into the Merkle tree, signing tree heads, proofs.

Writers only insert entries (``shared.audit.append``). The sequencer then gives each entry of a
finished transaction the next position (``seq``) in the log, hashes it as an RFC 9162 leaf and
stores every perfect subtree it completes. Positions never change and have no gaps.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nacl.signing import SigningKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.audit.repository import AuditRepository
from shared import audit, merkle
from shared.audit import AuditAction, AuditEntry, canonical_bytes
from shared.db import utc_now
from shared.errors import NotFound, UnprocessableEntity
from shared.signatures import key_id, public_key_of, tree_head_message

ZERO_TXID = "0"


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    root_hash: bytes
    signed_at: str
    key_id: str
    signature: bytes

    @classmethod
    def from_row(cls, row: Any) -> TreeHead:
        return cls(
            tree_size=row["tree_size"],
            root_hash=bytes(row["root_hash"]),
            signed_at=_iso(row["signed_at"]),
            key_id=row["key_id"],
            signature=bytes(row["signature"]),
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class AuditLog:
    def __init__(self, session: AsyncSession, signing_key: SigningKey | None = None) -> None:
        self.session = session
        self.repository = AuditRepository(session)
        self.signing_key = signing_key

    async def sequence(self, batch: int = 5000) -> int:
        """Append the entries of finished transactions to the tree; return how many."""
        await self.repository.lock_sequencer()
        last = await self.repository.last_leaf()
        next_seq = 0 if last is None else int(last["seq"]) + 1
        after_txid = ZERO_TXID if last is None else str(last["txid"])
        after_pk = -1 if last is None else int(last["entry_pk"])
        rows = await self.repository.unsequenced(after_txid, after_pk, batch)
        if not rows:
            return 0
        # The new leaves' left siblings are the maximal perfect subtrees of [0, next_seq).
        known = await self.repository.node_hashes(merkle.perfect_nodes(0, next_seq))
        now = utc_now()
        new_leaves: list[dict[str, Any]] = []
        new_nodes: list[dict[str, Any]] = []
        for offset, row in enumerate(rows):
            seq = next_seq + offset
            leaf = merkle.leaf_hash(canonical_bytes(row))
            known[(0, seq)] = leaf
            new_leaves.append(
                {
                    "seq": seq,
                    "entry_id": row["entry_id"],
                    "entry_pk": row["id"],
                    "txid": row["txid_text"],
                    "leaf_hash": leaf,
                    "sequenced_at": now,
                }
            )
            for level, index in merkle.parents_completed_by(seq):
                digest = merkle.node_hash(
                    known[(level - 1, 2 * index)], known[(level - 1, 2 * index + 1)]
                )
                known[(level, index)] = digest
                new_nodes.append({"level": level, "idx": index, "hash": digest})
        await self.repository.add_leaves(new_leaves)
        await self.repository.add_nodes(new_nodes)
        return len(rows)

    async def sequence_all(self, batch: int = 5000) -> int:
        total = 0
        while added := await self.sequence(batch):
            total += added
        return total

    async def root(self, tree_size: int) -> bytes:
        nodes = await self.repository.node_hashes(merkle.perfect_nodes(0, tree_size))
        return merkle.range_hash(0, tree_size, nodes)

    async def sign_head(self) -> TreeHead:
        """Sign the current tree (once per size: signing twice returns the first head)."""
        if self.signing_key is None:
            raise RuntimeError("this log has no signing key")
        size = await self.repository.tree_size()
        existing = await self.repository.head(size)
        if existing is not None:
            return TreeHead.from_row(existing)
        root = await self.root(size)
        signed_at = _iso(utc_now())
        signature = self.signing_key.sign(tree_head_message(size, root, signed_at)).signature
        head = TreeHead(
            tree_size=size,
            root_hash=root,
            signed_at=signed_at,
            key_id=key_id(public_key_of(self.signing_key)),
            signature=signature,
        )
        await self.repository.add_head(
            {
                "tree_size": size,
                "root_hash": root,
                "signed_at": datetime.fromisoformat(signed_at.replace("Z", "+00:00")),
                "key_id": head.key_id,
                "signature": signature,
            }
        )
        return head

    async def signed_head(self, tree_size: int | None) -> TreeHead:
        row = (
            await self.repository.latest_head()
            if tree_size is None
            else await self.repository.head(tree_size)
        )
        if row is None:
            raise NotFound("no signed tree head of that size")
        return TreeHead.from_row(row)

    async def inclusion_proof(
        self, entry_id: uuid.UUID, tree_size: int | None
    ) -> tuple[Any, TreeHead, list[bytes]]:
        """The entry, the signed head it is proved against, and the audit path."""
        leaf = await self.repository.leaf_of(entry_id)
        if leaf is None:
            raise NotFound("no sequenced entry with that id")
        head = await self.signed_head(tree_size)
        if leaf["seq"] >= head.tree_size:
            raise NotFound("the entry is not in that tree head yet: ask for a later head")
        ranges = merkle.inclusion_ranges(leaf["seq"], head.tree_size)
        nodes = await self.repository.node_hashes(merkle.nodes_for(ranges))
        return leaf, head, [merkle.range_hash(a, b, nodes) for a, b in ranges]

    async def consistency_proof(
        self, first: int, second: int
    ) -> tuple[TreeHead, TreeHead, list[bytes]]:
        if not 0 < first <= second:
            raise UnprocessableEntity("need 0 < first <= second", field="query.first")
        old = await self.signed_head(first)
        new = await self.signed_head(second)
        ranges = merkle.consistency_ranges(first, second)
        nodes = await self.repository.node_hashes(merkle.nodes_for(ranges))
        return old, new, [merkle.range_hash(a, b, nodes) for a, b in ranges]


async def purge_expired(session: AsyncSession, *, actor: str) -> int:
    """R241-14: entries are kept three years, then purged, leaving the log verifiable.

    Only the entries go: their leaves (hashes) stay, so every tree head still verifies. The
    purge is itself an entry recording the position below which entries may be missing; the
    verifier takes that watermark from the log, where it cannot be changed unseen."""
    below_seq = (
        await session.execute(
            text(
                "SELECT coalesce(max(l.seq) + 1, 0) FROM audit.leaves l "
                "JOIN audit.entries e USING (entry_id) "
                "WHERE e.occurred_at < now() - interval '3 years'"
            )
        )
    ).scalar_one()
    purged = (
        await session.execute(text("SELECT audit.purge_before(now() - interval '3 years')"))
    ).scalar_one()
    if purged:
        await audit.append(
            session,
            AuditEntry(
                action=AuditAction.audit_purge,
                service="vault",
                actor_subject=actor,
                organisation_id=None,
                details={"below_seq": int(below_seq), "purged": int(purged)},
            ),
        )
    return int(purged)
