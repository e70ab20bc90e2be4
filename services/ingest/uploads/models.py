from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.ingest.models import Base
from shared.db import TimestampMixin


class IssuedReceipt(TimestampMixin, Base):
    """Every receipt ingest signed, one per recording (a clip uploaded again gets the same).
    The vault puts it in extraction packages, reading it through the view
    ``ingest.issued_receipts`` (migration 0006, docs/architecture.md)."""

    __tablename__ = "receipts"

    recording_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    receipt: Mapped[dict[str, Any]] = mapped_column(JSONB)
