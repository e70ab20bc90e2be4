"""What ingest calls: check a clip's metadata before it streams, then stream it for sealing,
in one request or (resumable) as a session fed by several. Not for people: these routes take
the service token only."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from services.vault.recordings.resumable import ResumableService
from services.vault.recordings.service import CollecteService
from services.vault.settings import VaultSettings
from shared.clips import METADATA_HEADER, ClipMetadata, StoredClip, UploadSessionState
from shared.errors import BadRequest
from shared.openapi import problems
from shared.service_auth import ServiceCaller
from shared.web import SessionDep, StoreDep

router = APIRouter(prefix="/internal/v1/recordings", tags=["internal"])
uploads_router = APIRouter(prefix="/internal/v1/uploads", tags=["internal"])


async def _collecte(request: Request, session: SessionDep, store: StoreDep) -> CollecteService:
    settings: VaultSettings = request.app.state.settings
    return CollecteService(session, store, settings)


async def _resumable(request: Request, session: SessionDep, store: StoreDep) -> ResumableService:
    settings: VaultSettings = request.app.state.settings
    return ResumableService(session, store, settings)


Collecte = Annotated[CollecteService, Depends(_collecte)]
Resumable = Annotated[ResumableService, Depends(_resumable)]


class CheckIn(BaseModel):
    station_id: uuid.UUID
    metadata: ClipMetadata


class CheckOut(BaseModel):
    existing: StoredClip | None


@router.post("/check", response_model=CheckOut, responses=problems(403))
async def check(data: CheckIn, caller: ServiceCaller, collecte: Collecte) -> CheckOut:
    """The directory's verdict on a clip's metadata (422 naming the field), and the recording
    if this clip is already registered."""
    resolved = await collecte.resolve(data.metadata, data.station_id)
    return CheckOut(existing=await collecte.existing(resolved, data.metadata.sha256))


@router.post(
    "",
    response_model=StoredClip,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": StoredClip, "description": "this clip was already registered"},
        **problems(400, 403, 413),
    },
)
async def collect(
    request: Request,
    response: Response,
    caller: ServiceCaller,
    collecte: Collecte,
    station: Annotated[uuid.UUID, Header(alias="Temoin-Station")],
    metadata: Annotated[str | None, Header(alias=METADATA_HEADER)] = None,
    content_type: Annotated[str, Header()] = "application/octet-stream",
) -> StoredClip:
    """Seal the streamed clip into the object store and register it (201), or answer the
    existing recording of the same clip (200). Only then may ingest sign a receipt."""
    try:
        stored = await collecte.collect(
            ClipMetadata.decode(metadata), station, request.stream(), content_type
        )
    except ClientDisconnect as exc:
        # Ingest stopped the stream (a mismatch it found, or the dock went away): the multipart
        # upload was aborted and nothing registered. Nobody reads this answer.
        raise BadRequest("the upload was interrupted; nothing was stored") from exc
    if not stored.created:
        response.status_code = status.HTTP_200_OK
    return stored


class UploadIn(BaseModel):
    station_id: uuid.UUID
    metadata: ClipMetadata
    content_type: str = "application/octet-stream"


@uploads_router.post(
    "",
    response_model=UploadSessionState,
    status_code=status.HTTP_201_CREATED,
    responses=problems(403),
)
async def create_upload(
    data: UploadIn, caller: ServiceCaller, resumable: Resumable
) -> UploadSessionState:
    """A resumable upload session, after the directory's checks (422 naming the field);
    complete at once when the clip is already registered."""
    return await resumable.create(data.metadata, data.station_id, data.content_type)


StationHeader = Annotated[uuid.UUID, Header(alias="Temoin-Station")]


@uploads_router.get("/{upload_id}", response_model=UploadSessionState)
async def get_upload(
    upload_id: uuid.UUID, station: StationHeader, caller: ServiceCaller, resumable: Resumable
) -> UploadSessionState:
    """The acknowledged state (404 unless the upload is that station's)."""
    return await resumable.state(upload_id, station)


@uploads_router.patch(
    "/{upload_id}",
    response_model=UploadSessionState,
    responses=problems(400, 403, 409, 410, 413, 423),
)
async def append_upload(
    upload_id: uuid.UUID,
    station: StationHeader,
    request: Request,
    caller: ServiceCaller,
    resumable: Resumable,
    offset: Annotated[int, Query(ge=0)],
    keep_partial: Annotated[bool, Query()] = True,
    content_length: Annotated[int | None, Query(ge=0)] = None,
) -> UploadSessionState:
    """Append the streamed body at ``offset``; once the last byte is in, seal, check the
    whole clip's SHA-256 and register it (status ``complete``, or ``rejected``)."""
    state = await resumable.append(
        upload_id,
        station,
        offset,
        request.stream(),
        keep_partial=keep_partial,
        content_length=content_length,
    )
    return state


@uploads_router.delete(
    "/{upload_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(423)
)
async def terminate_upload(
    upload_id: uuid.UUID, station: StationHeader, caller: ServiceCaller, resumable: Resumable
) -> None:
    await resumable.terminate(upload_id, station)
