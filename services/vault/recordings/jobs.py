"""The vault's background work on recordings: uploads (expire the unfinished, roll forward
completions a crash interrupted, abort the store's stray multipart uploads), erasure at the end
of the retention, and the fixity scrub. Each pass survives an outage of the database or the
store (noted once per outage) and tries again at the next."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.recordings import fixity
from services.vault.recordings.erasure import ErasureService
from services.vault.recordings.holds import HoldService
from services.vault.recordings.resumable import ResumableService
from services.vault.settings import VaultSettings
from shared.db import session_scope, try_job_lock
from shared.storage import ObjectStore
from shared.web import job_failed

_logger = logging.getLogger("temoin.vault.uploads")


async def maintain_uploads(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> None:
    """One pass; several vault processes may run it at once (rows are claimed SKIP LOCKED,
    each completion under its upload's lock, the store's sweep by one process at a time)."""
    async with session_scope(sessionmaker) as session:
        expired = await ResumableService(session, store, settings).expire()
    if expired:
        _logger.info("discarded %d expired uploads", expired)
    async with session_scope(sessionmaker) as session:
        waiting = await ResumableService(session, store, settings).completing()
    for upload_id in waiting:
        async with session_scope(sessionmaker) as session:
            if await ResumableService(session, store, settings).roll_forward_if_free(upload_id):
                _logger.warning(
                    "upload %s: a completion interrupted by a crash finished", upload_id
                )
    async with session_scope(sessionmaker) as session:
        if await try_job_lock(session, "vault:stray-multipart-sweep"):
            aborted = await ResumableService(session, store, settings).sweep_store(
                timedelta(seconds=settings.stray_multipart_after_s)
            )
            for key in aborted:
                _logger.warning("aborted a multipart upload no upload session owns: %s", key)


async def uploads_job(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> None:
    while True:
        try:
            await maintain_uploads(sessionmaker, store, settings)
        except Exception as exc:  # the loop must survive a database or store outage
            job_failed(_logger, "upload maintenance", exc)
        await asyncio.sleep(settings.upload_sweep_interval_s)


async def erase_expired(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> None:
    """R241-13: keys destroyed and entries written in one transaction, objects deleted
    after, when their lock allows."""
    while True:
        try:
            async with session_scope(sessionmaker) as session:
                report = await ErasureService(session, store, settings.log_keys()).erase_due()
            async with session_scope(sessionmaker) as session:
                deleted = await ErasureService(session, store, settings.log_keys()).delete_objects()
            async with session_scope(sessionmaker) as session:
                await HoldService(session, store, settings).renew()
            async with session_scope(sessionmaker) as session:
                orphans = await ErasureService(session, store, settings.log_keys()).delete_orphans()
            for key in orphans.orphans_deleted:
                _logger.warning("erasure: deleted %s, a sealed object no recording refers to", key)
            if report.erased or report.held or deleted.objects_deleted:
                _logger.info(
                    "erasure: %d erased, %d held by a procedure, %d objects deleted",
                    len(report.erased),
                    len(report.held),
                    len(deleted.objects_deleted),
                )
        except Exception as exc:
            job_failed(_logger, "erasure", exc)
        await asyncio.sleep(settings.erasure_interval_s)


async def scrub_objects(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> None:
    """Re-read every sealed object once per `VAULT_SCRUB_INTERVAL_S`, a batch at a time; a
    pass the store cut short goes on at the next one."""
    while True:
        try:
            report = await fixity.scrub(
                sessionmaker, store, settings, checked_before=fixity.due_before(settings)
            )
            if report.damaged or report.restored:
                _logger.warning(
                    "fixity scrub: %d checked, %d damaged, %d restored",
                    report.checked,
                    len(report.damaged),
                    len(report.restored),
                )
        except Exception as exc:
            job_failed(_logger, "fixity scrub", exc)
        await asyncio.sleep(min(settings.scrub_interval_s, 3600))
