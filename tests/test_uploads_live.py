"""Uploads through real ingest and vault processes, over real sockets: two uploads of the same
clip racing give one recording and one receipt; a mismatch found at the end of the stream
stores nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.vault.recordings.models import Recording
from temoin.station import StationKeyFile
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit
from tests.fixtures.live import Live, run_temoin


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


async def test_dock_simulate_upload_and_verify(
    live: Live, live_org: tuple[OrgKit, httpx.AsyncClient], tmp_path: Path
) -> None:
    kit, _ = live_org
    assert kit.station_id is not None and kit.station_key is not None
    key_file = tmp_path / "dock.json"
    StationKeyFile(kit.station_id, kit.id, kit.station_key).save(key_file)
    clips_dir = tmp_path / "clips"
    made = run_temoin(
        "dock", "simulate", str(clips_dir), "--camera", kit.camera_serial, "--count", "3",
        "--seconds", "3", env=live.env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    clips = sorted(clips_dir.glob("*.mp4"))
    assert all(c.read_bytes()[4:8] == b"ftyp" for c in clips)  # real MP4 files
    # One more clip whose camera is unknown: it must fail alone, and get no receipt.
    stray = clips_dir / "stray.mp4"
    stray.write_bytes(b"\x00" * 1000)
    sidecar = json.loads((clips_dir / f"{clips[0].name}.json").read_text())
    (clips_dir / "stray.mp4.json").write_text(json.dumps({**sidecar, "camera_serial": "GHOST"}))

    uploaded = run_temoin(
        "dock", "upload", *map(str, [*clips, stray]), "--key-file", str(key_file), env=live.env
    )
    assert uploaded.returncode == 1, uploaded.stdout + uploaded.stderr
    assert "1 of 4 clips failed" in uploaded.stderr
    assert not (clips_dir / "stray.mp4.receipt.json").exists()
    receipts = [json.loads((clips_dir / f"{c.name}.receipt.json").read_text()) for c in clips]
    assert len({r["recording_id"] for r in receipts}) == 3

    checked = run_temoin(
        "receipt", "verify", str(clips_dir / f"{clips[1].name}.receipt.json"),
        "--clip", str(clips[1]), env=live.env,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    wrong_clip = run_temoin(
        "receipt", "verify", str(clips_dir / f"{clips[1].name}.receipt.json"),
        "--clip", str(clips[2]), env=live.env,
    )  # fmt: skip
    assert wrong_clip.returncode == 1
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({**receipts[0], "size": receipts[0]["size"] + 1}))
    assert run_temoin("receipt", "verify", str(forged), env=live.env).returncode == 1

    again = run_temoin(
        "dock", "upload", *map(str, clips), "--key-file", str(key_file), env=live.env
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert [
        json.loads((clips_dir / f"{c.name}.receipt.json").read_text()) for c in clips
    ] == receipts


async def test_dock_simulates_an_old_clip_and_says_it_will_be_erased(
    live: Live, live_org: tuple[OrgKit, httpx.AsyncClient], tmp_path: Path
) -> None:
    """`--started-at` makes clips of another date; one past its retention is taken (the
    camera is freed) and the dock says that the next erasure pass erases it unless it is
    qualified."""
    kit, _ = live_org
    assert kit.station_id is not None and kit.station_key is not None
    key_file = tmp_path / "dock.json"
    StationKeyFile(kit.station_id, kit.id, kit.station_key).save(key_file)
    clips_dir = tmp_path / "clips"
    started = (datetime.now(UTC) - timedelta(days=45)).replace(microsecond=0)
    made = run_temoin(
        "dock", "simulate", str(clips_dir), "--camera", kit.camera_serial, "--count", "2",
        "--size", "2048", "--started-at", started.isoformat(), env=live.env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    clips = sorted(clips_dir.glob("*.mp4"))
    sidecars = [json.loads((clips_dir / f"{c.name}.json").read_text()) for c in clips]
    assert [datetime.fromisoformat(s["started_at"]) for s in sidecars] == [
        started,
        started + timedelta(minutes=20),
    ]
    uploaded = run_temoin(
        "dock", "upload", *map(str, clips), "--key-file", str(key_file), env=live.env
    )
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert uploaded.stdout.count("erased at the next erasure pass") == 2, uploaded.stdout
    receipt = json.loads((clips_dir / f"{clips[0].name}.receipt.json").read_text())
    assert receipt["erasure_due"] is True
    checked = run_temoin(
        "receipt", "verify", str(clips_dir / f"{clips[0].name}.receipt.json"),
        "--clip", str(clips[0]), env=live.env,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "erased at the next erasure pass" in checked.stdout

    naive = run_temoin(
        "dock", "simulate", str(clips_dir), "--camera", "X", "--size", "10",
        "--started-at", "2026-01-05T09:30:00", env=live.env,
    )  # fmt: skip
    assert naive.returncode == 2 and "needs its time zone" in naive.stderr
