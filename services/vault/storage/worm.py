"""The store's write-once, proven rather than assumed (docs/storage.md).

Every recording is an object version under COMPLIANCE retention: until its retain-until date,
no request, whoever sends it, may delete it, change it or shorten its retention. Whether the
store really behaves so is checked, not taken on trust: at the vault's start and every
``VAULT_STORE_CHECK_INTERVAL_S`` after, the vault reads the bucket's settings, uploads a canary
under ``canary/`` the way it uploads a clip (multipart, COMPLIANCE retention of
``VAULT_STORE_CHECK_LOCK_S``), then sends every S3 request that could destroy or shorten that
locked version, reading back after each what is left of it.

What counts as a failure, and what follows, is decided here:
- the bucket without versioning or without an object lock configuration;
- a canary uploaded with COMPLIANCE retention that does not come back locked so;
- any request after which the locked version is gone, reads other bytes, or has lost or
  shortened its retention; and any request a COMPLIANCE lock must refuse (a delete or a
  retention change of the version) that the store accepts, whatever it then shows.
New versions written over the key (PutObject, CopyObject, a multipart upload) and a delete
marker are S3's normal answers on a versioned bucket: they fail the check only if the locked
version did not survive them.

A failed check stops a production vault from starting (``refuses_to_start``) and, later, makes
it not ready (``ready``: /readyz answers 503); development logs a warning and carries on. The
latest verdict is in /readyz (check ``store_write_once``) and in the metrics
``temoin_store_write_once_failed`` and ``temoin_store_write_once_checks_total``. Canaries are
deleted once their lock has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from prometheus_client import Counter, Gauge

from shared.storage import Answer, ObjectMissing, ObjectStore, StorageError, StorageUnavailable
from shared.web import ServiceState

CANARY_PREFIX = "canary/"  # never under recordings/: no recording job ever sees a canary
_CANARY_HEADER = b"temoin write-once canary\n"
_KEY_TIME = "%Y%m%dT%H%M%SZ"
# A store that does not answer is asked again this soon (not in a day).
RETRY_S = 60.0
# Development's first check waits this long after the start: a process that lives less (a
# test's app, a command) leaves no canary behind.
DEVELOPMENT_FIRST_CHECK_S = 2.0

_logger = logging.getLogger("temoin.vault.store")

CHECKS = Counter(
    "temoin_store_write_once_checks",
    "Checks that the store keeps locked versions locked, by verdict",
    ["verdict"],
)
FAILED = Gauge(
    "temoin_store_write_once_failed",
    "1 while the latest check found the store not write-once (docs/storage.md), else 0",
)


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    NOT_CHECKED = "not checked"  # the store did not answer: nothing learnt either way


@dataclass(frozen=True)
class Attempt:
    """One request sent to destroy or shorten the locked canary, and what it did."""

    request: str
    answer: str
    harm: str | None = None  # what became of the locked version; None: nothing


@dataclass(frozen=True)
class Report:
    verdict: Verdict
    checked_at: datetime
    problems: tuple[str, ...] = ()
    attempts: tuple[Attempt, ...] = ()

    def summary(self) -> str:
        if self.verdict is Verdict.PASSED:
            return (
                f"the store kept a COMPLIANCE-locked canary through {len(self.attempts)} "
                "requests to delete, overwrite or unlock it"
            )
        return f"{self.verdict}: " + "; ".join(self.problems)


class StoreNotWriteOnce(Exception):
    """Production refuses to start on a store that failed the check."""


def refuses_to_start(report: Report, *, production: bool) -> bool:
    """Production does not start on a store shown not to be write-once; a store that did not
    answer is not shown so (the vault starts, not ready, and asks again)."""
    return production and report.verdict is Verdict.FAILED


def ready(report: Report | None, *, production: bool) -> bool:
    """Production is ready only once the store passed its latest check; development always
    (it warns instead)."""
    if not production:
        return True
    return report is not None and report.verdict is Verdict.PASSED


# --- the check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Canary:
    key: str
    version: str
    content: bytes
    retain_until: datetime


@dataclass(frozen=True)
class _Probe:
    request: str
    send: Callable[[ObjectStore, _Canary, datetime], Awaitable[Answer]]
    # Whether a COMPLIANCE lock must refuse the request itself (a delete or a retention change
    # of the version); the others may be accepted, as long as the version survives them.
    must_refuse: bool


def _earlier(canary: _Canary, now: datetime) -> datetime:
    """A retain-until date still in the future but earlier than the canary's."""
    return (now + (canary.retain_until - now) / 2).replace(microsecond=0)


PROBES: tuple[_Probe, ...] = (
    _Probe(
        "DeleteObject of the locked version",
        lambda s, c, now: s.try_delete_version(c.key, c.version, bypass=False),
        must_refuse=True,
    ),
    _Probe(
        "DeleteObject of the locked version, bypassing governance",
        lambda s, c, now: s.try_delete_version(c.key, c.version, bypass=True),
        must_refuse=True,
    ),
    _Probe(
        "DeleteObjects (multi-object delete) of the locked version",
        lambda s, c, now: s.try_delete_versions(c.key, c.version, bypass=False),
        must_refuse=True,
    ),
    _Probe(
        "DeleteObjects of the locked version, bypassing governance",
        lambda s, c, now: s.try_delete_versions(c.key, c.version, bypass=True),
        must_refuse=True,
    ),
    _Probe(
        "PutObjectRetention to an earlier date",
        lambda s, c, now: s.try_set_retention(
            c.key, c.version, "COMPLIANCE", _earlier(c, now), bypass=False
        ),
        must_refuse=True,
    ),
    _Probe(
        "PutObjectRetention to an earlier date, bypassing governance",
        lambda s, c, now: s.try_set_retention(
            c.key, c.version, "COMPLIANCE", _earlier(c, now), bypass=True
        ),
        must_refuse=True,
    ),
    _Probe(
        "PutObjectRetention from COMPLIANCE to GOVERNANCE",
        lambda s, c, now: s.try_set_retention(
            c.key, c.version, "GOVERNANCE", c.retain_until, bypass=False
        ),
        must_refuse=True,
    ),
    _Probe(
        "PutObjectRetention removing the retention",
        lambda s, c, now: s.try_remove_retention(c.key, c.version, bypass=False),
        must_refuse=True,
    ),
    _Probe(
        "PutObjectRetention removing the retention, bypassing governance",
        lambda s, c, now: s.try_remove_retention(c.key, c.version, bypass=True),
        must_refuse=True,
    ),
    _Probe(
        "PutObject over the key",
        lambda s, c, now: s.try_put(c.key, b"overwritten by PutObject"),
        must_refuse=False,
    ),
    _Probe(
        "CopyObject of the locked version over the key",
        lambda s, c, now: s.try_copy(c.key, c.version),
        must_refuse=False,
    ),
    _Probe(
        "multipart upload completed over the key",
        lambda s, c, now: s.try_multipart(c.key, b"overwritten by a multipart upload"),
        must_refuse=False,
    ),
    _Probe(
        "DeleteObject of the key (a delete marker)",
        lambda s, c, now: s.try_delete(c.key),
        must_refuse=False,
    ),
)


def _now() -> datetime:
    return datetime.now(UTC)


async def write_canary(store: ObjectStore, lock_s: float) -> _Canary:
    """A small object uploaded as clips are (multipart, COMPLIANCE retention), under
    ``canary/``; its key starts with its retain-until date, so a sweep knows when it may go."""
    until = (_now() + timedelta(seconds=lock_s)).replace(microsecond=0)
    key = f"{CANARY_PREFIX}{until.strftime(_KEY_TIME)}-{uuid.uuid4().hex}"
    content = _CANARY_HEADER + secrets.token_bytes(32)
    upload = await store.start_multipart(key, retain_until=until)
    try:
        etag = await store.upload_part(key, upload, 1, content)
        version = await store.complete_multipart(key, upload, [etag])
    except BaseException:
        with contextlib.suppress(StorageError):  # the sweep aborts it otherwise
            await asyncio.shield(store.abort_multipart(key, upload))
        raise
    if version is None:
        raise StorageError("the store gave the canary no version id: the bucket is not versioned")
    return _Canary(key=key, version=version, content=content, retain_until=until)


async def _harm(store: ObjectStore, canary: _Canary) -> str | None:
    """What became of the locked version, or None if it is whole and still locked as asked."""
    try:
        content = await store.read_head(canary.key, canary.version, len(canary.content) + 1)
    except ObjectMissing:
        return "the locked version is gone"
    if content != canary.content:
        return "the locked version now reads other bytes"
    retention = await store.retention(canary.key, canary.version)
    if retention is None:
        return "the locked version lost its retention"
    mode, until = retention
    if mode != "COMPLIANCE":
        return f"the locked version's retention became {mode}"
    if until < canary.retain_until - timedelta(seconds=1):
        return f"the locked version's retention was shortened to {until.isoformat()}"
    return None


async def check_write_once(store: ObjectStore, *, lock_s: float) -> Report:
    """Check the bucket and try every request that could undo a lock (module docstring)."""
    started = _now()
    try:
        return await _check(store, lock_s, started)
    except StorageUnavailable as exc:
        return Report(Verdict.NOT_CHECKED, started, problems=(f"the store did not answer: {exc}",))
    except StorageError as exc:
        # A refusal where the check needs an answer (reading the bucket's settings, writing or
        # reading its canary): the store is not shown write-once, and the uploads of clips,
        # which go the same way, would fail too.
        return Report(Verdict.FAILED, started, problems=(f"the check could not finish: {exc}",))


async def _check(store: ObjectStore, lock_s: float, started: datetime) -> Report:
    problems: list[str] = []
    versioning = await store.versioning()
    if versioning != "Enabled":
        problems.append(f"versioning is {versioning or 'off'} on bucket {store.bucket!r}")
    if not await store.object_lock_configured():
        problems.append(
            f"bucket {store.bucket!r} has no object lock configuration "
            "(it can only be turned on when the bucket is created)"
        )
    if problems:
        return Report(Verdict.FAILED, started, problems=tuple(problems))

    canary = await write_canary(store, lock_s)
    harm = await _harm(store, canary)
    if harm is not None:
        problems.append(f"a canary uploaded under COMPLIANCE retention: {harm}")
        return Report(Verdict.FAILED, started, problems=tuple(problems))

    attempts: list[Attempt] = []
    margin = timedelta(seconds=max(5.0, lock_s / 3))
    for probe in PROBES:
        now = _now()
        if canary.retain_until - now < margin:  # a slow store: never probe near the lock's end
            canary = await write_canary(store, lock_s)
            now = _now()
        answer = await probe.send(store, canary, now)
        harm = await _harm(store, canary)
        if harm is None and probe.must_refuse and answer.accepted:
            harm = "accepted, though a COMPLIANCE lock must refuse it"
        attempts.append(Attempt(probe.request, str(answer), harm))
        if harm is not None:
            problems.append(f"{probe.request}: {harm}")
            canary = await write_canary(store, lock_s)  # a whole locked version for the next
    verdict = Verdict.FAILED if problems else Verdict.PASSED
    return Report(verdict, started, problems=tuple(problems), attempts=tuple(attempts))


def _locked_until(key: str) -> datetime | None:
    stamp = key.removeprefix(CANARY_PREFIX).split("-", 1)[0]
    try:
        return datetime.strptime(stamp, _KEY_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


async def sweep_canaries(store: ObjectStore) -> int:
    """Delete every version (and delete marker) of the canaries whose lock has run out, and
    abort their multipart uploads left by a check cut short: how many versions went."""
    now = _now()

    def expired(key: str) -> bool:
        until = _locked_until(key)
        return until is None or until < now

    deleted = 0
    for key, version in await store.list_versions(CANARY_PREFIX, delete_markers=True):
        if version is not None and expired(key) and await store.delete_version(key, version):
            deleted += 1
    for key, upload_id, _ in await store.list_multipart_uploads(CANARY_PREFIX):
        if expired(key):
            await store.abort_multipart(key, upload_id)
    return deleted


# --- what the vault does with it -------------------------------------------------------------


@dataclass
class StoreWriteOnce:
    """The vault's check of its store: at start, then every ``interval_s``; its latest
    report feeds /readyz (``readiness``), the metrics and the logs."""

    production: bool
    interval_s: float
    lock_s: float
    report: Report | None = field(default=None, init=False)

    async def at_startup(self, state: ServiceState) -> None:
        """Production checks before serving anything, and refuses to start on a failure.
        Development leaves the first check to the background job, a moment after the start:
        nothing waits on it."""
        if not self.production:
            return
        report = await self.check(state["store"])
        if refuses_to_start(report, production=True):
            raise StoreNotWriteOnce(
                f"the object store is not write-once, refusing to start: {report.summary()} "
                "(docs/storage.md)"
            )

    async def job(self, state: ServiceState) -> None:
        store = state["store"]
        while True:
            report = self.report
            if report is None:
                await asyncio.sleep(0 if self.production else DEVELOPMENT_FIRST_CHECK_S)
                await self._check_surviving(store)
            elif report.verdict is Verdict.NOT_CHECKED:
                await asyncio.sleep(min(RETRY_S, self.interval_s))
                await self._check_surviving(store)
            else:
                # The canary's lock has run out by then: delete it, then wait for the next.
                await asyncio.sleep(self.lock_s + 2)
                await self._sweep(store)
                await asyncio.sleep(max(0.0, self.interval_s - self.lock_s - 2))
                await self._check_surviving(store)

    async def _check_surviving(self, store: ObjectStore) -> None:
        try:
            await self.check(store)
        except Exception as exc:  # a bug must not end the checks for the process's life
            _logger.error("write-once check failed unexpectedly", exc_info=exc)
            self.record(
                Report(Verdict.NOT_CHECKED, _now(), problems=(f"{type(exc).__name__}: {exc}",))
            )

    async def _sweep(self, store: ObjectStore) -> None:
        try:
            deleted = await sweep_canaries(store)
        except StorageError as exc:
            _logger.warning("write-once check: canaries not swept (%s); next time", exc)
            return
        if deleted:
            _logger.info("write-once check: deleted %d canary versions whose lock ran out", deleted)

    async def check(self, store: ObjectStore) -> Report:
        report = await check_write_once(store, lock_s=self.lock_s)
        self.record(report)
        return report

    def record(self, report: Report) -> None:
        self.report = report
        CHECKS.labels(report.verdict.name.lower()).inc()
        fields = {
            "verdict": str(report.verdict),
            "problems": list(report.problems),
            "attempts": [
                {"request": a.request, "answer": a.answer, "harm": a.harm} for a in report.attempts
            ],
        }
        if report.verdict is Verdict.PASSED:
            FAILED.set(0)
            _logger.info("write-once check passed: %s", report.summary(), extra={"fields": fields})
        elif report.verdict is Verdict.FAILED:
            FAILED.set(1)
            consequence = (
                "production: not ready until a check passes"
                if self.production
                else "development goes on; production would refuse to start"
            )
            _logger.log(
                logging.ERROR if self.production else logging.WARNING,
                "THE OBJECT STORE IS NOT WRITE-ONCE (%s): %s",
                consequence,
                "; ".join(report.problems),
                extra={"fields": fields},
            )
        else:
            _logger.warning(
                "write-once check not done: %s; trying again in %.0f s",
                "; ".join(report.problems),
                min(RETRY_S, self.interval_s),
                extra={"fields": fields},
            )

    def readiness(self) -> tuple[str, bool]:
        """/readyz's ``store_write_once``: what to show, and whether the vault is ready."""
        report = self.report
        if report is None:
            shown = "not checked yet"
        elif report.verdict is Verdict.PASSED:
            shown = "ok"
        else:
            shown = f"{report.verdict}: {'; '.join(report.problems)}"
        return shown, ready(report, production=self.production)
