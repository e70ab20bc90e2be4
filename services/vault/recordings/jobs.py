"""The vault's background work on recordings: uploads (expire the unfinished, roll forward
completions a crash interrupted, abort the store's stray multipart uploads), erasure at the end
of the retention, and the fixity scrub. Each pass survives an outage of the database or the
store (noted once per outage) and tries again at the next."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.recordings import fixity
from services.vault.recordings.erasure import ErasureReport, ErasureService
from services.vault.recordings.holds import HoldService
from services.vault.recordings.resumable import ResumableService
from services.vault.settings import VaultSettings
from shared.db import session_scope, try_job_lock
from shared.storage import ObjectStore
from shared.web import job_failed

_logger = logging.getLogger("temoin.vault.uploads")


@dataclass
class UploadsReport:
    """What one upload pass did (tests/test_replica_jobs.py adds those of several replicas)."""

    expired: int = 0
    rolled_forward: list[uuid.UUID] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)  # keys of stray multipart uploads


async def maintain_uploads(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> UploadsReport:
    """One pass; several vault processes may run it at once (rows are claimed SKIP LOCKED,
    each completion under its upload's lock, the store's sweep by one process at a time)."""
    report = UploadsReport()
    async with session_scope(sessionmaker) as session:
        report.expired = await ResumableService(session, store, settings).expire()
    if report.expired:
        _logger.info("discarded %d expired uploads", report.expired)
    async with session_scope(sessionmaker) as session:
        waiting = await ResumableService(session, store, settings).completing()
    for upload_id in waiting:
        async with session_scope(sessionmaker) as session:
            outcome = await ResumableService(session, store, settings).roll_forward_if_free(
                upload_id
            )
        if outcome is not None:
            report.rolled_forward.append(upload_id)
            # Its request died (or lost the database) after every byte was in, or is still
            # between its commit of `completing` and taking the work up itself: either way
            # nothing is lost, and the dock's next HEAD or PATCH gets the outcome.
            _logger.info(
                "upload %s: completed by the background pass, not by its request: %s",
                upload_id,
                "registered" if outcome == "complete" else outcome,
            )
    async with session_scope(sessionmaker) as session:
        if await try_job_lock(session, "vault:stray-multipart-sweep"):
            report.aborted = await ResumableService(session, store, settings).sweep_store(
                timedelta(seconds=settings.stray_multipart_after_s)
            )
            for key in report.aborted:
                _logger.warning("aborted a multipart upload no upload session owns: %s", key)
    return report


async def uploads_job(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> None:
    while True:
        try:
            await maintain_uploads(sessionmaker, store, settings)
        except Exception as exc:  # the loop must survive a database or store outage
            job_failed(_logger, "upload maintenance", exc)
        await asyncio.sleep(settings.upload_sweep_interval_s)


@dataclass
class ErasurePass:
    erased: ErasureReport  # keys destroyed, refusals logged
    deleted: ErasureReport  # objects deleted
    orphans: ErasureReport


async def erasure_pass(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> ErasurePass:
    """One pass of the erasure job; several vault processes (and `temoin erase`) may run it
    at once (erasure.py says how)."""
    keys = settings.log_keys()
    async with session_scope(sessionmaker) as session:
        erased = await ErasureService(session, store, keys).erase_due()
    async with session_scope(sessionmaker) as session:
        deleted = await ErasureService(session, store, keys).delete_objects()
    async with session_scope(sessionmaker) as session:
        await HoldService(session, store, settings).renew()
    async with session_scope(sessionmaker) as session:
        orphans = await ErasureService(session, store, keys).delete_orphans()
    return ErasurePass(erased, deleted, orphans)


async def erase_expired(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> None:
    """R241-13: keys destroyed and entries written in one transaction, objects deleted
    after, when their lock allows."""
    while True:
        try:
            done = await erasure_pass(sessionmaker, store, settings)
            for key in done.orphans.orphans_deleted:
                _logger.warning("erasure: deleted %s, a sealed object no recording refers to", key)
            if done.erased.erased or done.erased.held or done.deleted.objects_deleted:
                _logger.info(
                    "erasure: %d erased, %d held by a procedure, %d objects deleted",
                    len(done.erased.erased),
                    len(done.erased.held),
                    len(done.deleted.objects_deleted),
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
