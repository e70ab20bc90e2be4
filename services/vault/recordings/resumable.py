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
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import anyio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import ClientDisconnect

from services.vault.recordings.models import UploadSession, UploadStatus
from services.vault.recordings.parts import PartWriter
from services.vault.recordings.service import (
    CollecteService,
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
        self, metadata: ClipMetadata, station_id: uuid.UUID, content_type: str
    ) -> UploadSessionState:
        """A new session; for a clip already registered, one that is complete at once (the
        dock then has nothing to send and gets the same receipt)."""
        resolved = await self.collecte.resolve(metadata, station_id)
        existing = await self.collecte.existing(resolved, metadata.sha256)
        recording_id = uuid.uuid4()
        chunk_size = self.settings.chunk_size
        upload = UploadSession(
            id=uuid.uuid4(),
            organisation_id=resolved.organisation.id,
            station_id=station_id,
            metadata_json=metadata.model_dump(mode="json"),
            content_type=content_type,
            length=metadata.size,
            offset=0,
            status=UploadStatus.open.value,
            expires_at=utc_now() + timedelta(seconds=self.settings.upload_expiry_s),
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
            # The lock must outlast the upload: S3 applies it when the parts are assembled.
            lock_until = max(
                self.collecte.lock_until(metadata, resolved),
                upload.expires_at + timedelta(days=1),
            )
            upload.object_key = sealed_object_key(resolved.organisation.id, recording_id)
            upload.multipart_id = await self.store.start_multipart(
                upload.object_key, retain_until=lock_until
            )
            upload.wrapped_key = self.collecte.wrap(sealing.new_data_key(), recording_id)
        self.session.add(upload)
        await self.session.flush()
        return self._state(upload, existing)

    # --- reading ---------------------------------------------------------------------------

    async def state(self, upload_id: uuid.UUID, station_id: uuid.UUID) -> UploadSessionState:
        """The acknowledged state. A PATCH in flight on another connection (say, one whose
        sender just died) is given a moment to settle, so the offset is its outcome."""
        for _ in range(30):
            if await self._try_lock(upload_id):
                break
            await anyio.sleep(0.1)
        upload = await self._get(upload_id, station_id)
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
    ) -> UploadSessionState:
        """Add the body at ``offset``. With ``keep_partial``, a body cut short still advances
        the offset by what arrived; without (the PATCH carried a checksum that could not be
        checked), nothing of it counts."""
        if not await self._try_lock(upload_id):
            raise Locked("another request is writing to this upload: retry in a moment")
        upload = await self._get(upload_id, station_id)
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
        data_key = self.collecte.unwrap(upload.wrapped_key, upload.kek_id, upload.recording_id)
        try:
            pending = _open_tail(upload, data_key)
        except sealing.SealError:
            # The stored tail was altered: nothing sent since the last part can be trusted.
            _logger.error("upload %s: its stored tail failed authentication", upload.id)
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
                if not keep_partial:
                    raise BadRequest("the body was cut short; nothing of it was kept") from exc
            await writer.drain()
        except MultipartGone:
            await self._discard(upload, UploadStatus.lost)
            return self._state(upload, None)
        finally:
            await writer.abandon()  # parts of a refused PATCH: never acknowledged
        # Acknowledge everything received, in the transaction the caller commits.
        upload.offset = writer.offset
        upload.etags = list(writer.etags)  # a new list: the ORM sees the change
        upload.hash_state = writer.hash.state()
        upload.tail = _seal_tail(upload, data_key, writer.pending)
        if upload.offset == upload.length:
            try:
                await self._complete(upload)
            except MultipartGone:
                await self._discard(upload, UploadStatus.lost)
        return self._state(upload, await self._stored(upload))

    async def _complete(self, upload: UploadSession) -> None:
        assert upload.object_key is not None and upload.multipart_id is not None
        metadata = ClipMetadata.model_validate(upload.metadata_json)
        resolved = await self.collecte.resolve(metadata, upload.station_id)
        if ResumableSha256(upload.hash_state).hexdigest() != metadata.sha256:
            # Kept as the session's outcome (committed), which ingest answers with a 422.
            await self._discard(upload, UploadStatus.rejected)
            return
        await self.collecte.repository.lock_content(resolved.camera.id, metadata.sha256)
        existing = await self.collecte.existing(resolved, metadata.sha256)
        if existing is not None:  # uploaded meanwhile through another session
            await self._discard(upload, UploadStatus.complete)
            upload.recording_id = existing.recording_id
            return
        version = await self.store.complete_multipart(
            upload.object_key, upload.multipart_id, upload.etags
        )
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
            ),
        )
        upload.status = UploadStatus.complete.value
        upload.tail = None
        upload.hash_state = b""
        upload.etags = []

    # --- ending ----------------------------------------------------------------------------

    async def terminate(self, upload_id: uuid.UUID, station_id: uuid.UUID) -> None:
        if not await self._try_lock(upload_id):
            raise Locked("another request is writing to this upload: retry in a moment")
        upload = await self._get(upload_id, station_id)
        if upload.status == UploadStatus.open.value:
            await self._discard(upload, UploadStatus.terminated)

    async def expire(self, now: datetime | None = None, limit: int = 100) -> int:
        """Discard sessions left open past their expiry (the vault's background job)."""
        rows = await self.session.scalars(
            select(UploadSession)
            .where(
                UploadSession.status == UploadStatus.open.value,
                UploadSession.expires_at < (now or utc_now()),
            )
            .limit(limit)
        )
        count = 0
        for upload in rows.all():
            if await self._try_lock(upload.id):
                await self._discard(upload, UploadStatus.expired)
                count += 1
        return count

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
        key = struct.unpack(">i", upload_id.bytes[:4])[0]
        locked = await self.session.scalar(select(func.pg_try_advisory_xact_lock(_LOCK_CLASS, key)))
        return bool(locked)

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
        if upload.status != UploadStatus.complete.value:
            return None
        return await self.collecte.stored(upload.recording_id)

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


# The bytes after the last whole part are kept in the row, sealed under the clip's data key and
# bound to the upload and the offset they end at, so a tail cannot be replayed elsewhere.


def _tail_aad(upload: UploadSession) -> bytes:
    return TAIL_CONTEXT + upload.id.bytes + struct.pack(">Q", upload.offset)


def _open_tail(upload: UploadSession, data_key: bytes) -> bytes:
    return sealing.open_blob(data_key, _tail_aad(upload), upload.tail) if upload.tail else b""


def _seal_tail(upload: UploadSession, data_key: bytes, pending: bytes) -> bytes | None:
    """After ``upload.offset`` has been set to where ``pending`` ends."""
    return sealing.seal_blob(data_key, _tail_aad(upload), pending) if pending else None
