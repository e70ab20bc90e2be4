from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, Select, and_, func, select, text, tuple_
from sqlalchemy.dialects.postgresql import distinct_on, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.vault.audit.tables import cosignatures, leaves, nodes, tree_heads
from shared.audit import entries, naming
from shared.merkle import Node

SEQUENCER_LOCK = 0x7E301  # pg_advisory_xact_lock key: one sequencer at a time

_UNSEQUENCED = text(
    """
    SELECT e.*, e.txid::text AS txid_text
      FROM audit.entries e
     WHERE (e.txid, e.id) > (CAST(CAST(:after_txid AS text) AS xid8), :after_pk)
       AND e.txid < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY e.txid, e.id
     LIMIT :limit
    """
)


_LAST_REFUSAL = text(
    "SELECT txid::text AS txid, entry_pk FROM audit.refusals "
    "ORDER BY txid DESC, entry_pk DESC LIMIT 1"
)
_FIRST_AUTHENTICATED = text(
    "SELECT l.seq FROM audit.leaves l JOIN audit.entries e ON e.entry_id = l.entry_id "
    "WHERE e.authenticator IS NOT NULL ORDER BY l.seq LIMIT 1"
)
_ADD_REFUSAL = text(
    "INSERT INTO audit.refusals (entry_pk, entry_id, txid, reason, refused_at) "
    "VALUES (:entry_pk, :entry_id, CAST(CAST(:txid AS text) AS xid8), :reason, :refused_at) "
    "ON CONFLICT (entry_pk) DO NOTHING"
)


@dataclass(frozen=True)
class EntrySelection:
    """The audit entries of one organisation a DPO or a responsable searches for."""

    organisation_id: uuid.UUID
    recording_id: uuid.UUID | None = None
    actor: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> ColumnElement[bool]:
        conditions = [entries.c.organisation_id == self.organisation_id]
        if self.recording_id is not None:
            conditions.append(naming(self.recording_id))
        if self.actor is not None:
            conditions.append(entries.c.actor_subject == self.actor)
        if self.action is not None:
            conditions.append(entries.c.action == self.action)
        if self.since is not None:
            conditions.append(entries.c.occurred_at >= self.since)
        if self.until is not None:
            conditions.append(entries.c.occurred_at < self.until)
        return and_(*conditions)


def _selected(where: ColumnElement[bool]) -> Select[Any]:
    return (
        select(entries, leaves.c.seq)
        .outerjoin(leaves, leaves.c.entry_id == entries.c.entry_id)
        .where(where)
    )


class AuditRepository:
    # A connection will do for reading (`temoin audit verify --registry`).
    def __init__(self, session: AsyncSession | AsyncConnection) -> None:
        self.session = session

    async def lock_sequencer(self) -> None:
        await self.session.execute(select(func.pg_advisory_xact_lock(SEQUENCER_LOCK)))

    async def last_leaf(self) -> RowMapping | None:
        statement = select(leaves).order_by(leaves.c.seq.desc()).limit(1)
        return (await self.session.execute(statement)).mappings().one_or_none()

    async def tree_size(self) -> int:
        last = await self.last_leaf()
        return 0 if last is None else int(last["seq"]) + 1

    async def unsequenced(self, after_txid: str, after_pk: int, limit: int) -> list[RowMapping]:
        """Entries of finished transactions not in the log yet, in the log's order."""
        result = await self.session.execute(
            _UNSEQUENCED, {"after_txid": after_txid, "after_pk": after_pk, "limit": limit}
        )
        return list(result.mappings())

    async def last_refusal(self) -> RowMapping | None:
        return (await self.session.execute(_LAST_REFUSAL)).mappings().one_or_none()

    async def add_refusals(self, rows: Sequence[dict[str, Any]]) -> None:
        await self.session.execute(_ADD_REFUSAL, list(rows))

    async def since_txid(self) -> int:
        """Entries of transactions below this one predate authenticators (migration 0010)."""
        value = await self.session.scalar(
            text("SELECT max(since_txid::text::numeric) FROM audit.authentication")
        )
        return int(value or 0)

    async def first_authenticated(self) -> int | None:
        """The position of the log's first entry with an authenticator (the sequencer logs one
        only if it verifies; one set by hand afterwards makes its entry differ from its leaf,
        which `temoin audit verify` reports). Reads the log's prefix of older entries."""
        value = await self.session.scalar(_FIRST_AUTHENTICATED)
        return None if value is None else int(value)

    async def add_leaves(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(leaves.insert(), list(rows))

    async def add_nodes(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(nodes.insert(), list(rows))

    async def node_hashes(self, wanted: Iterable[Node]) -> dict[Node, bytes]:
        """Perfect-subtree hashes: level 0 from the leaves, higher levels from the nodes."""
        wanted = set(wanted)
        found: dict[Node, bytes] = {}
        seqs = [index for level, index in wanted if level == 0]
        if seqs:
            result = await self.session.execute(
                select(leaves.c.seq, leaves.c.leaf_hash).where(leaves.c.seq.in_(seqs))
            )
            found.update({(0, row.seq): row.leaf_hash for row in result})
        higher = [(level, index) for level, index in wanted if level > 0]
        if higher:
            result = await self.session.execute(
                select(nodes.c.level, nodes.c.idx, nodes.c.hash).where(
                    tuple_(nodes.c.level, nodes.c.idx).in_(higher)
                )
            )
            found.update({(row.level, row.idx): row.hash for row in result})
        return found

    async def leaf_of(self, entry_id: uuid.UUID) -> RowMapping | None:
        statement = (
            select(leaves, entries)
            .join(entries, entries.c.entry_id == leaves.c.entry_id)
            .where(leaves.c.entry_id == entry_id)
        )
        return (await self.session.execute(statement)).mappings().one_or_none()

    async def add_head(self, row: dict[str, Any]) -> None:
        await self.session.execute(tree_heads.insert().values(**row))

    async def restore_head(self, row: dict[str, Any]) -> None:
        await self.session.execute(
            insert(tree_heads).values(**row).on_conflict_do_nothing(index_elements=["tree_size"])
        )

    async def heads_signed_before(self, moment: datetime) -> list[RowMapping]:
        """Heads signed at or before ``moment``, largest first."""
        statement = (
            select(tree_heads)
            .where(tree_heads.c.signed_at <= moment)
            .order_by(tree_heads.c.tree_size.desc())
            .limit(20)
        )
        return list((await self.session.execute(statement)).mappings())

    async def add_cosignature(self, row: dict[str, Any]) -> None:
        await self.session.execute(insert(cosignatures).values(**row).on_conflict_do_nothing())

    async def cosignatures_of(self, tree_size: int) -> list[RowMapping]:
        statement = (
            select(cosignatures)
            .where(cosignatures.c.tree_size == tree_size)
            .order_by(cosignatures.c.cosigned_at, cosignatures.c.id)
        )
        return list((await self.session.execute(statement)).mappings())

    async def latest_cosignatures(self) -> list[RowMapping]:
        """Each witness key's latest cosignature."""
        statement = (
            select(cosignatures)
            .ext(distinct_on(cosignatures.c.witness, cosignatures.c.key_hash))
            .order_by(
                cosignatures.c.witness,
                cosignatures.c.key_hash,
                cosignatures.c.cosigned_at.desc(),
                cosignatures.c.tree_size.desc(),
            )
        )
        return list((await self.session.execute(statement)).mappings())

    async def head(self, tree_size: int) -> RowMapping | None:
        statement = select(tree_heads).where(tree_heads.c.tree_size == tree_size)
        return (await self.session.execute(statement)).mappings().one_or_none()

    async def latest_head(self) -> RowMapping | None:
        statement = select(tree_heads).order_by(tree_heads.c.tree_size.desc()).limit(1)
        return (await self.session.execute(statement)).mappings().one_or_none()

    async def heads(self, *, after_size: int = -1, limit: int = 100) -> list[RowMapping]:
        statement = (
            select(tree_heads)
            .where(tree_heads.c.tree_size > after_size)
            .order_by(tree_heads.c.tree_size)
            .limit(limit)
        )
        return list((await self.session.execute(statement)).mappings())

    # --- queries for people and for the reporting feed --------------------------------

    async def search(
        self,
        selection: EntrySelection,
        *,
        limit: int,
        offset: int,
    ) -> tuple[list[RowMapping], int]:
        where = selection.where()
        total = (
            await self.session.execute(select(func.count()).select_from(entries).where(where))
        ).scalar_one()
        statement = (
            _selected(where)
            .order_by(entries.c.occurred_at, entries.c.id)
            .limit(limit)
            .offset(offset)
        )
        return list((await self.session.execute(statement)).mappings()), total

    async def search_after(
        self, selection: EntrySelection, after: tuple[datetime, int] | None, limit: int
    ) -> list[RowMapping]:
        """The next ``limit`` entries of the selection after ``after`` (occurred_at, id), in the
        order of ``search``: a keyset, so that reading a whole selection batch by batch costs
        the same at its end as at its start."""
        where = selection.where()
        if after is not None:
            where = and_(where, tuple_(entries.c.occurred_at, entries.c.id) > tuple_(*after))
        statement = _selected(where).order_by(entries.c.occurred_at, entries.c.id).limit(limit)
        return list((await self.session.execute(statement)).mappings())
