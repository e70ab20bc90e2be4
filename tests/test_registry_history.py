"""What the log says holds a recording (services/vault/audit/registry.py ``histories``): the
procedures it was attached to more often than detached from, and not closed; a detach the log
cannot vouch for leaves it held. Entries written in the test's transaction (rolled back)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.vault.audit.registry import Attestor, histories
from shared.audit import entries


async def _log(
    connection: AsyncConnection, event: str, procedure: uuid.UUID, *recordings: uuid.UUID
) -> None:
    await connection.execute(
        insert(entries).values(
            entry_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC),
            service="vault",
            action="modification",
            outcome="success",
            organisation_id=uuid.uuid4(),
            actor_subject="test",
            recording_ids=list(recordings),
            details={"procedure": str(procedure), "type": "judiciaire", "event": event},
        )
    )


class _NoDetach(Attestor):
    """Vouches for every entry but the detaches (as if they were not in the signed log)."""

    def __init__(self) -> None:
        pass

    async def attests(self, entry: Mapping[Any, Any]) -> bool:
        return bool(entry["details"].get("event") != "detached")


async def test_holders_count_attaches_and_detaches(connection: AsyncConnection) -> None:
    first, second, closed = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    again, once, kept = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    # ``again``: attached, detached, attached, detached to ``first``; held by ``second``.
    for event in ("attached", "detached", "attached", "detached"):
        await _log(connection, event, first, again)
    await _log(connection, "attached", second, again)
    # ``once``: detached from ``first``, attached again: held by it.
    for event in ("attached", "detached", "attached"):
        await _log(connection, event, first, once)
    # ``kept``: attached to a procedure since closed, and to ``first`` then detached.
    await _log(connection, "attached", closed, kept)
    await _log(connection, "closed", closed, kept)
    await _log(connection, "attached", first, kept)
    await _log(connection, "detached", first, kept)

    found = await histories(connection, [again, once, kept])
    assert found[again].holders == {str(second)}
    assert found[once].holders == {str(first)}
    assert found[kept].holders == set()

    # A detach the log does not vouch for releases nothing.
    vouched = await histories(connection, [again, once, kept], voucher=_NoDetach())
    assert vouched[again].holders == {str(first), str(second)}
    assert vouched[once].holders == {str(first)}
    assert vouched[kept].holders == {str(first)}
