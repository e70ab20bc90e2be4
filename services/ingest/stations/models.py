from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from services.ingest.models import Base


class StationNonce(Base):
    """Nonces of accepted assertions, kept until the assertion would be stale anyway, so an
    assertion can never be used twice (across every ingest replica: the table is shared)."""

    __tablename__ = "station_nonces"

    station_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
