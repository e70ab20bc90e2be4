"""PostgreSQL that fails over (issue 19, docs/failover.md): a primary and its synchronous
standby of the test's own, real vault and ingest processes configured with both servers
(``target_session_attrs=read-write``), several docks (`temoin dock upload`, each a process)
uploading clips at once. The primary's machine is lost mid-run (every PostgreSQL process
killed); while no server accepts writes, the services answer 503 problem+json with
Retry-After; then the standby is promoted. Every dock finishes with a receipt for each clip,
every receipt names a recording the new primary holds (with its object in the store), no clip
is registered twice, and `temoin audit verify --registry` passes on the new primary. It prints
the time from the loss to the first receipt after the promotion."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from services.vault.recordings.service import RECORDINGS_PREFIX
from shared.db import create_engine, database_unavailable
from shared.storage import ObjectStore, StorageConfig
from temoin import migrate
from temoin.backup import psql
from temoin.dock import receipt_of, simulate
from temoin.station import StationKeyFile
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import run_temoin, vault_and_ingest
from tests.fixtures.replication import ReplicatedPostgres, kill_server
from tests.fixtures.servers import Servers

pytestmark = pytest.mark.scale

DOCKS = 4
CLIPS = 6  # per dock
CLIP_SIZE = 200 * 1024 + 3
KILL_AFTER = 5  # receipts: some docks done with a few clips, every dock still uploading
DOCKS_WITHIN_S = 90  # a dock gives up after 5 attempts (about 35 s of waiting)


@dataclass
class Dock:
    kit: OrgKit
    clips: list[Path]
    process: subprocess.Popen[str] | None = None

    def receipts(self) -> list[Path]:
        return [receipt_of(clip) for clip in self.clips if receipt_of(clip).exists()]


def _dock(kit: OrgKit, directory: Path) -> Dock:
    assert kit.station_id is not None and kit.station_key is not None
    directory.mkdir()
    StationKeyFile(kit.station_id, kit.id, kit.station_key).save(directory / "station.json")
    clips = simulate(
        directory / "clips", camera_serial=kit.camera_serial, count=CLIPS, size=CLIP_SIZE
    )
    return Dock(kit, clips)


def _received(docks: list[Dock]) -> int:
    return sum(len(dock.receipts()) for dock in docks)


async def test_uploads_survive_the_primary_lost_and_the_standby_promoted(
    servers: Servers, tmp_path: Path
) -> None:
    # Its own bucket: the session's other objects are orphans to this database.
    storage = StorageConfig(
        servers.storage.endpoint,
        servers.storage.access_key,
        servers.storage.secret_key,
        f"temoin-failover-{uuid.uuid4().hex[:8]}",
    )
    store = ObjectStore(storage)
    store.ensure_bucket()
    pair = await asyncio.to_thread(ReplicatedPostgres.start, tmp_path / "postgres")
    env = {**servers.env(), "S3_BUCKET": storage.bucket, "DATABASE_URL": pair.url}
    # The upload pass (roll-forward of a completion the lost primary never committed) every s.
    vault, ingest = vault_and_ingest({**env, "VAULT_UPLOAD_SWEEP_INTERVAL_S": "1"}, tmp_path)
    docks: list[Dock] = []
    try:
        await asyncio.to_thread(migrate.upgrade, pair.url)
        await _target_session_attrs_choose_the_primary(pair)
        await asyncio.to_thread(vault.start)
        await asyncio.to_thread(ingest.start)
        async with (
            httpx.AsyncClient(base_url=vault.url, timeout=60) as vault_client,
            httpx.AsyncClient(base_url=ingest.url, timeout=60) as ingest_client,
        ):
            kits = await asyncio.gather(
                *(
                    build_org(vault_client, ingest_client, servers, insee=fresh_insee())
                    for _ in range(DOCKS)
                )
            )
            docks = [_dock(kit, tmp_path / f"dock-{n}") for n, kit in enumerate(kits)]
            dock_env = {**os.environ, "TEMOIN_INGEST_URL": ingest.url, "COLUMNS": "200"}
            for dock in docks:
                dock.process = subprocess.Popen(
                    [sys.executable, "-m", "temoin.cli", "dock", "upload", *map(str, dock.clips)]
                    + ["--key-file", str(dock.clips[0].parent.parent / "station.json")],
                    env=dock_env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            deadline = time.monotonic() + 60
            while _received(docks) < KILL_AFTER:
                assert time.monotonic() < deadline, "the docks uploaded nothing within 60 s"
                await asyncio.sleep(0.05)

            # The standby falls behind: commits made on the primary from now on wait for it
            # (synchronous replication), and the primary is lost with some of them done there,
            # unknown to the standby, their clips unacknowledged.
            pair.hold_replication(True)
            deadline = time.monotonic() + 30
            while not (waiting := pair.waiting_commits()):
                assert time.monotonic() < deadline, "no commit waited for the standby"
                await asyncio.sleep(0.05)
            lost_at = time.time()
            kill_server(pair.primary)
            pair.hold_replication(False)
            received_at_loss = _received(docks)
            assert received_at_loss < DOCKS * CLIPS, "every clip went up before the loss"

            # No server accepts writes: a clean "retry later", never a receipt.
            data, metadata = make_clip(kits[0], size=4096)
            refused = [
                await ingest_client.post(
                    "/v1/recordings", content=data, headers=upload_headers(kits[0], metadata)
                ),
                await vault_client.get(kits[0].path, headers=kits[0].headers("maire")),
            ]
            for answer in refused:
                assert answer.status_code == 503, answer.text
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.headers["Retry-After"]
            promoted_at = await _refused_until_promoted(pair)

            # The services find the new primary by themselves: the same clip again, until its
            # receipt (a dock waits Retry-After, 5 s, between attempts; this does not).
            while True:
                sent = await ingest_client.post(
                    "/v1/recordings", content=data, headers=upload_headers(kits[0], metadata)
                )
                if sent.status_code != 503:
                    break
                assert time.time() < promoted_at + 30, "no upload within 30 s of the promotion"
                await asyncio.sleep(0.05)
            assert sent.status_code == 201, sent.text
            serving_at = time.time()

            for dock in docks:
                assert dock.process is not None
                out, _ = await asyncio.to_thread(dock.process.communicate, None, DOCKS_WITHIN_S)
                assert dock.process.returncode == 0, out
        finished_at = time.time()

        # Every receipt names a recording of the new primary, with its SHA-256, its size and
        # its object; no clip was registered twice.
        receipts = [json.loads(path.read_text()) for dock in docks for path in dock.receipts()]
        assert len(receipts) == DOCKS * CLIPS
        receipts.append(sent.json())
        rows = psql(
            pair.standby.url,
            "SELECT id, sha256, size, object_key FROM vault.recordings WHERE organisation_id IN "
            f"({', '.join(repr(str(kit.id)) for kit in kits)})",
        ).splitlines()
        registered = {row.split("|")[0]: row.split("|")[1:] for row in rows}
        assert len(registered) == len(rows) == len(receipts), rows
        objects = {key for key, _ in await store.list_versions(RECORDINGS_PREFIX)}
        for receipt in receipts:
            sha256, size, object_key = registered[receipt["recording_id"]]
            assert (sha256, int(size)) == (receipt["sha256"], receipt["size"])
            assert object_key in objects
        after = [
            path.stat().st_mtime
            for dock in docks
            for path in dock.receipts()
            if path.stat().st_mtime > promoted_at
        ]
        assert after, "no upload after the promotion"

        # The operator's commands take the URL naming both servers (only the new one answers).
        checked = run_temoin("migrate", "--check", env=env)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        verify = run_temoin("audit", "verify", "--registry", env=env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "OK: the log is intact" in verify.stdout
        outages: list[int] = []  # 503s answered
        for service in (vault, ingest):
            log = service.log.read_text()
            assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
            # Only "retry later" failures: no 500, no 502 (a dock gives such a clip up).
            answered = [json.loads(line) for line in log.splitlines() if '.access"' in line]
            failed = [a for a in answered if a["status"] >= 500 and a["status"] != 503]
            assert not failed, failed
            outages.append(sum(a["status"] == 503 for a in answered))
        print(
            f"\nfailover: {received_at_loss} of {DOCKS * CLIPS} clips received when the "
            f"primary was lost, with commits of {', '.join(waiting)} waiting for the standby; "
            f"standby promoted {promoted_at - lost_at:.2f} s after the loss "
            f"(after the 503 checks); ingest's first receipt {serving_at - promoted_at:.2f} s "
            f"after the promotion ({serving_at - lost_at:.2f} s after the loss), a dock's "
            f"{min(after) - lost_at:.2f} s after the loss; all {DOCKS} docks done "
            f"{finished_at - lost_at:.1f} s after the loss; 503s answered: vault "
            f"{outages[0]}, ingest {outages[1]}; objects no recording names (lost attempts): "
            f"{len(objects - {key for _, _, key in registered.values()})}"
        )
    finally:
        for dock in docks:
            if dock.process is not None and dock.process.poll() is None:
                dock.process.kill()
                dock.process.wait(10)
        ingest.stop()
        vault.stop()
        pair.stop()


async def _target_session_attrs_choose_the_primary(pair: ReplicatedPostgres) -> None:
    """The standby named first: new connections still go to the primary, the services' and
    libpq's (psql, pg_basebackup: `temoin backup`)."""
    standby_first = pair.url.replace(
        f"127.0.0.1:{pair.primary.port},127.0.0.1:{pair.standby.port}",
        f"127.0.0.1:{pair.standby.port},127.0.0.1:{pair.primary.port}",
    )
    assert standby_first != pair.url
    engine = create_engine(standby_first, application_name="temoin-failover-test")
    try:
        async with engine.connect() as connection:
            port = await connection.scalar(text("SELECT inet_server_port()"))
        assert port == pair.primary.port
        assert psql(standby_first, "SELECT inet_server_port()") == str(pair.primary.port)
    finally:
        await engine.dispose()


async def _refused_until_promoted(pair: ReplicatedPostgres) -> float:
    """The primary lost, the standby not yet promoted: new connections find no server that
    accepts writes, and a write that reaches the standby is refused as read-only; both are
    outages (503), not bugs (500). Then the promotion (its time is returned); a connection
    that met the read-only refusal was dropped, not kept for the next request."""
    standby = f"postgresql://postgres@127.0.0.1:{pair.standby.port}/postgres"
    engines = [
        create_engine(url, application_name="temoin-failover-test")
        for url in (pair.url, f"{standby}?target_session_attrs=read-write", standby)
    ]
    try:
        for engine in engines[:2]:
            with pytest.raises(Exception) as caught:
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
            assert database_unavailable(caught.value), repr(caught.value)
        reader = engines[2]
        async with reader.connect() as connection:
            before = await connection.scalar(text("SELECT pg_backend_pid()"))
        with pytest.raises(Exception) as caught:
            async with reader.begin() as connection:
                await connection.execute(text("CREATE TABLE public.failover_probe (x int)"))
        assert database_unavailable(caught.value), repr(caught.value)
        await asyncio.to_thread(pair.promote)
        promoted_at = time.time()
        async with reader.connect() as connection:
            assert await connection.scalar(text("SELECT pg_backend_pid()")) != before
        return promoted_at
    finally:
        for engine in engines:
            await engine.dispose()
