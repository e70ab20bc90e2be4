"""The vault's background work on the log: sequence new entries every second or so (checking
that the last head it signed is still there), sign a tree head and read the witnesses' latest
cosignatures every few minutes, and purge entries past three years every few hours (R241-14).
Several vault replicas may run it: the sequencer takes a database lock, and a head is signed
once per tree size."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.audit.service import AuditLog, LogKeys, purge_expired
from shared.db import session_scope
from shared.errors import Conflict
from shared.web import job_failed

_logger = logging.getLogger("temoin.vault.audit")


async def maintain_log(
    sessionmaker: async_sessionmaker[AsyncSession],
    keys: LogKeys,
    *,
    sequence_every_s: float,
    sign_every_s: float,
    purge_every_s: float = 6 * 3600,
) -> None:
    last_signed = last_purged = time.monotonic()
    last_witnessed = float("-inf")
    refusing: str | None = None
    while True:
        try:
            async with session_scope(sessionmaker) as session:
                log = AuditLog(session, keys)
                await log.sequence_all()
                await log.guard_heads()
                if time.monotonic() - last_witnessed >= sign_every_s:
                    # The witnesses' freshness gauges, from the database: right after a
                    # restart too, and whichever vault process received the cosignature.
                    await log.witnesses()
                    last_witnessed = time.monotonic()
            # Signing in its own transaction: a refusal to sign never holds back sequencing.
            if time.monotonic() - last_signed >= sign_every_s:
                last_signed = time.monotonic()
                async with session_scope(sessionmaker) as session:
                    await AuditLog(session, keys).sign_head()
                refusing = None
            if time.monotonic() - last_purged >= purge_every_s:
                async with session_scope(sessionmaker) as session:
                    purged = await purge_expired(session, keys, actor="temoin-vault")
                last_purged = time.monotonic()
                if purged:
                    _logger.info("purged %d audit entries older than three years", purged)
        except IntegrityError as exc:
            # Signing takes the sequencer's lock: two vaults never sign the same size, so this
            # was not that. A constraint refusing a write here is two vaults putting back the
            # same deleted head at once (guard_heads, already logged as an error), or a bug.
            _logger.warning(
                "audit log maintenance: the database refused a write (%s); trying again at "
                "the next pass",
                str(exc.orig or exc).splitlines()[0],
            )
        except Conflict as exc:  # the log no longer extends the last head: said once
            if exc.detail != refusing:
                _logger.error("%s", exc.detail)
                refusing = exc.detail
        except Exception as exc:  # the loop must survive a database outage
            job_failed(_logger, "audit log maintenance", exc)
        await asyncio.sleep(sequence_every_s)
