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
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import anyio
from sqlalchemy import func, select, tuple_
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
from shared.db import utc_now
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
        sender just died) is given a moment to settle, so the offset is its outcome."""
        for _ in range(30):
            if await self._try_lock(upload_id):
                break
            await anyio.sleep(0.1)
        upload = await self._get(upload_id, station_id)
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
        if not await self._try_lock(upload_id):
            raise Locked("another request is writing to this upload: retry in a moment")
        upload = await self._get(upload_id, station_id)
        if upload.status == UploadStatus.completing.value:
            await self.roll_forward(upload)
        if upload.status == UploadStatus.complete.value and offset <= upload.length:
            # Already registered (a clip uploaded before, or a PATCH whose answer was lost):
            # the bytes are not needed, the answer is the same.
            async for _ in body:
                pass
            return self._state(upload, await self._stored(upload))
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
            await self._discard(upload, UploadStatus.lost)
            return self._state(upload, None)
        except BaseException:
            if whole:
                with anyio.CancelScope(shield=True):
                    await writer.abandon()
                    await self.store.abort_multipart(upload.object_key, upload.multipart_id)
            raise
        finally:
            await writer.abandon()  # parts of a refused PATCH: never acknowledged
        # Acknowledge everything received, in the transaction the caller commits.
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

    async def roll_forward(self, upload: UploadSession) -> None:
        """Assemble a `completing` session's object (or find it assembled) and register its
        recording, in the caller's transaction. Safe after any crash and from any process:
        they take turns on the upload's lock, and each finds what the one before did."""
        await self._lock(upload.id)
        await self.session.refresh(upload)
        if upload.status != UploadStatus.completing.value:
            return
        assert upload.object_key is not None and upload.multipart_id is not None
        metadata = ClipMetadata.model_validate(upload.metadata_json)
        try:
            resolved = await self.collecte.resolve(metadata, upload.station_id)
        except TemoinError as refused:
            # The directory changed since the upload began (station revoked, camera
            # retired): the dock, which has no receipt, keeps the clip.
            _logger.error("upload %s cannot be registered: %s", upload.id, refused.detail)
            await self._discard(upload, UploadStatus.rejected)
            return
        await self.collecte.repository.lock_content(resolved.camera.id, metadata.sha256)
        existing = await self.collecte.existing(resolved, metadata.sha256)
        if existing is not None:  # uploaded meanwhile through another session
            await self._discard(upload, UploadStatus.complete)
            upload.recording_id = existing.recording_id
            return
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
                return
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

    # --- ending ----------------------------------------------------------------------------

    async def terminate(self, upload_id: uuid.UUID, station_id: uuid.UUID) -> None:
        """tus termination: an open upload is discarded; one already ended is 410. A clip
        already registered stays registered (evidence is never withdrawn by its sender)."""
        if not await self._try_lock(upload_id):
            raise Locked("another request is writing to this upload: retry in a moment")
        upload = await self._get(upload_id, station_id)
        if upload.status == UploadStatus.completing.value:
            await self.roll_forward(upload)
        if upload.status == UploadStatus.open.value:
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

    async def roll_forward_if_free(self, upload_id: uuid.UUID) -> bool:
        """Roll a `completing` session forward unless a request is at it: whether it was."""
        if not await self._try_lock(upload_id):
            return False
        upload = await self.session.get(UploadSession, upload_id, populate_existing=True)
        if upload is None:
            return False
        await self.roll_forward(upload)
        return True

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
