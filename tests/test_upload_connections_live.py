"""Uploads hold no database connection while their bytes stream (issue 19; docs/architecture.md,
"Uploads hold no connection while bytes stream"): real ingest and vault processes with two
connections each and a one-second wait for one stream more uploads at once than that, slowly,
and every one ends in its receipt; two PATCHes of one upload at once, one writes and the
other gets 423; a claim left by a vault killed mid-PATCH runs out, and the upload goes on.

With a connection held for each PATCH (as before), the third concurrent upload waited for one
and got a 503."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.fixtures.clips import make_clip
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import LiveService, vault_and_ingest
from tests.fixtures.servers import Servers
from tests.test_tus import creation_headers, patch_headers, receipt_of, tus_headers

pytestmark = pytest.mark.scale

KiB = 1 << 10
POOL = 2  # connections per process: pool and overflow together
UPLOADS = 3 * POOL  # streaming at once, more than any one process's connections
CLAIM_S = 2  # the vault's claim lease: a dead PATCH's claim runs out that soon
STREAM_S = 2.5  # how long each body takes to arrive: longer than a wait for a connection


@dataclass
class Pair:
    vault: LiveService
    client: httpx.AsyncClient  # to ingest
    kit: OrgKit


@pytest.fixture(scope="module")
def processes(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveService, LiveService]]:
    env = {
        **servers.env(),
        "DATABASE_POOL_SIZE": str(POOL),
        "DATABASE_MAX_OVERFLOW": "0",
        "DATABASE_POOL_TIMEOUT_S": "1",
        "VAULT_UPLOAD_CLAIM_S": str(CLAIM_S),
    }
    vault, ingest = vault_and_ingest(env, tmp_path_factory.mktemp("connections"))
    try:
        vault.launch()
        ingest.launch()
        vault.wait_ready()
        ingest.wait_ready()
        yield vault, ingest
    finally:
        ingest.stop()
        vault.stop()


@pytest.fixture
async def pair(processes: tuple[LiveService, LiveService], servers: Servers) -> AsyncIterator[Pair]:
    vault, ingest = processes
    async with (
        httpx.AsyncClient(base_url=vault.url, timeout=60) as vault_client,
        httpx.AsyncClient(base_url=ingest.url, timeout=60) as client,
    ):
        kit = await build_org(vault_client, client, servers, insee=fresh_insee())
        yield Pair(vault, client, kit)


async def _slowly(data: bytes, seconds: float, pieces: int = 10) -> AsyncIterator[bytes]:
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        await asyncio.sleep(seconds / pieces)
        yield data[start : start + size]


async def _create(pair: Pair, size: int) -> tuple[str, bytes]:
    data, metadata = make_clip(pair.kit, size=size)
    created = await pair.client.post("/v1/uploads", headers=creation_headers(pair.kit, metadata))
    assert created.status_code == 201, created.text
    return created.headers["Location"], data


async def test_more_uploads_stream_at_once_than_there_are_connections(pair: Pair) -> None:
    uploads = [await _create(pair, 256 * KiB + n) for n in range(UPLOADS)]
    started = time.monotonic()
    answers = await asyncio.gather(
        *(
            pair.client.patch(
                location, content=_slowly(data, STREAM_S), headers=patch_headers(pair.kit, 0)
            )
            for location, data in uploads
        )
    )
    took = time.monotonic() - started
    assert [a.status_code for a in answers] == [204] * UPLOADS, [a.text for a in answers]
    assert all(receipt_of(a)["sha256"] for a in answers)
    # They streamed side by side, not a pool's worth at a time.
    assert took < 2 * STREAM_S, f"{UPLOADS} uploads took {took:.1f} s"


async def test_a_second_patch_of_the_same_upload_is_refused_while_the_first_streams(
    pair: Pair,
) -> None:
    location, data = await _create(pair, 128 * KiB)
    first = asyncio.create_task(
        pair.client.patch(
            location, content=_slowly(data, STREAM_S), headers=patch_headers(pair.kit, 0)
        )
    )
    await asyncio.sleep(STREAM_S / 2)  # the first is claimed and streaming
    second = await pair.client.patch(location, content=data, headers=patch_headers(pair.kit, 0))
    assert second.status_code == 423, second.text
    assert second.headers["content-type"] == "application/problem+json"
    assert "another request is writing" in second.json()["detail"]
    done = await first
    assert done.status_code == 204, done.text
    assert int(done.headers["Upload-Offset"]) == len(data) and receipt_of(done)


async def test_the_claim_of_a_vault_killed_mid_patch_runs_out(pair: Pair) -> None:
    location, data = await _create(pair, 192 * KiB)
    half = len(data) // 2
    sent = await pair.client.patch(
        location, content=data[:half], headers=patch_headers(pair.kit, 0)
    )
    assert sent.status_code == 204, sent.text

    async def endless() -> AsyncIterator[bytes]:
        yield data[half : half + 16 * KiB]
        await asyncio.sleep(60)  # the vault dies before this ends
        yield b""

    interrupted = asyncio.create_task(
        pair.client.patch(location, content=endless(), headers=patch_headers(pair.kit, half))
    )
    await asyncio.sleep(0.5)  # claimed, some bytes in, none acknowledged
    pair.vault.stop(signal.SIGKILL)
    interrupted_at = time.monotonic()
    interrupted.cancel()  # the dock gives up on it (its answer would come after its body)
    await asyncio.gather(interrupted, return_exceptions=True)
    await asyncio.to_thread(pair.vault.start)

    head = await pair.client.head(location, headers=tus_headers(pair.kit))
    assert head.status_code == 200 and int(head.headers["Upload-Offset"]) == half
    # Until the dead request's claim runs out, the upload is locked; then it goes on.
    while True:
        resumed = await pair.client.patch(
            location, content=data[half:], headers=patch_headers(pair.kit, half)
        )
        if resumed.status_code != 423:
            break
        assert time.monotonic() - interrupted_at < CLAIM_S + 10, "the claim never ran out"
        await asyncio.sleep(0.2)
    assert resumed.status_code == 204, resumed.text
    assert int(resumed.headers["Upload-Offset"]) == len(data) and receipt_of(resumed)
