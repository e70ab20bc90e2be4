"""Resumable uploads: ingest's side of tus 1.0 (the protocol is in tus.py). The upload's state
lives in the vault's database and the object store (services/vault/recordings/resumable.py),
never in this process, so any ingest replica, or this one after a crash, serves the next
request. Ingest authenticates the station, checks each PATCH against its Upload-Checksum as
it streams through, and signs the receipt once the vault has sealed and registered the clip."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from services.ingest.stations.repository import StationKey
from services.ingest.uploads.service import Mismatch, UploadService, usable
from shared.clips import ClipMetadata, UploadSessionState
from shared.errors import ChecksumMismatch
from shared.receipts import Receipt


@dataclass(frozen=True)
class Checksum:
    """A PATCH's Upload-Checksum: the hash function and the expected digest."""

    hasher: Callable[[], hashlib._Hash]
    digest: bytes


class ResumableUploads:
    def __init__(self, uploads: UploadService) -> None:
        self.uploads = uploads

    async def create(
        self, station: StationKey, metadata: ClipMetadata, content_type: str
    ) -> UploadSessionState:
        return await self.uploads.create(station, metadata, content_type, single=False)

    async def state(self, station: StationKey, upload_id: uuid.UUID) -> UploadSessionState:
        response = await self.uploads.call_vault(
            "GET", f"/internal/v1/uploads/{upload_id}", headers=_station(station)
        )
        return usable(UploadSessionState.model_validate(response.json()))

    async def append(
        self,
        station: StationKey,
        upload_id: uuid.UUID,
        offset: int,
        body: AsyncIterator[bytes],
        *,
        checksum: Checksum | None,
        content_length: int | None,
    ) -> UploadSessionState:
        """Stream a PATCH body to the vault. With an Upload-Checksum, a body that does not
        match it is cut off before its end, and the vault keeps nothing of it (tus: 460)."""

        async def checked(checksum: Checksum) -> AsyncIterator[bytes]:
            digest = checksum.hasher()
            async for piece in body:
                digest.update(piece)
                yield piece
            if digest.digest() != checksum.digest:
                raise Mismatch(
                    ChecksumMismatch("the body differs from its Upload-Checksum: not kept")
                )

        params: dict[str, str | int] = {
            "offset": offset,
            "keep_partial": "false" if checksum is not None else "true",
        }
        headers = _station(station)
        if content_length is not None:
            params["content_length"] = content_length
            if checksum is None:
                # The length is known: the body goes as is, not in chunked encoding, which
                # costs ingest a copy of every piece (the chunk's framing joined to it) and
                # HAProxy and the vault its parsing; HAProxy can then splice it (docs/scaling.md,
                # "Where the CPU goes"). A body cut short still ends the vault's request early
                # (it keeps what arrived, as with chunks). Not with a checksum: the vault must
                # not see the body end before its digest is checked, and chunked encoding sends
                # that end only after ``checked`` returns.
                headers["Content-Length"] = str(content_length)
        try:
            response = await self.uploads.call_vault(
                "PATCH",
                f"/internal/v1/uploads/{upload_id}",
                params=params,
                content=body if checksum is None else checked(checksum),
                headers=headers,
            )
        except Mismatch as mismatch:
            raise mismatch.error from None
        return usable(UploadSessionState.model_validate(response.json()), after_patch=True)

    async def terminate(self, station: StationKey, upload_id: uuid.UUID) -> None:
        await self.uploads.call_vault(
            "DELETE", f"/internal/v1/uploads/{upload_id}", headers=_station(station)
        )

    def receipt(self, upload: UploadSessionState) -> Receipt | None:
        return None if upload.stored is None else self.uploads.receipt(upload)


def _station(station: StationKey) -> dict[str, str]:
    return {"Temoin-Station": str(station.station_id)}
