"""The vault's background work on recordings: discard resumable uploads left unfinished past
their expiry, erase recordings at the end of their retention, re-read sealed objects."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.recordings.erasure import ErasureService
from services.vault.recordings.fixity import FixityService, due_before
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


async def erase_expired(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, every_s: float
) -> None:
    """R241-13: keys destroyed and entries written in one transaction, objects deleted
    after, when their lock allows."""
    while True:
        try:
            async with session_scope(sessionmaker) as session:
                report = await ErasureService(session, store).erase_due()
            async with session_scope(sessionmaker) as session:
                deleted = await ErasureService(session, store).delete_objects()
            async with session_scope(sessionmaker) as session:
                orphans = await ErasureService(session, store).delete_orphans()
            for key in orphans.orphans_deleted:
                _logger.warning("erasure: deleted %s, a sealed object no recording refers to", key)
            if report.erased or report.held or deleted.objects_deleted:
                _logger.info(
                    "erasure: %d erased, %d held by a procedure, %d objects deleted",
                    len(report.erased),
                    len(report.held),
                    len(deleted.objects_deleted),
                )
        except Exception:
            _logger.exception("erasure failed; retrying")
        await asyncio.sleep(every_s)


async def scrub_objects(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> None:
    """Re-read every sealed object once per `VAULT_SCRUB_INTERVAL_S`, a batch at a time."""
    while True:
        try:
            while True:
                async with session_scope(sessionmaker) as session:
                    report = await FixityService(session, store, settings).scrub(
                        checked_before=due_before(settings), limit=20
                    )
                if report.checked == 0:
                    break
        except Exception:
            _logger.exception("fixity scrub failed; retrying")
        await asyncio.sleep(min(settings.scrub_interval_s, 3600))
