"""tus 1.0.0 (https://tus.io/protocols/resumable-upload): core, creation, creation-with-upload,
checksum (sha256, sha1), termination and expiration, so that an unmodified tus client (tuspy,
tus-js-client) uploads a clip with nothing but the station's `Authorization` header.

The clip's R241-10 metadata is the upload's `metadata` key (JSON, which tus base64-encodes),
its content type the `filetype` key. Once the last byte is in and the clip is sealed and
registered, the PATCH answer carries the signed receipt (base64url JSON) in `Temoin-Receipt`;
`GET /v1/uploads/{id}/receipt` gives it again. docs/ingest.md has the details."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from email.utils import format_datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.ingest.stations.endpoints import CurrentStation
from services.ingest.uploads.endpoints import Uploads
from services.ingest.uploads.repository import keep_receipt
from services.ingest.uploads.resumable import Checksum, ResumableUploads
from shared.clips import MAX_CLIP_SIZE, ClipMetadata, UploadSessionState, declared_content_type
from shared.errors import (
    BadRequest,
    Conflict,
    PayloadTooLarge,
    PreconditionFailed,
    UnprocessableEntity,
    UnsupportedMediaType,
)
from shared.inputs import HeaderCount, refuse_unstorable
from shared.openapi import headers_doc, problems, raw_body
from shared.receipts import Receipt
from shared.web import SessionDep

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,checksum,termination,expiration"
OFFSET_STREAM = "application/offset+octet-stream"
RECEIPT_HEADER = "Temoin-Receipt"
UPLOAD_METADATA = "header.upload-metadata"

router = APIRouter(prefix="/v1/uploads", tags=["uploads (tus)"])


async def _tus_version(
    tus_resumable: Annotated[str | None, Header(json_schema_extra={"enum": [TUS_VERSION]})] = None,
) -> None:
    if tus_resumable != TUS_VERSION:
        raise PreconditionFailed(
            f"this server speaks tus {TUS_VERSION} (Tus-Resumable header)",
            headers={"Tus-Version": TUS_VERSION},
        )


async def _resumable(uploads: Uploads) -> ResumableUploads:
    return ResumableUploads(uploads)


Tus = [Depends(_tus_version)]
Resumable = Annotated[ResumableUploads, Depends(_resumable)]


def parse_upload_metadata(header: str | None) -> dict[str, str]:
    """`key base64value` pairs separated by commas (a key alone has an empty value)."""
    pairs: dict[str, str] = {}
    for item in (header or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.strip().partition(" ")
        try:
            pairs[key] = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise BadRequest(f"Upload-Metadata: the value of {key!r} is not base64") from exc
    refuse_unstorable(pairs, UPLOAD_METADATA)
    return pairs


def clip_metadata(pairs: dict[str, str]) -> ClipMetadata:
    if "metadata" not in pairs:
        raise UnprocessableEntity(
            "Upload-Metadata has no `metadata` key (the clip's metadata as JSON)",
            field="metadata",
        )
    try:
        data = json.loads(pairs["metadata"])
    except (ValueError, RecursionError) as exc:
        raise UnprocessableEntity("the `metadata` value is not JSON", field="metadata") from exc
    return ClipMetadata.parse(data)


def _encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


async def _headers(
    upload: UploadSessionState, resumable: ResumableUploads, session: AsyncSession
) -> dict[str, str]:
    headers = {
        "Upload-Offset": str(upload.offset),
        "Upload-Expires": format_datetime(upload.expires_at, usegmt=True),
        "Cache-Control": "no-store",
    }
    receipt = resumable.receipt(upload)
    if receipt is not None:
        await keep_receipt(session, receipt)
        headers[RECEIPT_HEADER] = base64.urlsafe_b64encode(
            receipt.model_dump_json().encode()
        ).decode("ascii")
    return headers


# tus requires sha1; sha256 is what the issue asks for and what the clip itself is hashed with.
CHECKSUMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}


def _checksum(header: str | None) -> Checksum | None:
    if header is None:
        return None
    algorithm, _, value = header.strip().partition(" ")
    if algorithm.lower() not in CHECKSUMS:
        raise BadRequest(
            f"Upload-Checksum algorithm {algorithm!r} is not supported",
            headers={"Tus-Checksum-Algorithm": ",".join(CHECKSUMS)},
        )
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except binascii.Error as exc:
        raise BadRequest("Upload-Checksum: the digest is not base64") from exc
    hasher = CHECKSUMS[algorithm.lower()]
    if len(digest) != hasher().digest_size:
        raise BadRequest(f"Upload-Checksum: not a {algorithm} digest")
    return Checksum(hasher, digest)


@router.options(
    "",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        204: {
            "description": "what this server supports",
            "headers": headers_doc(
                "Tus-Version", "Tus-Extension", "Tus-Checksum-Algorithm", "Tus-Max-Size"
            ),
        }
    },
)
async def capabilities() -> Response:
    """What this tus server supports (no authentication: it says nothing about any upload)."""
    return Response(
        status_code=status.HTTP_204_NO_CONTENT,
        headers={
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            "Tus-Max-Size": str(MAX_CLIP_SIZE),
        },
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=Tus,
    responses={
        201: {
            "description": "created (and its first bytes appended); with its receipt if complete",
            "headers": headers_doc("Location", "Upload-Offset", "Upload-Expires", RECEIPT_HEADER),
        },
        **problems(400, 403, 409, 410, 412, 413, 415, 423, 460),
    },
    openapi_extra=raw_body(OFFSET_STREAM, required=False),
)
async def create(
    request: Request,
    station: CurrentStation,
    resumable: Resumable,
    session: SessionDep,
    upload_length: Annotated[HeaderCount | None, Header()] = None,
    upload_defer_length: Annotated[str | None, Header()] = None,
    upload_metadata: Annotated[str | None, Header()] = None,
    content_type: Annotated[str | None, Header()] = None,
    content_length: Annotated[HeaderCount | None, Header()] = None,
    upload_checksum: Annotated[str | None, Header()] = None,
) -> Response:
    """Create an upload (tus creation); with a body, also its first bytes
    (creation-with-upload). A clip already registered gets an upload that is complete at
    once, with its receipt. Its `filetype` is video/* or application/octet-stream (the
    default); Upload-Length at most Tus-Max-Size."""
    if upload_defer_length is not None or upload_length is None:
        raise BadRequest("Upload-Length is required (Upload-Defer-Length is not supported)")
    if upload_length > MAX_CLIP_SIZE:
        raise PayloadTooLarge(
            f"Upload-Length exceeds Tus-Max-Size ({MAX_CLIP_SIZE} bytes)",
            headers={"Tus-Max-Size": str(MAX_CLIP_SIZE)},
        )
    pairs = parse_upload_metadata(upload_metadata)
    media_type = declared_content_type(
        pairs.get("filetype") or None, field=f"{UPLOAD_METADATA}.filetype"
    )
    clip = clip_metadata(pairs)
    if upload_length != clip.size:
        raise UnprocessableEntity(
            f"Upload-Length is {upload_length}, the declared size {clip.size}",
            field="metadata.size",
        )
    upload = await resumable.create(station, clip, media_type)
    if content_type == OFFSET_STREAM and content_length != 0:
        upload = await resumable.append(
            station,
            upload.id,
            0,
            request.stream(),
            checksum=_checksum(upload_checksum),
            content_length=content_length,
        )
    headers = await _headers(upload, resumable, session)
    headers["Location"] = f"/v1/uploads/{upload.id}"
    return Response(status_code=status.HTTP_201_CREATED, headers=headers)


@router.head(
    "/{upload_id}",
    dependencies=Tus,
    responses={
        200: {
            "description": "the upload's state",
            "headers": headers_doc(
                "Upload-Offset", "Upload-Length", "Upload-Metadata", "Upload-Expires"
            ),
        },
        **problems(410, 412),
    },
)
async def offset(
    upload_id: uuid.UUID, station: CurrentStation, resumable: Resumable, session: SessionDep
) -> Response:
    """Where to resume: the last acknowledged offset (410 once the upload cannot go on)."""
    upload = await resumable.state(station, upload_id)
    headers = await _headers(upload, resumable, session)
    headers["Upload-Length"] = str(upload.length)
    headers["Upload-Metadata"] = (
        f"metadata {_encode(upload.metadata.model_dump_json())},"
        f"filetype {_encode(upload.content_type)}"
    )
    return Response(status_code=status.HTTP_200_OK, headers=headers)


@router.patch(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=Tus,
    responses={
        204: {
            "description": "appended; the PATCH that completes the clip carries its receipt",
            "headers": headers_doc("Upload-Offset", "Upload-Expires", RECEIPT_HEADER),
        },
        **problems(400, 403, 409, 410, 412, 413, 415, 423, 460),
    },
    openapi_extra=raw_body(OFFSET_STREAM),
)
async def append(
    upload_id: uuid.UUID,
    request: Request,
    station: CurrentStation,
    resumable: Resumable,
    session: SessionDep,
    upload_offset: Annotated[HeaderCount | None, Header()] = None,
    content_type: Annotated[str | None, Header()] = None,
    content_length: Annotated[HeaderCount | None, Header()] = None,
    upload_checksum: Annotated[str | None, Header()] = None,
) -> Response:
    """Append the body at Upload-Offset (409 if that is not where the upload is). The answer
    to the PATCH that completes the clip carries the receipt."""
    if content_type != OFFSET_STREAM:
        raise UnsupportedMediaType(f"a PATCH body must be {OFFSET_STREAM}")
    if upload_offset is None:
        raise BadRequest("Upload-Offset is required")
    upload = await resumable.append(
        station,
        upload_id,
        upload_offset,
        request.stream(),
        checksum=_checksum(upload_checksum),
        content_length=content_length,
    )
    return Response(
        status_code=status.HTTP_204_NO_CONTENT, headers=await _headers(upload, resumable, session)
    )


@router.delete(
    "/{upload_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=Tus,
    responses=problems(410, 412, 423),
)
async def terminate(upload_id: uuid.UUID, station: CurrentStation, resumable: Resumable) -> None:
    """Give up an upload (tus termination): what was sent is discarded."""
    await resumable.terminate(station, upload_id)


@router.get("/{upload_id}/receipt", response_model=Receipt, responses=problems(409, 410))
async def receipt(
    upload_id: uuid.UUID, station: CurrentStation, resumable: Resumable, session: SessionDep
) -> Receipt:
    """The signed receipt of a completed upload (409 while bytes are still missing)."""
    upload = await resumable.state(station, upload_id)
    signed = resumable.receipt(upload)
    if signed is not None:
        await keep_receipt(session, signed)
    else:
        raise Conflict(
            f"the upload is at {upload.offset} of {upload.length} bytes: no receipt yet",
            offset=upload.offset,
        )
    return signed


class TusResumableHeader:
    """Every answer under /v1/uploads says which tus version it speaks, errors included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(router.prefix):
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("Tus-Resumable", TUS_VERSION)
            await send(message)

        await self.app(scope, receive, send_with_version)
