"""A multi-node object store under the real services (issue 19, point 4): SeaweedFS as a
cluster (one master, three volume servers keeping every volume on two of them, a filer, the S3
gateway: temoin/embedded.py, EmbeddedS3Cluster), a vault and an ingest process on it, docks
uploading clips, and one volume server killed (SIGKILL) while a clip is on its way. Nothing a
dock was given a receipt for may be lost: every clip still opens through the vault and matches
its SHA-256, during the outage and after it, and every dock gets to the end of its clips.

The services run on a database of their own (cloned from the session's template on the
session's PostgreSQL): their background jobs (fixity scrub, erasure, hold renewal) go over
every recording in their database, and would otherwise look for other tests' recordings in
this cluster's bucket and report them damaged or missing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from services.vault.recordings.models import Recording
from shared.db import create_engine
from shared.storage import ObjectStore, StorageConfig
from temoin.dock import Dock, DockError
from temoin.embedded import ClusterPorts, EmbeddedS3Cluster
from temoin.station import StationKeyFile
from tests.fixtures.clips import make_clip
from tests.fixtures.databases import clone_template, database_url, drop_database
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import LiveService, vault_and_ingest
from tests.fixtures.servers import ACCESS_KEY, SECRET_KEY, Servers

pytestmark = pytest.mark.scale

MiB = 1 << 20
BUCKET = "temoin-cluster-recordings"
# Every volume on two volume servers (SeaweedFS's "xyz": one more copy on another server of
# the same rack); COPIES must follow it.
REPLICATION, COPIES = "001", 2
DOCKS = 3
CLIPS_PER_DOCK = 4
# Over one multipart part (5 MiB): the first part goes to the store while the clip is still
# coming in, so the kill can fall between two parts of one object.
CLIP_SIZE = 6 * MiB
KILL_AT = 5 * MiB + MiB // 2  # into dock 0's second clip
DEADLINE_S = 45.0


@dataclass
class ClusterStack:
    cluster: EmbeddedS3Cluster
    vault: httpx.AsyncClient
    ingest: httpx.AsyncClient
    database_url: str
    ingest_log: Path
    timings: dict[str, float] = field(default_factory=dict)

    def failed_answers(self) -> int:
        """How many of the docks' requests ingest answered with a 5xx (each one a retry;
        its /readyz answered 503 while it started, which is not counted)."""
        logged = [json.loads(line) for line in self.ingest_log.read_text().splitlines()]
        return sum(
            1
            for line in logged
            if line.get("path", "").startswith("/v1/") and line.get("status", 0) >= 500
        )


@pytest.fixture
async def stack(
    servers: Servers, template_database: str, tmp_path: Path
) -> AsyncIterator[ClusterStack]:
    timings: dict[str, float] = {}
    started = time.monotonic()
    cluster = EmbeddedS3Cluster(
        data_dir=tmp_path / "cluster",
        ports=ClusterPorts.free(volumes=3),
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        replication=REPLICATION,
    )
    name = await clone_template(servers, template_database, prefix="cluster")
    url = database_url(servers, name)
    services: list[LiveService] = []
    try:
        await asyncio.to_thread(cluster.start)
        timings["cluster started"] = time.monotonic() - started
        storage = StorageConfig(cluster.endpoint, ACCESS_KEY, SECRET_KEY, BUCKET)
        await asyncio.to_thread(ObjectStore(storage).ensure_bucket)
        env = {
            **servers.env(),
            "DATABASE_URL": url,
            "S3_ENDPOINT": cluster.endpoint,
            "S3_BUCKET": BUCKET,
        }
        vault, ingest = vault_and_ingest(env, tmp_path)
        services += [vault, ingest]
        await asyncio.gather(*(asyncio.to_thread(service.start) for service in services))
        timings["services started"] = time.monotonic() - started
        async with (
            httpx.AsyncClient(base_url=vault.url, timeout=60) as vault_client,
            httpx.AsyncClient(base_url=ingest.url, timeout=60) as ingest_client,
        ):
            yield ClusterStack(cluster, vault_client, ingest_client, url, ingest.log, timings)
    finally:
        for service in services:
            service.stop()
        # Its filer ignores SIGTERM (measured): no use waiting long for a store about to go.
        await asyncio.to_thread(cluster.stop, 1.0)
        await drop_database(servers, name)


@dataclass
class Docks:
    """Docking stations in threads (temoin.dock's real client: tus, resume, retries), each
    with its clips on disk. They upload their first clip, wait for ``go``, then the rest;
    dock 0 kills ``victim`` once its second clip is KILL_AT bytes in."""

    kit: OrgKit
    ingest_url: str
    root: Path
    cluster: EmbeddedS3Cluster
    go: threading.Event = field(default_factory=threading.Event)
    victim: str = ""
    killed: threading.Event = field(default_factory=threading.Event)
    receipts: dict[Path, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    clips: list[list[Path]] = field(default_factory=list)

    @property
    def key_file(self) -> Path:
        return self.root / "station.json"

    def make(self) -> None:
        assert self.kit.station_id is not None and self.kit.station_key is not None
        StationKeyFile(self.kit.station_id, self.kit.id, self.kit.station_key).save(self.key_file)
        for dock in range(DOCKS):
            directory = self.root / f"dock{dock}"
            directory.mkdir()
            made = []
            for n in range(CLIPS_PER_DOCK):
                data, metadata = make_clip(self.kit, size=CLIP_SIZE + 1000 * dock + n)
                # Clips of one camera, one after the other (no two claim the same minutes).
                shift = timedelta(minutes=10 * (dock * CLIPS_PER_DOCK + n))
                sidecar = metadata.model_dump(mode="json") | {
                    "started_at": (metadata.started_at - shift).isoformat(),
                    "ended_at": (metadata.ended_at - shift).isoformat(),
                }
                clip = directory / f"clip{n}.mp4"
                clip.write_bytes(data)
                clip.with_name(clip.name + ".json").write_text(json.dumps(sidecar))
                made.append(clip)
            self.clips.append(made)

    def run(self, dock: int, deadline: float) -> None:
        client = Dock(self.ingest_url, StationKeyFile.load(self.key_file))
        for n, clip in enumerate(self.clips[dock]):
            if n == 1:
                assert self.go.wait(DEADLINE_S), "never told to go on"

            def progress(offset: int, kill_here: bool = dock == 0 and n == 1) -> None:
                if kill_here and offset >= KILL_AT and not self.killed.is_set():
                    self.cluster.kill(self.victim)
                    self.killed.set()

            while True:  # as a dock's next run would: try the clip again until it is in
                try:
                    self.receipts[clip] = client.upload(clip, progress)
                    break
                except DockError as exc:
                    self.failures.append(str(exc))
                    assert time.monotonic() < deadline, f"dock {dock} never finished: {exc}"

    def acknowledged(self) -> dict[Path, dict[str, Any]]:
        return dict(self.receipts)


async def _opens(stack: ClusterStack, kit: OrgKit, clip: Path, receipt: dict[str, Any]) -> float:
    """Consult the clip's recording through the vault and compare the whole stream with the
    clip's SHA-256; how long the read took."""
    started = time.monotonic()
    consulted = await stack.vault.post(
        f"{kit.path}/recordings/{receipt['recording_id']}/consultations",
        headers=kit.headers("habilite"),
        json={"motif": "contrôle après la perte d'un serveur de volumes"},
    )
    assert consulted.status_code == 201, consulted.text
    media = await stack.vault.get(consulted.json()["url"])
    assert media.status_code == 200, media.text
    expected = hashlib.sha256(clip.read_bytes()).hexdigest()
    assert hashlib.sha256(media.content).hexdigest() == expected == receipt["sha256"], clip
    return time.monotonic() - started


async def _objects(stack: ClusterStack, kit: OrgKit) -> dict[str, tuple[str, str | None]]:
    """Each recording's sealed object (key, version) by recording id."""
    engine = create_engine(stack.database_url, application_name="temoin-tests")
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                select(Recording.id, Recording.object_key, Recording.object_version).where(
                    Recording.organisation_id == kit.id
                )
            )
            return {str(row.id): (row.object_key, row.object_version) for row in rows}
    finally:
        await engine.dispose()


def _volumes_of(cluster: EmbeddedS3Cluster, objects: list[tuple[str, str | None]]) -> set[int]:
    """The volumes holding the chunks of these objects, from the filer's metadata (one shell
    for all of them). The path is SeaweedFS's own layout of a versioned bucket."""
    commands = "".join(
        f"fs.meta.cat /buckets/{BUCKET}/{key}.versions/v_{version}\n" for key, version in objects
    )
    found = re.findall(r'"fileId":\s*"(\d+),', cluster.admin_shell(commands))
    assert found, "no chunk found for the objects"
    return {int(volume) for volume in found}


async def _bucket_volumes(cluster: EmbeddedS3Cluster) -> dict[int, set[str]]:
    """The master's view of the bucket's volumes: each with the servers holding a copy."""
    placement = await asyncio.to_thread(cluster.placement_by_server)
    servers_of: dict[int, set[str]] = {}
    for address, volumes in placement.items():
        for volume, copy in volumes.items():
            if copy.collection == BUCKET:
                assert copy.replica_placement == REPLICATION, copy
                servers_of.setdefault(volume, set()).add(address)
    return servers_of


async def _lengths_agree(
    cluster: EmbeddedS3Cluster, by_address: dict[str, str], servers_of: dict[int, set[str]]
) -> dict[int, int]:
    """Each volume's length, once its file is as long on every server that holds it (a
    write the vault's own store check may be making settles within the wait)."""
    deadline = time.monotonic() + 5
    while True:
        found = {
            volume: {
                (cluster.data_dir / by_address[address] / f"{BUCKET}_{volume}.dat").stat().st_size
                for address in held
            }
            for volume, held in servers_of.items()
        }
        if all(len(sizes) == 1 for sizes in found.values()):
            return {volume: sizes.pop() for volume, sizes in found.items()}
        assert time.monotonic() < deadline, f"copies differ: {found}"
        await asyncio.sleep(0.1)


async def test_a_volume_server_killed_mid_upload_loses_no_clip(
    stack: ClusterStack, servers: Servers, tmp_path: Path
) -> None:
    cluster = stack.cluster
    kit = await build_org(stack.vault, stack.ingest, servers, insee=fresh_insee())
    docks = Docks(kit, str(stack.ingest.base_url), tmp_path / "docks", cluster)
    docks.root.mkdir()
    docks.make()
    started = time.monotonic()
    deadline = started + DEADLINE_S
    running = [asyncio.to_thread(docks.run, dock, deadline) for dock in range(DOCKS)]
    uploads = asyncio.gather(*running)

    # Each dock's first clip in: where are its bytes?
    while len(docks.acknowledged()) < DOCKS:
        assert time.monotonic() < deadline and not uploads.done(), docks.failures
        await asyncio.sleep(0.05)
    stack.timings["first clips in"] = time.monotonic() - started
    first = docks.acknowledged()
    objects = await _objects(stack, kit)
    assert len(objects) == DOCKS
    servers_of = await _bucket_volumes(cluster)
    assert servers_of
    # Replication is on: every volume of the bucket is on two volume servers, not one.
    assert all(len(held) == COPIES for held in servers_of.values()), servers_of
    holding = await asyncio.to_thread(_volumes_of, cluster, list(objects.values()))
    assert holding <= set(servers_of), (holding, servers_of)
    by_address = {cluster.volume_address(name): name for name in cluster.volume_names}
    # And on disk: each volume's file the same length on both servers (no dock is sending),
    # and holding more than its header where the first clips are.
    lengths = await _lengths_agree(cluster, by_address, servers_of)
    assert all(lengths[volume] > 8 for volume in holding), lengths
    # Kill the volume server that holds the most of what has been acknowledged so far.
    held_by = {
        address: len([v for v in holding if address in servers_of[v]]) for address in by_address
    }
    victim_address = max(held_by, key=held_by.__getitem__)
    assert held_by[victim_address] > 0, (holding, servers_of)
    docks.victim = by_address[victim_address]
    docks.go.set()

    while not docks.killed.is_set():
        assert time.monotonic() < deadline and not uploads.done(), docks.failures
        await asyncio.sleep(0.02)
    killed_at = time.monotonic()
    stack.timings["volume server killed"] = killed_at - started
    # During the outage, uploads going on: what was acknowledged before opens, whole.
    during = [await _opens(stack, kit, clip, receipt) for clip, receipt in first.items()]
    stack.timings["reads during the outage, slowest"] = max(during)

    await asyncio.wait_for(uploads, timeout=max(deadline - time.monotonic(), 1))
    stack.timings["all clips in"] = time.monotonic() - started
    receipts = docks.acknowledged()
    assert len(receipts) == DOCKS * CLIPS_PER_DOCK
    assert len({r["recording_id"] for r in receipts.values()}) == len(receipts)
    # The master no longer counts the dead server; everything reads from the copies left.
    left = await asyncio.to_thread(cluster.placement_by_server)
    assert victim_address not in left, left
    after = [await _opens(stack, kit, clip, receipt) for clip, receipt in receipts.items()]
    stack.timings["reads after, slowest"] = max(after)
    objects = await _objects(stack, kit)
    assert sorted(objects) == sorted(r["recording_id"] for r in receipts.values())

    # The server back on its disk: its copies rejoin, and every volume has two copies again.
    # (Not always byte for byte: a write cut by the kill can leave its chunk on one copy only,
    # a chunk the gateway then wrote again elsewhere and no object refers to: docs/storage.md.)
    back = time.monotonic()
    await asyncio.to_thread(cluster.restart, docks.victim)
    servers_of = await _bucket_volumes(cluster)
    while not all(len(held) == COPIES for held in servers_of.values()):
        assert time.monotonic() - back < 20, f"not two copies again: {servers_of}"
        await asyncio.sleep(0.2)
        servers_of = await _bucket_volumes(cluster)
    assert victim_address in set().union(*servers_of.values())
    stack.timings["volume server back, two copies again"] = time.monotonic() - back
    print(
        f"\n{DOCKS} docks x {CLIPS_PER_DOCK} clips of {CLIP_SIZE // MiB} MiB; killed "
        f"{docks.victim} ({victim_address}, holding {held_by[victim_address]} of "
        f"{len(holding)} volumes with the first clips); 5xx answers to the docks: "
        f"{stack.failed_answers()}, uploads given up and started again: {len(docks.failures)}; "
        + "; ".join(f"{what} {seconds:.2f} s" for what, seconds in stack.timings.items())
    )
    for failure in docks.failures:
        print("  dock:", failure)
