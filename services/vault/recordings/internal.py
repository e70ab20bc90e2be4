"""What ingest calls: an upload session (after the directory's checks), fed by one request (a
single POST) or by several (tus). Not for people: these routes take the service token only."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, status
from pydantic import Field

from services.vault.recordings.resumable import ResumableService
from services.vault.settings import VaultSettings
from shared.clips import ClipContentType, ClipMetadata, UploadSessionState
from shared.inputs import Offset
from shared.openapi import problems, raw_body
from shared.schemas import JsonBody
from shared.service_auth import ServiceCaller
from shared.web import SessionDep, StoreDep

uploads_router = APIRouter(prefix="/internal/v1/uploads", tags=["internal"])


async def _resumable(request: Request, session: SessionDep, store: StoreDep) -> ResumableService:
    settings: VaultSettings = request.app.state.settings
    return ResumableService(session, store, settings)


Resumable = Annotated[ResumableService, Depends(_resumable)]


class UploadIn(JsonBody):
    station_id: uuid.UUID
    metadata: ClipMetadata
    content_type: ClipContentType = "application/octet-stream"
    single: bool = Field(False, description="the session of a single POST (one request)")


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
    return await resumable.create(
        data.metadata, data.station_id, data.content_type, single=data.single
    )


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
    openapi_extra=raw_body("application/octet-stream"),
)
async def append_upload(
    upload_id: uuid.UUID,
    station: StationHeader,
    request: Request,
    caller: ServiceCaller,
    resumable: Resumable,
    offset: Annotated[Offset, Query()],
    keep_partial: Annotated[bool, Query()] = True,
    content_length: Annotated[Offset | None, Query()] = None,
    whole: Annotated[bool, Query()] = False,
) -> UploadSessionState:
    """Append the streamed body at ``offset``; once the last byte is in, seal, check the
    whole clip's SHA-256 and register it (status ``complete``, or ``rejected``). ``whole``:
    the body is the whole clip (a single POST), discarded at once if it fails."""
    return await resumable.append(
        upload_id,
        station,
        offset,
        request.stream(),
        keep_partial=keep_partial,
        content_length=content_length,
        whole=whole,
    )


@uploads_router.delete(
    "/{upload_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(410, 423)
)
async def terminate_upload(
    upload_id: uuid.UUID, station: StationHeader, caller: ServiceCaller, resumable: Resumable
) -> None:
    await resumable.terminate(upload_id, station)
