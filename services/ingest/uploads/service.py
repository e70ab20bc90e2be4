from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from nacl.signing import SigningKey

from services.ingest.stations.repository import StationKey
from shared.clips import METADATA_HEADER, ClipMetadata, StoredClip
from shared.errors import (
    PayloadTooLarge,
    ServiceUnavailable,
    TemoinError,
    UnprocessableEntity,
)
from shared.receipts import Receipt, sign_receipt


class _Relayed(TemoinError):
    """A refusal from the vault, passed on to the station as the vault worded it."""

    def __init__(self, response: httpx.Response) -> None:
        body: dict[str, Any] = response.json()
        extensions = {
            k: v
            for k, v in body.items()
            if k not in ("type", "title", "status", "detail", "instance")
        }
        super().__init__(str(body.get("detail", "refused by the vault")), **extensions)
        self.status_code = response.status_code
        self.title = str(body.get("title", "Refused"))
        self.slug = str(body.get("type", "refused")).rsplit("/", 1)[-1]


class Mismatch(Exception):
    def __init__(self, error: TemoinError) -> None:
        super().__init__(error.detail)
        self.error = error


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
            raise ServiceUnavailable(
                "the vault cannot be reached: keep the clip and retry later"
            ) from exc
        if response.status_code >= 500:
            raise ServiceUnavailable("the vault failed: keep the clip and retry later")
        if response.status_code >= 400:
            raise _Relayed(response)
        return response

    async def upload(
        self,
        station: StationKey,
        metadata: ClipMetadata,
        body: AsyncIterator[bytes],
        content_type: str,
    ) -> tuple[Receipt, bool]:
        """Returns the receipt, and whether the clip was new."""
        self.check_times(metadata)
        checked = await self.call_vault(
            "POST",
            "/internal/v1/recordings/check",
            json={
                "station_id": str(station.station_id),
                "metadata": metadata.model_dump(mode="json"),
            },
        )
        existing = checked.json()["existing"]
        if existing is not None:
            return sign_receipt(StoredClip.model_validate(existing), self.receipt_key), False

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
                "POST",
                "/internal/v1/recordings",
                content=counted(),
                headers={
                    "Temoin-Station": str(station.station_id),
                    METADATA_HEADER: metadata.encode(),
                    "Content-Type": content_type,
                    # The length is known: no chunked encoding for the vault to parse.
                    "Content-Length": str(metadata.size),
                },
            )
        except Mismatch as mismatch:
            raise mismatch.error from None
        stored = StoredClip.model_validate(response.json())
        if stored.sha256 != metadata.sha256 or stored.size != metadata.size:
            raise ServiceUnavailable("the vault registered something else: no receipt")
        return sign_receipt(stored, self.receipt_key), stored.created
