from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Column, MetaData, String, Table, Text, delete, select
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.stations.models import StationNonce

# The vault's read-only view of its docking stations (docs/architecture.md).
station_keys = Table(
    "station_keys",
    MetaData(schema="vault"),
    Column("station_id", UUID(as_uuid=True)),
    Column("organisation_id", UUID(as_uuid=True)),
    Column("name", Text),
    Column("public_key", String(44)),
    Column("status", String(16)),
)


@dataclass(frozen=True)
class StationKey:
    station_id: uuid.UUID
    organisation_id: uuid.UUID
    name: str
    public_key: str
    active: bool


class StationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def station(self, station_id: uuid.UUID) -> StationKey | None:
        row = (
            await self.session.execute(
                select(station_keys).where(station_keys.c.station_id == station_id)
            )
        ).one_or_none()
        if row is None:
            return None
        return StationKey(
            station_id=row.station_id,
            organisation_id=row.organisation_id,
            name=row.name,
            public_key=row.public_key,
            active=row.status == "active",
        )

    async def use_nonce(self, station_id: uuid.UUID, nonce: str, expires_at: datetime) -> bool:
        """Record the nonce; False when it was already used (a replay)."""
        result = await self.session.execute(
            insert(StationNonce)
            .values(station_id=station_id, nonce=nonce, expires_at=expires_at)
            .on_conflict_do_nothing()
            .returning(StationNonce.nonce)
        )
        return result.scalar_one_or_none() is not None

    async def forget_nonces_before(self, moment: datetime) -> None:
        await self.session.execute(delete(StationNonce).where(StationNonce.expires_at < moment))
