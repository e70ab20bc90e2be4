"""Uploads through real ingest and vault processes, over real sockets: two uploads of the same
clip racing give one recording and one receipt; a mismatch found at the end of the stream
stores nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.vault.recordings.models import Recording
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org
from tests.fixtures.live import Live
from tests.fixtures.servers import Servers


@pytest.fixture
async def live_org(live: Live, servers: Servers) -> AsyncIterator[tuple[OrgKit, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=live.vault.url, timeout=60) as vault,
        httpx.AsyncClient(base_url=live.ingest.url, timeout=60) as ingest,
    ):
        insee = f"9{uuid.uuid4().int % 10**4:04d}"
        kit = await build_org(vault, ingest, servers, insee=insee)
        yield kit, ingest


async def _recordings(engine: AsyncEngine, organisation_id: uuid.UUID) -> int:
    async with engine.connect() as connection:
        table = Recording.__table__
        result = await connection.execute(
            select(func.count())
            .select_from(table)
            .where(table.c.organisation_id == organisation_id)
        )
        return int(result.scalar_one())


async def test_racing_uploads_of_one_clip(
    live_org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    kit, ingest = live_org
    data, metadata = make_clip(kit, size=4 * 1024 * 1024)
    responses = await asyncio.gather(
        *(
            ingest.post("/v1/recordings", content=data, headers=upload_headers(kit, metadata))
            for _ in range(2)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 201], [r.text for r in responses]
    assert responses[0].json() == responses[1].json()
    assert await _recordings(engine, kit.id) == 1


async def test_mismatch_over_the_network_stores_nothing(
    live_org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine
) -> None:
    kit, ingest = live_org
    data, metadata = make_clip(kit, size=3 * 1024 * 1024)
    wrong = metadata.model_copy(update={"sha256": "f" * 64})

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 512 * 1024):
            yield data[start : start + 512 * 1024]

    response = await ingest.post(
        "/v1/recordings", content=chunked(), headers=upload_headers(kit, wrong)
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "metadata.sha256"
    assert await _recordings(engine, kit.id) == 0
    # And the right clip goes through afterwards.
    ok = await ingest.post("/v1/recordings", content=data, headers=upload_headers(kit, metadata))
    assert ok.status_code == 201, ok.text
