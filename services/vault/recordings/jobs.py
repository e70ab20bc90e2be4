"""The vault's background work on uploads: discard resumable uploads left unfinished past
their expiry (their S3 multipart uploads are aborted, their tails dropped)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.recordings.resumable import ResumableService
from services.vault.settings import VaultSettings
from shared.db import session_scope
from shared.storage import ObjectStore

_logger = logging.getLogger("temoin.vault.uploads")


async def expire_uploads(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: ObjectStore,
    settings: VaultSettings,
    every_s: float = 60.0,
) -> None:
    while True:
        try:
            async with session_scope(sessionmaker) as session:
                expired = await ResumableService(session, store, settings).expire()
            if expired:
                _logger.info("discarded %d expired uploads", expired)
        except Exception:  # the loop must survive a database or store outage
            _logger.exception("upload expiry failed; retrying")
        await asyncio.sleep(every_s)
