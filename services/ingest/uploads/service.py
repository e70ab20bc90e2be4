"""The vault as ingest sees it: every call goes through ``call_vault``, which sorts the
vault's answers for the dock. A refusal (4xx) reaches the dock as the same 4xx, final for
that request; only a passing failure (the vault unreachable, timing out, or itself
unavailable) becomes a 503 with Retry-After, "keep the clip and retry"; a vault that fails
on the request itself is a 502, which retrying will not mend. Either way the dock keeps the
clip: it frees it only for a receipt."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from nacl.signing import SigningKey

from services.ingest.stations.repository import StationKey
from shared.clips import ClipMetadata, UploadSessionState
from shared.errors import (
    RETRY_AFTER_S,
    BadGateway,
    Gone,
    PayloadTooLarge,
    ServiceUnavailable,
    TemoinError,
    UnprocessableEntity,
)
from shared.receipts import Receipt, sign_receipt

_logger = logging.getLogger("temoin.ingest.vault")
_PROBLEM_FIELDS = ("type", "title", "status", "detail", "instance")


class _Relayed(TemoinError):
    """A refusal from the vault, passed on to the station as the vault worded it."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"detail": response.text[:200] or response.reason_phrase}
        extensions = {k: v for k, v in body.items() if k not in _PROBLEM_FIELDS}
        super().__init__(str(body.get("detail", "refused by the vault")), **extensions)
        self.status_code = response.status_code
        self.title = str(body.get("title", response.reason_phrase or "Refused"))
        self.slug = str(body.get("type", "refused")).rsplit("/", 1)[-1]
        if "Retry-After" in response.headers:
            self.headers["Retry-After"] = response.headers["Retry-After"]


class Mismatch(Exception):
    def __init__(self, error: TemoinError) -> None:
        super().__init__(error.detail)
        self.error = error


def _retry_later(detail: str, response: httpx.Response | None = None) -> ServiceUnavailable:
    after = response.headers.get("Retry-After") if response is not None else None
    return ServiceUnavailable(detail, headers={"Retry-After": after or str(RETRY_AFTER_S)})


class UploadService:
    def __init__(
        self,
        vault: httpx.AsyncClient,
        service_token: str,
        receipt_key: SigningKey,
        clock_tolerance: timedelta,
    ) -> None:
        self.vault = vault
        self.headers = {"Authorization": f"Bearer {service_token}"}
        self.receipt_key = receipt_key
        self.clock_tolerance = clock_tolerance

    def check_times(self, metadata: ClipMetadata, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        if metadata.ended_at > now + self.clock_tolerance:
            raise UnprocessableEntity(
                "the clip ends in the future: check the camera's clock",
                field="metadata.ended_at",
            )

    async def call_vault(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        try:
            response = await self.vault.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise _retry_later(
                "the vault cannot be reached: keep the clip and retry later"
            ) from exc
        if response.status_code in (502, 503, 504):
            raise _retry_later("the vault is unavailable: keep the clip and retry later", response)
        if response.status_code >= 500:
            raise BadGateway("the vault failed on this request (logged there): keep the clip")
        if response.status_code == 401:
            # Ingest's own credential refused: a configuration matter, not the dock's.
            _logger.error("the vault refused ingest's service token (SERVICE_TOKEN)")
            raise _retry_later("the vault cannot be used now: keep the clip and retry later")
        if response.status_code >= 400:
            raise _Relayed(response)
        return response

    async def create(
        self, station: StationKey, metadata: ClipMetadata, content_type: str, *, single: bool
    ) -> UploadSessionState:
        """An upload session in the vault, after the directory's checks (422 naming the
        field); complete at once for a clip already registered."""
        self.check_times(metadata)
        response = await self.call_vault(
            "POST",
            "/internal/v1/uploads",
            json={
                "station_id": str(station.station_id),
                "metadata": metadata.model_dump(mode="json"),
                "content_type": content_type,
                "single": single,
            },
        )
        return UploadSessionState.model_validate(response.json())

    async def upload(
        self,
        station: StationKey,
        metadata: ClipMetadata,
        body: AsyncIterator[bytes],
        content_type: str,
    ) -> tuple[Receipt, bool]:
        """The single POST: one session fed by one request. Returns the receipt, and whether
        the clip was new."""
        upload = await self.create(station, metadata, content_type, single=True)
        if upload.stored is not None:
            return self.receipt(upload), False

        async def counted() -> AsyncIterator[bytes]:
            # The vault hashes the clip as it seals it and refuses one whose SHA-256 differs
            # from the declared one (422, metadata.sha256), as on the tus path. Here the size
            # is held to its declaration: bytes beyond it are refused at once (413), and a
            # body that ends short is cut off before the vault sees an end to it.
            received = 0
            async for piece in body:
                received += len(piece)
                if received > metadata.size:
                    raise Mismatch(
                        PayloadTooLarge(f"more than the declared {metadata.size} bytes were sent")
                    )
                yield piece
            if received != metadata.size:
                raise Mismatch(
                    UnprocessableEntity(
                        f"the body ended after {received} of {metadata.size} bytes",
                        field="metadata.size",
                    )
                )

        try:
            response = await self.call_vault(
                "PATCH",
                f"/internal/v1/uploads/{upload.id}",
                params={"offset": 0, "keep_partial": "false", "whole": "true"},
                content=counted(),
                headers={
                    "Temoin-Station": str(station.station_id),
                    # The length is known: no chunked encoding for the vault to parse.
                    "Content-Length": str(metadata.size),
                },
            )
        except Mismatch as mismatch:
            raise mismatch.error from None
        done = usable(UploadSessionState.model_validate(response.json()), after_patch=True)
        receipt = self.receipt(done)
        assert done.stored is not None  # self.receipt refuses a state without it
        return receipt, done.stored.created

    def receipt(self, upload: UploadSessionState) -> Receipt:
        """The signed receipt of a completed upload, for the recording the vault registered
        with the declared size and SHA-256, never anything else."""
        stored = upload.stored
        if stored is None:
            raise BadGateway("the vault answered without the registered recording: no receipt")
        if stored.sha256 != upload.metadata.sha256 or stored.size != upload.length:
            raise BadGateway("the vault registered something else: no receipt")
        return sign_receipt(stored, self.receipt_key)


def usable(upload: UploadSessionState, *, after_patch: bool = False) -> UploadSessionState:
    """The session, or the problem that ends it for the dock."""
    if upload.status == "rejected":
        if after_patch:
            raise UnprocessableEntity(
                "the clip's SHA-256 differs from the declared one: nothing was stored; "
                "upload it again",
                field="metadata.sha256",
            )
        raise Gone("this upload was rejected (SHA-256 mismatch): upload the clip again")
    if upload.status in ("terminated", "expired", "lost"):
        raise Gone(f"this upload is {upload.status}: upload the clip again")
    if upload.status == "open" and upload.expires_at <= datetime.now(UTC):
        raise Gone("this upload expired before it was finished: upload the clip again")
    return upload
