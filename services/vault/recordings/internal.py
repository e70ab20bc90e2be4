"""What ingest calls: check a clip's metadata before it streams, then stream it for sealing.
Not for people: these routes take the service token only."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from services.vault.recordings.service import CollecteService
from services.vault.settings import VaultSettings
from shared.clips import METADATA_HEADER, ClipMetadata, StoredClip
from shared.errors import BadRequest
from shared.service_auth import ServiceCaller
from shared.web import SessionDep, StoreDep

router = APIRouter(prefix="/internal/v1/recordings", tags=["internal"])


def _collecte(request: Request, session: SessionDep, store: StoreDep) -> CollecteService:
    settings: VaultSettings = request.app.state.settings
    return CollecteService(session, store, settings)


Collecte = Annotated[CollecteService, Depends(_collecte)]


class CheckIn(BaseModel):
    station_id: uuid.UUID
    metadata: ClipMetadata


class CheckOut(BaseModel):
    existing: StoredClip | None


@router.post("/check", response_model=CheckOut)
async def check(data: CheckIn, caller: ServiceCaller, collecte: Collecte) -> CheckOut:
    """The directory's verdict on a clip's metadata (422 naming the field), and the recording
    if this clip is already registered."""
    resolved = await collecte.resolve(data.metadata, data.station_id)
    return CheckOut(existing=await collecte.existing(resolved, data.metadata.sha256))


@router.post("", response_model=StoredClip, status_code=status.HTTP_201_CREATED)
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
