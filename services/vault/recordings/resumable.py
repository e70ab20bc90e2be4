"""Resumable uploads (the vault's half of tus; ingest speaks the protocol, docs/ingest.md).

A session is one S3 multipart upload of the future sealed object (written by parts.py) plus
one database row. What arrived after the last whole part (less than a part) is kept in the
row, sealed under the clip's data key. The row also holds the running SHA-256
(shared/hashing.py), the part etags and the offset, and all of them change in the
transaction that acknowledges a PATCH: whichever vault process gets the next PATCH, after any
crash, carries on from exactly the acknowledged offset.

Parts sent for bytes that are then not acknowledged (a PATCH refused at its end) are simply
sent again later: S3 keeps the last part under each number, and sealing draws a fresh nonce
for every chunk, so sealing an index twice never reuses a nonce.

The single POST is a session too, created and fed in one request each (``single``, ``whole``):
one write path, and the same guarantees after a crash.

Claims (docs/architecture.md, "Uploads hold no connection while bytes stream"): a PATCH holds
no database connection while its body streams, which may take minutes. It runs in three short
transactions: (1) under the upload's advisory lock, check the request against the row and
*claim* the upload (``claim_id``, a token of this request, and ``claimed_until``, a lease of
`VAULT_UPLOAD_CLAIM_S`), committed; (2) stream, seal and send the parts with no connection
checked out, renewing the lease (a one-row UPDATE on the claim's token) every third of it
while bytes arrive; (3) under the lock again, check the claim is still this request's, record
the new offset, etags, hash state and tail, and clear the claim. Another PATCH of the same
upload meanwhile, on this process or another replica, finds the claim live and gets 423. A
claim whose process died, or whose sender went silent, runs out after the lease: the dock's
retry then claims the upload afresh and goes on from the acknowledged offset. The request
that lost its claim notices at its next renewal or at (3), and acknowledges nothing. Since it
sends parts only within a third of a lease of a renewal that found the claim its own, and a
claim is taken over only after a whole lease without renewal, two requests never send parts
of one upload at once (and were one stalled past that margin, a part it overwrote would fail
the etag check of the object's assembly, never register a wrong clip). A session-level
advisory lock would also span the stream, but only by holding a connection for it: the very
cost this avoids.

Crashes (docs/architecture.md, "Crashes on the write path"):
- a session's multipart upload is in its row, committed before any part is sent; the store's
  own list of multipart uploads is swept for any that no live session owns (a crash between
  `start_multipart` and the row's commit);
- once the last byte is in and the SHA-256 checks, the session becomes `completing` in its own
  commit, before the store assembles the object; a crash after that is rolled forward (by the
  next request about the upload or the clip, or the background pass): the object is assembled
  or found assembled, and registered, so the dock's next HEAD or PATCH ends in the receipt.
"""

from __future__ import annotations

import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import anyio
from sqlalchemy import ColumnElement, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect

from services.vault.recordings.keys import unwrap_data_key, wrap_data_key
from services.vault.recordings.models import UploadSession, UploadStatus
from services.vault.recordings.parts import PartWriter
from services.vault.recordings.reading import Damaged
from services.vault.recordings.service import (
    RECORDINGS_PREFIX,
    CollecteService,
    Resolved,
    Sealed,
    sealed_object_key,
)
from services.vault.settings import VaultSettings
from shared import sealing
from shared.clips import ClipMetadata, StoredClip, UploadSessionState
from shared.db import release_connection, utc_now
from shared.errors import (
    BadRequest,
    Conflict,
    Gone,
    Locked,
    NotFound,
    PayloadTooLarge,
    TemoinError,
    UnprocessableEntity,
)
from shared.hashing import ResumableSha256
from shared.storage import MultipartGone, ObjectStore

# pg_advisory_xact_lock(class, id): the class keeps these locks apart from other advisory locks.
_LOCK_CLASS = 0x7475  # "tu"
_logger = logging.getLogger("temoin.vault.uploads")
TAIL_CONTEXT = b"temoin-upload-tail-v1"


class ResumableService:
    def __init__(self, session: AsyncSession, store: ObjectStore, settings: VaultSettings) -> None:
        self.session = session
        self.store = store
        self.settings = settings
        self.collecte = CollecteService(session, store, settings)

    # --- creation --------------------------------------------------------------------------

    async def create(
        self,
        metadata: ClipMetadata,
        station_id: uuid.UUID,
        content_type: str,
        *,
        single: bool = False,
    ) -> UploadSessionState:
        """A new session; for a clip already registered, one that is complete at once (the
        dock then has nothing to send and gets the same receipt). ``single``: the session of
        a single POST, fed by one request; if that request dies, nothing can resume it, so it
        expires soon (`VAULT_SINGLE_UPLOAD_EXPIRY_S`) and its parts are discarded."""
        resolved = await self.collecte.resolve(metadata, station_id)
        existing = await self.collecte.existing(resolved, metadata.sha256)
        if existing is None and (finished := await self._finish_earlier(resolved, metadata)):
            return finished
        recording_id = uuid.uuid4()
        chunk_size = self.settings.chunk_size
        expiry = self.settings.single_upload_expiry_s if single else self.settings.upload_expiry_s
        upload = UploadSession(
            id=uuid.uuid4(),
            organisation_id=resolved.organisation.id,
            station_id=station_id,
            metadata_json=metadata.model_dump(mode="json"),
            content_type=content_type,
            length=metadata.size,
            offset=0,
            status=UploadStatus.open.value,
            expires_at=utc_now() + timedelta(seconds=expiry),
            recording_id=recording_id,
            chunk_size=chunk_size,
            part_size=self.settings.part_size,  # whole chunks (VaultSettings checks)
            etags=[],
            kek_id=self.settings.kek_id,
            retain_until=self.collecte.retain_until(metadata, resolved),
            hash_state=ResumableSha256().state(),
        )
        if existing is not None:
            upload.status = UploadStatus.complete.value
            upload.offset = upload.length
            upload.recording_id = existing.recording_id
        else:
            # S3 applies the lock when the parts are assembled: for a resumable upload, which
            # may take days, it must outlast the upload. A single POST is assembled within its
            # request (or rolled forward minutes after a crash), so it keeps the clip's own
            # lock: one of a clip already past its retention is short (VAULT_MINIMUM_LOCK_S),
            # and such a clip is erased at once anyway.
            lock_until = self.collecte.lock_until(metadata, resolved)
            if not single:
                lock_until = max(lock_until, upload.expires_at + timedelta(days=1))
            upload.object_key = sealed_object_key(resolved.organisation.id, recording_id)
            upload.wrapped_key = wrap_data_key(self.settings, sealing.new_data_key(), recording_id)
            upload.locked_until = lock_until
            upload.multipart_id = await self.store.start_multipart(
                upload.object_key, retain_until=lock_until
            )
        self.session.add(upload)
        try:
            await self.session.flush()
        except BaseException:
            # The row that owns it will not exist: discard the multipart upload now (the sweep
            # of the store's list would find it later, if this process died here).
            if upload.multipart_id is not None and upload.object_key is not None:
                with anyio.CancelScope(shield=True):
                    await self.store.abort_multipart(upload.object_key, upload.multipart_id)
            raise
        return self._state(upload, existing)

    async def _finish_earlier(
        self, resolved: Resolved, metadata: ClipMetadata
    ) -> UploadSessionState | None:
        """A session of this clip left `completing` by a crash (a single POST sent again after
        it): finished now, its answer is this one's."""
        earlier = await self.session.scalar(
            select(UploadSession).where(
                UploadSession.status == UploadStatus.completing.value,
                UploadSession.organisation_id == resolved.organisation.id,
                UploadSession.metadata_json["camera_serial"].astext == metadata.camera_serial,
                UploadSession.metadata_json["sha256"].astext == metadata.sha256,
            )
        )
        if earlier is None:
            return None
        await self.roll_forward(earlier)
        if earlier.status != UploadStatus.complete.value:
            return None
        return self._state(earlier, await self._stored(earlier))

    # --- reading ---------------------------------------------------------------------------

    async def state(self, upload_id: uuid.UUID, station_id: uuid.UUID) -> UploadSessionState:
        """The acknowledged state. A PATCH in flight on another connection (say, one whose
        sender just died) is waited for, so that the offset is its outcome: it settles (saves
        what arrived) or its claim runs out within one lease. A fixed few seconds were not
        enough on a loaded machine, where saving a cut PATCH's part and tail took longer and
        the dock was told the offset from before it. Only a PATCH still streaming a whole lease
        later leaves the state as last acknowledged (the dock's own PATCH then meets 423)."""
        deadline = time.monotonic() + self.settings.upload_claim_s + 1
        while True:
            upload = await self._get(upload_id, station_id)
            if not await self._claimed(upload.id) or time.monotonic() > deadline:
                break
            await release_connection(self.session)  # none held while waiting
            await anyio.sleep(0.1)
        if upload.status == UploadStatus.completing.value:
            await self.roll_forward(upload)
        return self._state(upload, await self._stored(upload))

    # --- appending -------------------------------------------------------------------------

    async def append(
        self,
        upload_id: uuid.UUID,
        station_id: uuid.UUID,
        offset: int,
        body: AsyncIterator[bytes],
        *,
        keep_partial: bool,
        content_length: int | None = None,
        whole: bool = False,
    ) -> UploadSessionState:
        """Add the body at ``offset``. With ``keep_partial``, a body cut short still advances
        the offset by what arrived; without (the PATCH carried a checksum that could not be
        checked), nothing of it counts. ``whole``: the body is the whole clip (a single POST):
        if it fails, its parts are discarded at once, since nothing will resume it."""
        # (1) Check the request against the acknowledged state and claim the upload.
        if not await self._try_lock(upload_id):
            raise _locked()
        upload = await self._get(upload_id, station_id)
        if upload.status == UploadStatus.completing.value:
            await self.roll_forward(upload)
        if upload.status == UploadStatus.complete.value and offset <= upload.length:
            # Already registered (a clip uploaded before, or a PATCH whose answer was lost):
            # the bytes are not needed, the answer is the same.
            state = self._state(upload, await self._stored(upload))
            await release_connection(self.session)
            async for _ in body:
                pass
            return state
        self._require_open(upload)
        if offset != upload.offset:
            raise Conflict(
                f"the upload is at offset {upload.offset}, not {offset}", offset=upload.offset
            )
        if content_length is not None and offset + content_length > upload.length:
            raise PayloadTooLarge(f"more than the declared Upload-Length of {upload.length} bytes")
        assert upload.wrapped_key is not None and upload.multipart_id is not None
        assert upload.object_key is not None
        try:
            data_key = unwrap_data_key(
                self.settings, upload.wrapped_key, upload.kek_id, upload.recording_id
            )
            pending = _open_tail(upload, data_key)
        except (sealing.SealError, Damaged):
            # The stored key or tail was altered: nothing sent since the last part can be
            # trusted.
            _logger.error("upload %s: its stored key or tail failed authentication", upload.id)
            await self._discard(upload, UploadStatus.lost)
            return self._state(upload, None)
        claim = _Claim(self, upload.id, self.settings.upload_claim_s)
        if not await claim.take():
            raise _locked()
        await release_connection(self.session)  # the claim committed, the lock released
        # (2) Stream with no connection checked out (the claim's renewals take one briefly).
        writer = PartWriter(
            self.store,
            object_key=upload.object_key,
            multipart_id=upload.multipart_id,
            recording_id=upload.recording_id,
            data_key=data_key,
            chunk_size=upload.chunk_size,
            part_size=upload.part_size,
            length=upload.length,
            offset=upload.offset,
            etags=upload.etags,
            pending=pending,
            hash_state=upload.hash_state,
        )
        try:
            try:
                async for piece in body:
                    if writer.offset + len(piece) > upload.length:
                        raise PayloadTooLarge(
                            f"more than the declared Upload-Length of {upload.length} bytes"
                        )
                    await claim.keep()  # before any part of this piece is sent
                    await writer.write(piece)
            except ClientDisconnect as exc:
                if whole or not keep_partial:
                    raise BadRequest("the body was cut short; nothing of it was kept") from exc
            if whole and writer.offset != upload.length:
                raise UnprocessableEntity(
                    f"the body ended after {writer.offset} of {upload.length} bytes",
                    field="metadata.size",
                )
            await writer.drain()
        except MultipartGone:
            await claim.settle(upload)
            await self._discard(upload, UploadStatus.lost)
            return self._state(upload, None)
        except BaseException:
            with anyio.CancelScope(shield=True):
                if whole:
                    await writer.abandon()
                    await self.store.abort_multipart(upload.object_key, upload.multipart_id)
                await claim.give_up()
            raise
        finally:
            await writer.abandon()  # parts of a refused PATCH: never acknowledged
        # (3) Acknowledge everything received, if the claim is still this request's, in the
        # transaction the caller commits.
        await claim.settle(upload)
        upload.offset = writer.offset
        upload.etags = list(writer.etags)  # a new list: the ORM sees the change
        upload.hash_state = writer.hash.state()
        upload.tail = _seal_tail(upload, data_key, writer.pending)
        if upload.offset == upload.length:
            await self._finish(upload)
        return self._state(upload, await self._stored(upload))

    async def _finish(self, upload: UploadSession) -> None:
        """Every byte is in: check the clip's SHA-256, make the session `completing` in its own
        commit (the one place the write path commits before the request ends: from here on, a
        crash is rolled forward), then assemble and register."""
        metadata = ClipMetadata.model_validate(upload.metadata_json)
        if ResumableSha256(upload.hash_state).hexdigest() != metadata.sha256:
            # Kept as the session's outcome (committed), which ingest answers with a 422.
            await self._discard(upload, UploadStatus.rejected)
            return
        upload.status = UploadStatus.completing.value
        upload.tail = None
        await self.session.commit()
        await self.roll_forward(upload)

    async def roll_forward(self, upload: UploadSession) -> bool:
        """Assemble a `completing` session's object (or find it assembled) and register its
        recording, in the caller's transaction. Safe after any crash and from any process:
        they take turns on the upload's lock, and each finds what the one before did. Whether
        it was still `completing` (whether this call did the work)."""
        await self._lock(upload.id)
        await self.session.refresh(upload)
        if upload.status != UploadStatus.completing.value:
            return False
        assert upload.object_key is not None and upload.multipart_id is not None
        metadata = ClipMetadata.model_validate(upload.metadata_json)
        try:
            resolved = await self.collecte.resolve(metadata, upload.station_id)
        except TemoinError as refused:
            # The directory changed since the upload began (station revoked, camera
            # retired): the dock, which has no receipt, keeps the clip.
            _logger.error("upload %s cannot be registered: %s", upload.id, refused.detail)
            await self._discard(upload, UploadStatus.rejected)
            return True
        await self.collecte.repository.lock_content(resolved.camera.id, metadata.sha256)
        existing = await self.collecte.existing(resolved, metadata.sha256)
        if existing is not None:  # uploaded meanwhile through another session
            await self._discard(upload, UploadStatus.complete)
            upload.recording_id = existing.recording_id
            return True
        try:
            version = await self.store.complete_multipart(
                upload.object_key, upload.multipart_id, upload.etags
            )
        except MultipartGone:
            # Assembled by a process that died before its commit (or the upload vanished).
            found = await self.store.stat(upload.object_key)
            if found is None or found[1] != sealing.sealed_size(upload.length, upload.chunk_size):
                _logger.error("upload %s: its multipart upload vanished from the store", upload.id)
                await self._discard(upload, UploadStatus.lost)
                return True
            version = found[0]
        await self.collecte.register(
            metadata,
            resolved,
            upload.content_type,
            Sealed(
                recording_id=upload.recording_id,
                object_key=upload.object_key,
                object_version=version,
                chunk_size=upload.chunk_size,
                wrapped_key=upload.wrapped_key or b"",
                locked_until=upload.locked_until,
            ),
        )
        upload.status = UploadStatus.complete.value
        upload.tail = None
        upload.hash_state = b""
        upload.etags = []
        return True

    # --- ending ----------------------------------------------------------------------------

    async def terminate(self, upload_id: uuid.UUID, station_id: uuid.UUID) -> None:
        """tus termination: an open upload is discarded; one already ended is 410. A clip
        already registered stays registered (evidence is never withdrawn by its sender)."""
        if not await self._try_lock(upload_id):
            raise _locked()
        upload = await self._get(upload_id, station_id)
        if upload.status == UploadStatus.completing.value:
            await self.roll_forward(upload)
        if upload.status == UploadStatus.open.value:
            if await self._claimed(upload.id):
                raise _locked()
            await self._discard(upload, UploadStatus.terminated)
        elif upload.status != UploadStatus.complete.value:
            raise Gone(f"this upload is {upload.status} already")

    async def expire(self, now: datetime | None = None, limit: int = 100) -> int:
        """Discard sessions left open past their expiry (the vault's background job). Rows
        are claimed with SKIP LOCKED, and a session a request is writing to is left alone."""
        rows = await self.session.scalars(
            select(UploadSession)
            .where(
                UploadSession.status == UploadStatus.open.value,
                UploadSession.expires_at < (now or utc_now()),
                _unclaimed(),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        count = 0
        for upload in rows.all():
            if await self._try_lock(upload.id):
                await self._discard(upload, UploadStatus.expired)
                count += 1
        return count

    async def completing(self, limit: int = 100) -> list[uuid.UUID]:
        """Sessions left `completing` (by a crash, or by a request still at it)."""
        rows = await self.session.scalars(
            select(UploadSession.id)
            .where(UploadSession.status == UploadStatus.completing.value)
            .limit(limit)
        )
        return list(rows)

    async def roll_forward_if_free(self, upload_id: uuid.UUID) -> str | None:
        """Roll a `completing` session forward unless a request is at it (holding its lock) or
        has finished it: the session's status after, or None when there was nothing to do."""
        if not await self._try_lock(upload_id):
            return None
        upload = await self.session.get(UploadSession, upload_id, populate_existing=True)
        if upload is None or not await self.roll_forward(upload):
            return None
        return upload.status

    async def sweep_store(self, older_than: timedelta) -> list[str]:
        """Abort the store's multipart uploads that no live session owns (a crash between
        their start and the commit of their row), once older than ``older_than``: the keys."""
        listed = await self.store.list_multipart_uploads(RECORDINGS_PREFIX)
        if not listed:
            return []
        pairs = {(key, upload_id) for key, upload_id, _ in listed}
        rows = await self.session.execute(
            select(UploadSession.object_key, UploadSession.multipart_id).where(
                UploadSession.status.in_([UploadStatus.open.value, UploadStatus.completing.value]),
                tuple_(UploadSession.object_key, UploadSession.multipart_id).in_(pairs),
            )
        )
        owned = {(key, upload_id) for key, upload_id in rows}
        cutoff = utc_now() - older_than
        aborted = []
        for key, upload_id, started in listed:
            # A store that does not say when an upload began: never abort one just begun.
            if (key, upload_id) in owned or started is None or started > cutoff:
                continue
            await self.store.abort_multipart(key, upload_id)
            aborted.append(key)
        return aborted

    async def _discard(self, upload: UploadSession, status: UploadStatus) -> None:
        if upload.multipart_id is not None and upload.object_key is not None:
            await self.store.abort_multipart(upload.object_key, upload.multipart_id)
        upload.status = status.value
        upload.tail = None
        upload.wrapped_key = None
        upload.etags = []

    # --- helpers ---------------------------------------------------------------------------

    async def _try_lock(self, upload_id: uuid.UUID) -> bool:
        """Serialise the requests of one upload (released at the end of the transaction; it
        assigns no transaction id, so a long PATCH does not hold back audit sequencing)."""
        locked = await self.session.scalar(
            select(func.pg_try_advisory_xact_lock(_LOCK_CLASS, _lock_key(upload_id)))
        )
        return bool(locked)

    async def _claimed(self, upload_id: uuid.UUID) -> bool:
        """Whether a request holds a live claim on the upload (is streaming into it)."""
        unclaimed = await self.session.scalar(
            select(_unclaimed()).where(UploadSession.id == upload_id)
        )
        return unclaimed is False

    async def _lock(self, upload_id: uuid.UUID) -> None:
        """The same lock, waiting for it (held already by this transaction: a no-op)."""
        await self.session.execute(
            select(func.pg_advisory_xact_lock(_LOCK_CLASS, _lock_key(upload_id)))
        )

    async def _get(self, upload_id: uuid.UUID, station_id: uuid.UUID) -> UploadSession:
        upload = await self.session.get(UploadSession, upload_id, populate_existing=True)
        if upload is None or upload.station_id != station_id:  # another station's: not found
            raise NotFound("no such upload")
        return upload

    def _require_open(self, upload: UploadSession) -> None:
        if upload.status == UploadStatus.open.value and upload.expires_at <= utc_now():
            raise Gone("this upload expired before it was finished: upload the clip again")
        if upload.status != UploadStatus.open.value:
            raise Gone(f"this upload is {upload.status}: upload the clip again")

    async def _stored(self, upload: UploadSession) -> StoredClip | None:
        """The registered recording; ``created`` when this session's object is its (not one
        found registered already, through another session)."""
        if upload.status != UploadStatus.complete.value:
            return None
        stored, object_key = await self.collecte.stored(upload.recording_id)
        return stored.model_copy(update={"created": object_key == upload.object_key})

    def _state(self, upload: UploadSession, stored: StoredClip | None) -> UploadSessionState:
        return UploadSessionState(
            id=upload.id,
            station_id=upload.station_id,
            status=upload.status,
            offset=upload.offset,
            length=upload.length,
            expires_at=upload.expires_at,
            metadata=ClipMetadata.model_validate(upload.metadata_json),
            content_type=upload.content_type,
            stored=stored,
        )


def _locked() -> Locked:
    return Locked(
        "another request is writing to this upload: retry in a moment",
        headers={"Retry-After": "1"},
    )


def _unclaimed() -> ColumnElement[bool]:
    """No request is streaming into the upload: never claimed, released, or run out. The
    database's clock decides, the same for every replica."""
    return or_(
        UploadSession.claimed_until.is_(None),
        UploadSession.claimed_until <= func.statement_timestamp(),
    )


class _Claim:
    """One PATCH's claim on its upload (the module's docstring, "Claims"). Each step is a
    short transaction of the request's session, committed by the step itself (the request's
    own commit comes only at its end, and the stream lies between)."""

    def __init__(self, service: ResumableService, upload_id: uuid.UUID, lease_s: float) -> None:
        self.service = service
        self.upload_id = upload_id
        self.token = uuid.uuid4()
        self.lease = timedelta(seconds=lease_s)
        self.renew_every = lease_s / 3
        self.renewed = time.monotonic()

    async def _update(self, *where: ColumnElement[bool], **values: Any) -> bool:
        updated = await self.service.session.scalar(
            update(UploadSession)
            .where(UploadSession.id == self.upload_id, *where)
            .values(**values)
            .returning(UploadSession.id)
            .execution_options(synchronize_session=False)
        )
        return updated is not None

    async def take(self) -> bool:
        """Claim the upload unless a live claim holds it (under the upload's lock)."""
        started = time.monotonic()
        taken = await self._update(
            _unclaimed(),
            claim_id=self.token,
            claimed_until=func.statement_timestamp() + self.lease,
        )
        self.renewed = started
        return taken

    async def keep(self) -> None:
        """Renew the lease when a third of it has gone by (bytes are flowing): a Conflict if
        another request took the upload over meanwhile (this one was silent a whole lease)."""
        if time.monotonic() - self.renewed < self.renew_every:
            return
        started = time.monotonic()
        renewed = await self._update(
            UploadSession.claim_id == self.token,
            claimed_until=func.statement_timestamp() + self.lease,
        )
        await release_connection(self.service.session)
        if not renewed:
            raise self._lost()
        self.renewed = started

    async def settle(self, upload: UploadSession) -> None:
        """Under the upload's lock, in the transaction that records this PATCH's outcome:
        the upload re-read, and the claim released if it is still this request's (else a
        Conflict: nothing of this PATCH counts)."""
        await self.service._lock(upload.id)
        await self.service.session.refresh(upload)
        if upload.claim_id != self.token:
            raise self._lost()
        upload.claim_id = None
        upload.claimed_until = None

    async def give_up(self) -> None:
        """Release the claim of a PATCH that failed (nothing of it acknowledged). Best
        effort: with the database away, the claim runs out by itself."""
        try:
            await self.service.session.rollback()  # whatever the failure left open
            await self._update(
                UploadSession.claim_id == self.token, claim_id=None, claimed_until=None
            )
            await release_connection(self.service.session)
        except Exception as exc:
            _logger.info("upload %s: its claim will run out by itself (%s)", self.upload_id, exc)

    def _lost(self) -> Conflict:
        _logger.warning(
            "upload %s: a PATCH silent for longer than its claim (%s s) lost it to another "
            "request; nothing of it was kept",
            self.upload_id,
            self.lease.total_seconds(),
        )
        return Conflict(
            "this request's claim on the upload ran out and another request took it over: "
            "nothing of this PATCH was kept; ask where the upload is (HEAD) and resume"
        )


def _lock_key(upload_id: uuid.UUID) -> int:
    key: int = struct.unpack(">i", upload_id.bytes[:4])[0]
    return key


# The bytes after the last whole part are kept in the row, sealed under the clip's data key and
# bound to the upload and the offset they end at, so a tail cannot be replayed elsewhere.


def _tail_aad(upload: UploadSession) -> bytes:
    return TAIL_CONTEXT + upload.id.bytes + struct.pack(">Q", upload.offset)


def _open_tail(upload: UploadSession, data_key: bytes) -> bytes:
    return sealing.open_blob(data_key, _tail_aad(upload), upload.tail) if upload.tail else b""


def _seal_tail(upload: UploadSession, data_key: bytes, pending: bytes) -> bytes | None:
    """After ``upload.offset`` has been set to where ``pending`` ends."""
    return sealing.seal_blob(data_key, _tail_aad(upload), pending) if pending else None
