"""The recordings API of the admin dashboard: search (metadata only), consultation, and the
media URL a consultation opens (HTTP Range, for the browser's video player)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from services.vault.derivatives.models import SEALED, Derivative
from services.vault.directory.schemas import Page
from services.vault.recordings import schemas
from services.vault.recordings.keys import unwrap_data_key
from services.vault.recordings.media import (
    Unsatisfiable,
    parse_range,
    served_content_type,
    verify_grant,
)
from services.vault.recordings.models import Recording, RecordingStatus
from services.vault.recordings.reading import SealedReader
from services.vault.recordings.repository import RecordingRepository
from services.vault.recordings.viewing import ViewingService, still_allowed
from services.vault.settings import VaultSettings
from shared.access import OrgAccess, organisation_access, refuse
from shared.auth import Principal, Role
from shared.errors import Conflict, Forbidden, Gone, NotFound, RangeNotSatisfiable
from shared.inputs import Instant, Offset
from shared.openapi import problems
from shared.web import SessionDep, StoreDep

router = APIRouter(prefix="/v1", tags=["recordings"])
# The app routes this one first: a player sends a request per seek, and matching a path
# against every route before it was a measurable part of each.
media_router = APIRouter(prefix="/v1", tags=["media"])

# R241-12: the maire, the responsable and the habilités view recordings; the wearer only their
# own, where the service allows it. The DPO finds them (metadata) but does not view them.
VIEWERS = (Role.maire, Role.responsable, Role.habilite, Role.agent)
FINDERS = (Role.maire, Role.responsable, Role.habilite, Role.dpo, Role.agent)

Find = Annotated[OrgAccess, Depends(organisation_access(*FINDERS))]
View = Annotated[OrgAccess, Depends(organisation_access(*VIEWERS))]
RECORDINGS = "/organisations/{org_id}/recordings"
SMALL_RANGE = 4 << 20  # ranges up to this size are answered in one piece


async def _settings(request: Request) -> VaultSettings:
    settings: VaultSettings = request.app.state.settings
    return settings


Settings = Annotated[VaultSettings, Depends(_settings)]


@router.get(RECORDINGS, response_model=Page[schemas.RecordingOut])
async def search(
    access: Find,
    session: SessionDep,
    settings: Settings,
    started_from: Instant | None = None,
    started_until: Instant | None = None,
    agent_id: uuid.UUID | None = None,
    camera_id: uuid.UUID | None = None,
    place: Annotated[str | None, Query(max_length=200)] = None,
    procedure_id: uuid.UUID | None = None,
    status: RecordingStatus | None = None,
    station_id: Annotated[
        uuid.UUID | None, Query(description="only the clips this docking station uploaded")
    ] = None,
    received_since: Annotated[
        Instant | None,
        Query(description="only the clips the vault received at or after this instant"),
    ] = None,
    erasure_before: Annotated[
        Instant | None,
        Query(
            description="only the sealed clips whose retention ends before this instant and "
            "that no open procedure holds: those the erasure job will take by then (R241-13); "
            "ordered by `retain_until`, soonest first"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Page[schemas.RecordingOut]:
    """Recordings of the organisation, newest first (with `erasure_before`: soonest erased
    first), metadata only (a wearer: their own). `status=damaged`: those the fixity scrub
    found damaged."""
    items, total = await ViewingService(session, settings, access).search(
        started_from=started_from,
        started_until=started_until,
        agent_id=agent_id,
        camera_id=camera_id,
        place=place,
        procedure_id=procedure_id,
        status=status.value if status is not None else None,
        station_id=station_id,
        received_since=received_since,
        erasure_before=erasure_before,
        limit=limit,
        offset=offset,
    )
    return Page.of(schemas.RecordingOut, items, total, limit, offset)


@router.get(f"{RECORDINGS}/{{recording_id}}", response_model=schemas.RecordingOut)
async def get_recording(
    recording_id: uuid.UUID, access: Find, session: SessionDep, settings: Settings
) -> schemas.RecordingOut:
    recording = await ViewingService(session, settings, access).recording(recording_id)
    return schemas.RecordingOut.model_validate(recording)


@router.post(
    f"{RECORDINGS}/{{recording_id}}/consultations",
    response_model=schemas.ConsultationOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409, 410),
)
async def consult(
    recording_id: uuid.UUID,
    data: schemas.ConsultationIn,
    request: Request,
    access: View,
    session: SessionDep,
    settings: Settings,
) -> schemas.ConsultationOut:
    """Open a consultation (logged with its motif) and get a short-lived media URL for it."""
    try:
        url, consultation = await ViewingService(session, settings, access).consult(
            recording_id, data
        )
    except Forbidden as error:
        await refuse(request, session, access.principal, error, access.organisation_id)
    # Behind a proxy the request's own address is not the one browsers use: the setting wins.
    base = settings.public_url or str(request.base_url).rstrip("/")
    return schemas.ConsultationOut(
        id=consultation.id,
        recording_id=recording_id,
        url=url,
        media_url=base + url,
        expires_at=consultation.expires_at,
    )


@router.delete(
    f"{RECORDINGS}/{{recording_id}}/consultations/{{consultation_id}}",
    status_code=status.HTTP_204_NO_CONTENT,
)
async def close_consultation(
    recording_id: uuid.UUID,
    consultation_id: uuid.UUID,
    access: View,
    session: SessionDep,
    settings: Settings,
) -> None:
    """Close one's own consultation (the player was closed): its media URL stops at once."""
    await ViewingService(session, settings, access).close(recording_id, consultation_id)


@media_router.get("/media/{token}", responses=schemas.MEDIA_RESPONSES)
async def media(
    token: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """The clip of a consultation, for a <video> element: the URL is the credential. Byte
    ranges (206), 416 outside the clip (a problem, with `Content-Range: bytes */size`); a
    damaged chunk ends the read, never served. Each request checks again that the viewer may
    still view it (403, logged, once a habilitation is withdrawn or the consultation closed);
    503 with Retry-After while the store is down."""
    grant = verify_grant(token, settings.media_signing_key())
    consulted = await RecordingRepository(session).consulted(
        grant.consultation_id, grant.subject, grant.recording_id
    )
    if consulted is None:
        raise NotFound("no such consultation")
    if (refusal := still_allowed(consulted)) is not None:
        viewer = Principal(
            subject=consulted.consultation.subject,
            roles=frozenset({Role(consulted.consultation.role)}),
            organisation_id=consulted.consultation.organisation_id,
        )
        await refuse(request, session, viewer, refusal, consulted.consultation.organisation_id)
    recording: Recording | Derivative = consulted.recording
    if consulted.consultation.derivative_id is not None:
        # The consultation of an anonymised copy (services/vault/derivatives/): that copy.
        derivative = await session.get(Derivative, consulted.consultation.derivative_id)
        if derivative is None or derivative.status not in SEALED or derivative.wrapped_key is None:
            raise Gone("this anonymised copy was erased with its recording")
        recording = derivative
    elif recording.status == RecordingStatus.erased.value or recording.wrapped_key is None:
        raise Gone("this recording was erased")
    elif recording.status == RecordingStatus.damaged.value:
        raise Conflict("this recording failed its integrity check: it cannot be served")
    assert recording.wrapped_key is not None
    try:
        wanted = parse_range(range_header, recording.size)
    except Unsatisfiable as exc:
        raise RangeNotSatisfiable(
            f"the clip has {recording.size} bytes: no byte of that range is in it",
            size=recording.size,
            headers={"Accept-Ranges": "bytes", "Cache-Control": "private, no-store"},
        ) from exc
    start, stop = wanted or (0, recording.size)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Type": served_content_type(recording.content_type),
        "Cache-Control": "private, no-store",
        "Content-Length": str(stop - start),
    }
    code = status.HTTP_200_OK
    if wanted is not None:
        code = status.HTTP_206_PARTIAL_CONTENT
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{recording.size}"
    if request.method == "HEAD":
        return Response(status_code=code, headers=headers)
    data_key = unwrap_data_key(
        settings, recording.wrapped_key, recording.kek_id or "", recording.id
    )
    reader = SealedReader(store, recording, data_key)
    if stop - start <= SMALL_RANGE:
        # A seek: read it whole, so that any damage (409) or store outage (503) is a clear
        # answer, not a cut stream.
        body_bytes = await reader.read(start, stop)
        return Response(body_bytes, status_code=code, headers=headers)
    pieces = reader.chunks(start, stop)
    # The first chunk is opened before answering, for the same reason.
    first = await anext(pieces)

    async def body() -> AsyncIterator[memoryview]:
        yield first
        async for piece in pieces:  # Damaged here cuts the stream: never unauthenticated bytes
            yield piece

    return StreamingResponse(body(), status_code=code, headers=headers)


@media_router.head("/media/{token}", responses=schemas.MEDIA_RESPONSES)
async def media_head(
    token: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
) -> Response:
    """The headers GET would send (players ask for the size and type first)."""
    return await media(token, request, session, store, settings, range_header)
