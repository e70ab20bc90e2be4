"""Anonymised copies for training (issue 18) against real processes: the vault's runner makes
the copy from the sealed original (served on loopback, sealed as it comes), a person views and
approves it, the formation procedure extracts it, and the package verifies with `temoin
verify`; a rejected copy, a cancelled job, an undecodable clip, a vault killed mid-job, the
erasure of the original, and the report's « enregistrement pour formation »."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import signal
import subprocess
import time
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.db import asyncpg_url
from shared.package import verify_package
from shared.receipts import receipt_digest
from shared.storage import ObjectStore
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import MINIMUM_LOCK_S, Live, run_temoin
from tests.fixtures.servers import Servers

MADE = 180.0  # seconds a copy may take on a loaded 2-core machine


def _mp4(path: Path, seconds: int, size: str = "320x240", tag: str = "") -> bytes:
    """A real H.264 + AAC clip whose index (moov) is at its end, as cameras write them: the
    runner's loopback server must answer ranges for ffmpeg to read it."""
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=duration={seconds}:size={size}:rate=25",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-metadata", f"title={tag or uuid.uuid4()}", "-y", str(path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    return path.read_bytes()


@dataclass
class Scene:
    kit: OrgKit
    vault: httpx.AsyncClient
    ingest: httpx.AsyncClient
    reporting: httpx.AsyncClient
    engine: AsyncEngine
    tmp: Path

    async def upload(self, data: bytes, **changes: Any) -> str:
        return str((await self.received(data, **changes))["recording_id"])

    async def received(self, data: bytes, **changes: Any) -> dict[str, Any]:
        """Uploads a clip; the receipt ingest signed for it."""
        _, metadata = make_clip(
            self.kit, size=len(data), sha256=hashlib.sha256(data).hexdigest(), **changes
        )
        response = await self.ingest.post(
            "/v1/recordings", content=data, headers=upload_headers(self.kit, metadata)
        )
        assert response.status_code == 201, response.text
        receipt: dict[str, Any] = response.json()
        return receipt

    async def formation(self, *recordings: str) -> str:
        opened = await self.vault.post(
            f"{self.kit.path}/procedures",
            headers=self.kit.headers("responsable"),
            json={"type": "formation", "reference": f"FORM-{uuid.uuid4().hex[:8]}"},
        )
        assert opened.status_code == 201, opened.text
        path = f"{self.kit.path}/procedures/{opened.json()['id']}"
        for recording in recordings:
            attached = await self.vault.post(
                f"{path}/recordings",
                headers=self.kit.headers("responsable"),
                json={"recording_id": recording, "qualification": "exemple pour la formation"},
            )
            assert attached.status_code == 201, attached.text
        return path

    async def ask(self, procedure: str, recording: str) -> str:
        asked = await self.vault.post(
            f"{procedure}/derivatives",
            headers=self.kit.headers("habilite"),
            json={"recording_id": recording, "motif": "formation aux interpellations"},
        )
        assert asked.status_code == 202, asked.text
        return f"{self.kit.path}/derivatives/{asked.json()['id']}"

    async def until(self, path: str, *statuses: str, timeout: float = MADE) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = await self.vault.get(path, headers=self.kit.headers("dpo"))
            except httpx.TransportError:  # the vault restarting
                got = None
            if got is not None and got.status_code == 200:
                body: dict[str, Any] = got.json()
                if body["status"] in statuses:
                    return body
            assert time.monotonic() < deadline, got.text if got is not None else "no vault"
            await asyncio.sleep(0.3)

    async def row(self, derivative: str) -> Any:
        async with self.engine.connect() as connection:
            return (
                await connection.execute(
                    text("SELECT * FROM vault.derivatives WHERE id = :id"), {"id": derivative}
                )
            ).one()


@pytest.fixture
async def scene(live: Live, servers: Servers, tmp_path: Path) -> AsyncIterator[Scene]:
    engine = create_async_engine(asyncpg_url(servers.database_url))
    async with (
        httpx.AsyncClient(base_url=live.vault.url, timeout=120) as vault,
        httpx.AsyncClient(base_url=live.ingest.url, timeout=60) as ingest,
        httpx.AsyncClient(base_url=live.reporting.url, timeout=60) as reporting,
    ):
        kit = await build_org(vault, ingest, servers, insee=fresh_insee())
        yield Scene(kit, vault, ingest, reporting, engine, tmp_path)
    await engine.dispose()


def _id(path: str) -> str:
    return path.rsplit("/", 1)[1]


def _registry_says(env: dict[str, str], path: str) -> list[str]:
    """What `temoin audit verify --registry` reports of this copy's row."""
    checked = run_temoin("audit", "verify", "--registry", env=env)
    assert "Traceback" not in checked.stderr, checked.stderr
    return [line for line in checked.stdout.splitlines() if f"derivative {_id(path)}" in line]


async def _view(scene: Scene, path: str, role: str = "habilite") -> bytes:
    consulted = await scene.vault.post(
        f"{path}/consultations", headers=scene.kit.headers(role), json={"motif": "vérification"}
    )
    assert consulted.status_code == 201, consulted.text
    media = await scene.vault.get(consulted.json()["url"])
    assert media.status_code == 200
    assert media.headers["Content-Type"] == "video/mp4"
    return media.content


async def test_demande_to_verified_training_package(
    scene: Scene, live: Live, servers: Servers
) -> None:
    original = _mp4(scene.tmp / "original.mp4", seconds=3)
    receipt = await scene.received(original)
    recording = receipt["recording_id"]
    procedure = await scene.formation(recording)
    path = await scene.ask(procedure, recording)
    made = await scene.until(path, "a_verifier", "echec")
    assert made["status"] == "a_verifier", made
    assert made["frames_done"] == made["frames_total"] == made["result"]["frames"] == 75
    assert made["result"]["tools"]["model_sha256"]
    assert made["parameters"]["threshold"] > 0

    # Viewed through a consultation (logged), by a person other than the one who asked.
    copy = await _view(scene, path, role="responsable")
    assert hashlib.sha256(copy).hexdigest() == made["sha256"]
    assert len(copy) == made["size"]
    assert copy != original and b"ftyp" in copy[:64]
    # The copy has no audio track (voices identify people).
    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", "pipe:0"],
        input=copy,
        capture_output=True,
        timeout=60,
    )
    assert b"Video: h264" in probe.stderr and b"Audio:" not in probe.stderr, probe.stderr

    approved = await scene.vault.post(
        f"{path}/review",
        headers=scene.kit.headers("responsable"),
        json={"decision": "approuve", "reason": "aucun visage reconnaissable"},
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approuve"

    extracted = await scene.vault.post(
        f"{procedure}/extractions",
        headers=scene.kit.headers("habilite"),
        json={"recording_id": recording, "derivative_id": _id(path), "motif": "session de "
              "formation", "destinataires": ["Formateur du CNFPT"]},
    )  # fmt: skip
    assert extracted.status_code == 200, extracted.text
    package = scene.tmp / "formation.zip"
    package.write_bytes(extracted.content)
    with zipfile.ZipFile(io.BytesIO(extracted.content)) as archive:
        names = {name.split("/", 1)[1] for name in archive.namelist()}
        bag = archive.namelist()[0].split("/", 1)[0]
        assert f"data/{_id(path)}.mp4" in names and "data/receipt.json" not in names
        assert archive.read(f"{bag}/data/{_id(path)}.mp4") == copy  # the copy, not the original
        metadata = json.loads(archive.read(f"{bag}/data/metadata.json"))
        assert set(metadata) <= {"derivative_id", "day", "duration_s", "procedure", "content_type"}
        record = json.loads(archive.read(f"{bag}/data/derivation.json"))["record"]
        audit = json.loads(archive.read(f"{bag}/data/audit.json"))
    assert record["original"] == {"recording_id": recording,
                                  "sha256": hashlib.sha256(original).hexdigest(),
                                  "receipt_sha256": receipt_digest(receipt)}  # fmt: skip
    assert receipt["camera_serial"] not in json.dumps(record)  # the digest states nothing
    assert record["derivative"]["sha256"] == made["sha256"]
    assert record["approved_by"] == approved.json()["reviewed_by"]
    assert len(record["faces_per_frame"]) == 75 and record["model_sha256"]
    actions = {proof["entry"]["action"] for proof in audit["proofs"]}
    assert {"derivation_requested", "derivation_finished", "derivation_reviewed",
            "extraction"} <= actions  # fmt: skip

    vault_key = (await scene.vault.get("/v1/audit/public-key")).json()["public_key"]
    report = verify_package(package, vault_key=vault_key)
    assert report.valid, [str(p) for p in report.problems]
    checked = run_temoin("verify", str(package), "--vault-key", vault_key, env=live.env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "OK: package valid and authentic" in checked.stdout
    # The record altered (an original's SHA-256 put in): its signature no longer verifies.
    forged = scene.tmp / "forged.zip"
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(forged, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("data/derivation.json"):
                data = data.replace(made["sha256"].encode(), b"0" * 64)
            target.writestr(item, data)
    refused = run_temoin("verify", str(forged), "--vault-key", vault_key, env=live.env)
    assert refused.returncode == 1, refused.stdout
    assert "[derivation-signature]" in refused.stdout
    await _receipt_link(scene, live, package, vault_key, receipt, record)
    # Made, viewed, approved and extracted: its row agrees with its entries.
    assert _registry_says(servers.env(), path) == []

    # R241-17: the report counts the recording « pour formation ».
    deadline = time.monotonic() + 60
    while True:
        now = (
            await scene.reporting.get(
                f"{scene.kit.path}/report",
                headers=scene.kit.headers("maire"),
                params={"year": datetime.now(UTC).year},
            )
        ).json()
        if now["recordings_used"]["formation"] == 1:
            break
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.5)
    assert now["extractions"] == 1


async def _receipt_link(
    scene: Scene,
    live: Live,
    package: Path,
    vault_key: str,
    receipt: dict[str, Any],
    record: dict[str, Any],
) -> None:
    """`temoin verify --receipt`: the original's receipt (which the training package does not
    carry) is the one the derivation record names by its digest."""
    receipt_key = (await scene.ingest.get("/v1/receipts/public-key")).json()["public_key"]

    def verify(given: dict[str, Any] | None, *keys: str) -> tuple[int, str]:
        args = ["verify", str(package), "--vault-key", vault_key, *keys]
        if given is not None:
            path = scene.tmp / f"receipt-{uuid.uuid4()}.json"
            path.write_text(json.dumps(given))
            args += ["--receipt", str(path)]
        done = run_temoin(*args, env=live.env)
        return done.returncode, done.stdout + done.stderr

    # Without it, the output says the link was not checked, and names the digest.
    code, out = verify(None)
    assert code == 0, out
    assert "link to the original's receipt was NOT checked" in out
    assert record["original"]["receipt_sha256"] in out
    # The original's own receipt, as its judicial package carries it, with ingest's key.
    code, out = verify(receipt, "--receipt-key", receipt_key)
    assert code == 0, out
    assert "OK: package valid and authentic" in out and "is the one the derivation record" in out
    # Without ingest's key, its signature is not checked: not authenticated (exit 2).
    code, out = verify(receipt)
    assert code == 2, out
    # Another recording's receipt, genuinely signed by ingest.
    other = await scene.received(_mp4(scene.tmp / "other.mp4", seconds=1))
    code, out = verify(other, "--receipt-key", receipt_key)
    assert code == 1 and "[receipt-link]" in out and "another recording's" in out, out
    # The receipt altered: a field ingest signed (the camera), then the signature itself.
    altered = {**receipt, "camera_serial": f"{receipt['camera_serial']}-X"}
    code, out = verify(altered, "--receipt-key", receipt_key)
    assert code == 1 and "[receipt-signature]" in out and "[receipt-link]" in out, out
    signature = bytearray(base64.b64decode(receipt["signature"]))
    signature[0] ^= 1
    resigned = {**receipt, "signature": base64.b64encode(bytes(signature)).decode()}
    code, out = verify(resigned, "--receipt-key", receipt_key)
    assert code == 1 and "[receipt-link]" in out, out
    # A field ingest does not sign (the dock's information) changes nothing.
    noted = {**receipt, "notice": "autre chose"}
    assert verify(noted, "--receipt-key", receipt_key)[0] == 0


async def test_rejected_copy_is_never_extracted(scene: Scene) -> None:
    recording = await scene.upload(_mp4(scene.tmp / "a.mp4", seconds=1))
    procedure = await scene.formation(recording)
    path = await scene.ask(procedure, recording)
    assert (await scene.until(path, "a_verifier", "echec"))["status"] == "a_verifier"
    review = {"decision": "rejete", "reason": "une plaque d'immatriculation reste lisible"}
    unseen = await scene.vault.post(f"{path}/review", headers=scene.kit.headers("habilite"),
                                    json=review)  # fmt: skip
    assert unseen.status_code == 409  # viewed before it is reviewed
    await _view(scene, path)
    rejected = await scene.vault.post(f"{path}/review", headers=scene.kit.headers("habilite"),
                                      json=review)  # fmt: skip
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["review_reason"] == review["reason"]
    extracted = await scene.vault.post(
        f"{procedure}/extractions",
        headers=scene.kit.headers("habilite"),
        json={"recording_id": recording, "derivative_id": _id(path), "motif": "session",
              "destinataires": ["Formateur"]},
    )  # fmt: skip
    assert extracted.status_code == 409, extracted.text


async def test_undecodable_clip_fails_with_its_reason(scene: Scene, servers: Servers) -> None:
    data, _ = make_clip(scene.kit, size=300_000)  # random bytes, not a video
    recording = await scene.upload(data)
    procedure = await scene.formation(recording)
    path = await scene.ask(procedure, recording)
    failed = await scene.until(path, "echec", "a_verifier")
    assert failed["status"] == "echec" and failed["reason"], failed
    assert "127.0.0.1" not in failed["reason"]  # the loopback URL is the job's secret
    assert failed["sha256"] is None and failed["size"] == 0
    row = await scene.row(_id(path))
    assert (row.object_key, row.wrapped_key, row.multipart_id) == (None, None, None)
    store = ObjectStore(servers.storage)
    prefix = f"derivatives/{scene.kit.id}/{_id(path)}"
    assert not [k for k, _, _ in await store.list_multipart_uploads(prefix)]
    assert not await store.list_versions(prefix)


async def test_cancel_a_running_job(scene: Scene, servers: Servers) -> None:
    recording = await scene.upload(_mp4(scene.tmp / "long.mp4", seconds=60, size="640x360"))
    procedure = await scene.formation(recording)
    path = await scene.ask(procedure, recording)
    running = await scene.until(path, "en_cours", timeout=60)
    assert running["status"] == "en_cours"
    cancel = await scene.vault.post(f"{path}/cancel", headers=scene.kit.headers("habilite"))
    assert cancel.status_code == 200, cancel.text
    ended = await scene.until(path, "annule", "a_verifier", "echec", timeout=60)
    assert ended["status"] == "annule", ended
    assert ended["reason"] == "Fabrication annulée."
    store = ObjectStore(servers.storage)
    prefix = f"derivatives/{scene.kit.id}/{_id(path)}"
    assert not await store.list_multipart_uploads(prefix)
    assert not await store.list_versions(prefix)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_vault_killed_mid_job_makes_one_copy(
    scene: Scene, live: Live, servers: Servers, sig: signal.Signals
) -> None:
    """Killed (no shutdown at all) or stopped (its lifespan ends, the engine told to stop at
    once rather than finish the clip): started again, it makes one copy, from zero. The clip
    is short (300 frames; it was 750, 30 s, and the test took about 38 s) yet long enough that
    the first attempt still runs when its progress is first seen (the first heartbeat comes at
    0.5 s; at 100 frames the 8-bit detector finished the whole clip first on CI): the test's
    time is mostly the second attempt's whole run. The stale delay (3 s,
    tests/fixtures/live.py) is not on its path: the vault's restart takes as long, and the job
    is claimed as soon as the vault is up. Had the first attempt finished before the kill, the
    attempt number below would say so."""
    recording = await scene.upload(_mp4(scene.tmp / "long.mp4", seconds=12, size="640x360"))
    procedure = await scene.formation(recording)
    path = await scene.ask(procedure, recording)
    deadline = time.monotonic() + 60
    while (row := await scene.row(_id(path))).frames_done == 0 or row.multipart_id is None:
        assert time.monotonic() < deadline, row
        await asyncio.sleep(0.2)
    first_key = row.object_key
    stopping = time.monotonic()
    live.vault.stop(sig)
    assert time.monotonic() - stopping < 8  # not waiting for the job (stop() kills at 10 s)
    live.vault.start()
    made = await scene.until(path, "a_verifier", "echec")
    assert made["status"] == "a_verifier", made
    row = await scene.row(_id(path))
    assert row.attempt == 2 and row.object_key != first_key
    async with scene.engine.connect() as connection:
        copies = (
            await connection.execute(
                text("SELECT count(*) FROM vault.derivatives WHERE recording_id = :r"),
                {"r": recording},
            )
        ).scalar_one()
    assert copies == 1
    store = ObjectStore(servers.storage)
    # The dead attempt's multipart upload was aborted: only the registered object is there.
    assert not await store.list_multipart_uploads(first_key)
    assert [k for k, _ in await store.list_versions(f"derivatives/{scene.kit.id}/")] == [
        row.object_key
    ]


async def test_erasing_the_original_erases_its_copy(scene: Scene, servers: Servers) -> None:
    ended = datetime.now(UTC) - timedelta(days=40)  # past its retention
    recording = await scene.upload(
        _mp4(scene.tmp / "old.mp4", seconds=1),
        started_at=ended - timedelta(minutes=1),
        ended_at=ended,
    )
    procedure = await scene.formation(recording)
    path = await scene.ask(procedure, recording)
    assert (await scene.until(path, "a_verifier", "echec"))["status"] == "a_verifier"
    closed = await scene.vault.post(f"{procedure}/close", headers=scene.kit.headers("responsable"))
    assert closed.status_code == 200, closed.text
    env = servers.env()
    erased = run_temoin("erase", env=env)
    assert erased.returncode == 0, erased.stderr
    gone = await scene.until(path, "efface", timeout=10)
    assert gone["status"] == "efface"
    row = await scene.row(_id(path))
    assert row.wrapped_key is None and row.erased_at is not None
    async with scene.engine.connect() as connection:
        logged = (
            await connection.execute(
                text(
                    "SELECT details->'derivatives' FROM audit.entries WHERE action = "
                    "'effacement' AND outcome = 'success' AND :r = ANY(recording_ids)"
                ),
                {"r": uuid.UUID(recording)},
            )
        ).scalar_one()
    assert logged == [_id(path)]  # the original's effacement names its copy
    assert _registry_says(env, path) == []  # and the row, erased, agrees with it
    viewed = await scene.vault.post(
        f"{path}/consultations", headers=scene.kit.headers("habilite"), json={"motif": "voir"}
    )
    assert viewed.status_code == 410, viewed.text
    # Its object goes once its lock allows, with the original's.
    await asyncio.sleep(MINIMUM_LOCK_S + 1)
    assert run_temoin("erase", env=env).returncode == 0
    assert (await scene.row(_id(path))).object_deleted_at is not None
