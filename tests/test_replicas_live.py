"""Two processes of each service behind HAProxy, round robin without stickiness (issue 19,
tests/fixtures/replicas.py): tus uploads whose PATCHes land on both ingest replicas (and,
behind them, on both vaults), one ingest replica killed in the middle of a dock's upload while
the other carries on and the dock resumes to its receipt; afterwards the audit log verifies
and the report counts every clip once."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from tusclient.client import TusClient

from services.vault.recordings.models import Recording, UploadSession
from shared.receipts import receipt_is_valid
from temoin.dock import Dock, describe, simulate
from temoin.station import StationKeyFile
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import run_temoin
from tests.fixtures.replicas import ReplicaStack
from tests.fixtures.servers import Servers

pytestmark = pytest.mark.scale

MiB = 1 << 20


def _tus_upload(stack: ReplicaStack, kit: OrgKit, clip: Path) -> str:
    """One clip with tuspy, a PATCH per MiB: its upload's URL."""
    client = TusClient(
        f"{stack.url('ingest')}/v1/uploads",
        headers={"Authorization": f"Bearer {kit.tokens['station']}"},
    )
    metadata = describe(clip)
    with open(clip, "rb") as stream:
        uploader = client.uploader(
            file_stream=stream,
            chunk_size=MiB,
            metadata={"metadata": metadata.model_dump_json(), "filetype": "video/mp4"},
        )
        uploader.upload()
    assert uploader.url is not None
    return str(uploader.url)


def _dock_upload_through_a_kill(
    stack: ReplicaStack, kit: OrgKit, clip: Path, key_file: Path, halfway: threading.Event
) -> dict[str, object]:
    """The dock's upload, slowed to a MiB every 0.3 s so that a replica can die under it."""

    def progress(offset: int) -> None:
        if offset >= 2 * MiB:
            halfway.set()
        time.sleep(0.3)

    return Dock(stack.url("ingest"), StationKeyFile.load(key_file)).upload(clip, progress)


async def test_uploads_through_two_replicas_of_each_survive_a_killed_ingest(
    replica_stack: ReplicaStack, servers: Servers, engine: AsyncEngine, tmp_path: Path
) -> None:
    stack = replica_stack
    async with (
        httpx.AsyncClient(base_url=stack.url("vault"), timeout=60) as vault,
        httpx.AsyncClient(base_url=stack.url("ingest"), timeout=60) as ingest,
    ):
        kit = await build_org(vault, ingest, servers, insee=fresh_insee())
        receipt_key = (await ingest.get("/v1/receipts/public-key")).json()["public_key"]
        clips = simulate(tmp_path, camera_serial=kit.camera_serial, count=4, size=4 * MiB + 5)

        # Three clips with tuspy, a PATCH per MiB, one after the other: round robin then
        # hands an upload's consecutive PATCHes to alternate replicas.
        urls = [await asyncio.to_thread(_tus_upload, stack, kit, clip) for clip in clips[:3]]
        for url in urls:
            answer = await ingest.get(
                f"{url}/receipt",
                headers={
                    "Authorization": f"Bearer {kit.tokens['station']}",
                    "Tus-Resumable": "1.0.0",
                },
            )
            assert answer.status_code == 200, answer.text
            assert receipt_is_valid(answer.json(), receipt_key)

        # Each upload's PATCHes went to both ingest replicas, and on to both vaults.
        by_upload: dict[tuple[str, str], set[str]] = defaultdict(set)
        for served in stack.served():
            if served.method == "PATCH":
                assert served.status in (200, 204), served
                by_upload[(served.backend, served.path.rsplit("/", 1)[1])].add(served.server)
        uploads = {url.rsplit("/", 1)[1] for url in urls}
        assert set(by_upload) == {(b, u) for b in ("ingest", "vault") for u in uploads}
        for (backend, _), replicas in by_upload.items():
            assert replicas == {f"{backend}0", f"{backend}1"}, by_upload

        # A dock's upload, and the ingest replica carrying it killed half-way.
        assert kit.station_id is not None and kit.station_key is not None
        key_file = tmp_path / "station.json"
        StationKeyFile(kit.station_id, kit.id, kit.station_key).save(key_file)
        halfway = threading.Event()
        dock = asyncio.create_task(
            asyncio.to_thread(_dock_upload_through_a_kill, stack, kit, clips[3], key_file, halfway)
        )
        deadline = time.monotonic() + 20
        while not halfway.is_set():
            assert time.monotonic() < deadline and not dock.done(), "the dock did not start"
            await asyncio.sleep(0.02)
        carrying = [name for name, n in stack.in_flight("ingest").items() if n > 0]
        assert len(carrying) == 1, carrying
        killed = stack.replicas["ingest"][int(carrying[0].removeprefix("ingest"))]
        killed.stop(signal.SIGKILL)
        receipt = await asyncio.wait_for(dock, timeout=40)
        assert receipt_is_valid(receipt, receipt_key)
        assert receipt["sha256"] == describe(clips[3]).sha256
        survivor = ({"ingest0", "ingest1"} - set(carrying)).pop()
        assert stack.servers_up() == {"vault0": True, "vault1": True, "ingest0": True,
                                      "ingest1": True, "reporting0": True,
                                      "reporting1": True} | {carrying[0]: False}  # fmt: skip
        last_patch = [s for s in stack.served() if s.backend == "ingest" and s.method == "PATCH"]
        assert last_patch[-1].server == survivor and last_patch[-1].status == 204

    # Every clip registered once, each upload resumed rather than started again.
    async with engine.connect() as connection:
        recorded = (
            await connection.execute(
                select(Recording.sha256, Recording.size).where(Recording.organisation_id == kit.id)
            )
        ).all()
        sessions = (
            await connection.scalars(
                select(UploadSession.status).where(UploadSession.station_id == kit.station_id)
            )
        ).all()
    assert sorted(recorded) == sorted((describe(c).sha256, describe(c).size) for c in clips)
    assert sessions == ["complete"] * len(clips)

    # The log verifies, and every reporting replica counts each clip once.
    verified = run_temoin("audit", "verify", env=servers.env())
    assert verified.returncode == 0, verified.stdout + verified.stderr
    year = {"year": datetime.now(UTC).year}
    for replica in stack.replicas["reporting"]:
        async with httpx.AsyncClient(base_url=replica.url, timeout=30) as reporting:
            deadline = time.monotonic() + 20
            while True:
                report = (
                    await reporting.get(
                        f"{kit.path}/report", headers=kit.headers("maire"), params=year
                    )
                ).json()
                if report["recordings"] >= len(clips) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
        assert (report["recordings"], report["cameras_used"], report["erasures"]) == (
            len(clips),
            1,
            0,
        ), report
