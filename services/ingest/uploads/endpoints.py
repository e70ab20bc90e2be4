from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status
from nacl.signing import SigningKey

from services.ingest.settings import IngestSettings
from services.ingest.stations.endpoints import CurrentStation
from services.ingest.uploads.repository import keep_receipt
from services.ingest.uploads.service import UploadService
from shared.clips import MAX_CLIP_SIZE, METADATA_HEADER, ClipMetadata, declared_content_type
from shared.errors import PayloadTooLarge, UnprocessableEntity
from shared.inputs import HeaderCount
from shared.openapi import problems, raises, raw_body
from shared.receipts import Receipt
from shared.signatures import b64decode, key_id, public_key_of
from shared.web import SessionDep

router = APIRouter(prefix="/v1", tags=["uploads"])


def receipt_key(settings: IngestSettings) -> SigningKey:
    return SigningKey(b64decode(settings.receipt_key))


@raises(502, 503)  # what call_vault answers when the vault fails or is away
async def _uploads(request: Request) -> UploadService:
    settings: IngestSettings = request.app.state.settings
    return UploadService(
        request.app.state.vault,
        settings.service_token,
        receipt_key(settings),
        timedelta(seconds=settings.clock_tolerance_s),
    )


Uploads = Annotated[UploadService, Depends(_uploads)]


@router.post(
    "/recordings",
    response_model=Receipt,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": Receipt, "description": "already received: the same receipt again"},
        **problems(403, 413, 415),
    },
    openapi_extra=raw_body("video/mp4", "application/octet-stream"),
)
async def upload(
    request: Request,
    response: Response,
    station: CurrentStation,
    uploads: Uploads,
    session: SessionDep,
    metadata: Annotated[str | None, Header(alias=METADATA_HEADER)] = None,
    content_length: Annotated[HeaderCount | None, Header()] = None,
    content_type: Annotated[str | None, Header()] = None,
) -> Receipt:
    """Upload one clip as the raw request body (streamed), its R241-10 metadata as base64url
    JSON in the `Temoin-Metadata` header. The signed receipt comes back only once the clip is
    sealed and registered: until then the camera keeps it. The same clip again (same camera
    and SHA-256) gets the same receipt (200), never a second recording. The body's
    Content-Type is video/* or application/octet-stream (the default)."""
    if content_length is not None and content_length > MAX_CLIP_SIZE:
        raise PayloadTooLarge(f"a clip is at most {MAX_CLIP_SIZE} bytes")
    media_type = declared_content_type(content_type, field="header.content-type")
    clip = ClipMetadata.decode(metadata)
    if content_length is not None and content_length > clip.size:
        raise PayloadTooLarge(f"Content-Length exceeds the declared size ({clip.size} bytes)")
    if content_length is not None and content_length < clip.size:
        raise UnprocessableEntity(
            f"Content-Length is {content_length}, the declared size {clip.size}",
            field="metadata.size",
        )
    receipt, created = await uploads.upload(station, clip, request.stream(), media_type)
    await keep_receipt(session, receipt)
    if not created:
        response.status_code = status.HTTP_200_OK
    return receipt


@router.get("/receipts/public-key", tags=["receipts"])
async def receipts_public_key(request: Request) -> dict[str, str]:
    """The key that signs receipts (public: anyone may check a receipt with it)."""
    key = public_key_of(receipt_key(request.app.state.settings))
    return {"algorithm": "Ed25519", "public_key": key, "key_id": key_id(key)}
