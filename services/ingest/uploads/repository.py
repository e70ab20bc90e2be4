from __future__ import annotations

import uuid

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.uploads.models import IssuedReceipt
from shared.receipts import Receipt


async def keep_receipt(session: AsyncSession, receipt: Receipt) -> None:
    """Record a signed receipt (the first one stands: signing again gives the same)."""
    await session.execute(
        insert(IssuedReceipt)
        .values(recording_id=uuid.UUID(receipt.recording_id), receipt=receipt.model_dump())
        .on_conflict_do_nothing(index_elements=["recording_id"])
    )
