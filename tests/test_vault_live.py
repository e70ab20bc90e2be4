"""The vault's read path against real processes (committed data, so that audit entries are
sequenced and proved): consultation and seekable streaming, procedures and legal holds,
extraction packages checked by the reference `bagit` validator and by `temoin verify`."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import bagit
import httpx
import pytest

from shared.package import verify_package
from shared.storage import ObjectStore
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import Live, run_temoin
from tests.fixtures.servers import Servers

MiB = 1 << 20


@dataclass
class Scene:
    kit: OrgKit
    vault: httpx.AsyncClient
    ingest: httpx.AsyncClient
    recording_id: str
    data: bytes
    receipt: dict[str, object]


@pytest.fixture
async def scene(live: Live, servers: Servers) -> AsyncIterator[Scene]:
    """An organisation with one uploaded clip of 3 MiB and a bit (the last chunk short)."""
    async with (
        httpx.AsyncClient(base_url=live.vault.url, timeout=60) as vault,
        httpx.AsyncClient(base_url=live.ingest.url, timeout=60) as ingest,
    ):
        kit = await build_org(vault, ingest, servers, insee=fresh_insee())
        data, metadata = make_clip(kit, size=3 * MiB + 12345)
        uploaded = await ingest.post(
            "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
        )
        assert uploaded.status_code == 201, uploaded.text
        receipt = uploaded.json()
        yield Scene(kit, vault, ingest, str(receipt["recording_id"]), data, receipt)


async def _consult(scene: Scene, role: str = "habilite") -> str:
    response = await scene.vault.post(
        f"{scene.kit.path}/recordings/{scene.recording_id}/consultations",
        headers=scene.kit.headers(role),
        json={"motif": "vérification d'un signalement"},
    )
    assert response.status_code == 201, response.text
    url: str = response.json()["url"]
    return url


async def test_consultation_streams_with_ranges(scene: Scene) -> None:
    url = await _consult(scene)
    full = await scene.vault.get(url)  # no Authorization: the URL is the credential
    assert full.status_code == 200
    assert full.headers["Accept-Ranges"] == "bytes"
    assert full.headers["Content-Type"] == "video/mp4"
    assert full.content == scene.data
    size = len(scene.data)
    cases = {
        "bytes=0-99": (0, 100),
        f"bytes={MiB - 10}-{MiB + 9}": (MiB - 10, MiB + 10),  # across a chunk boundary
        "bytes=-10": (size - 10, size),
        f"bytes={size - 5}-": (size - 5, size),
        f"bytes=100-{size + 500}": (100, size),
    }
    for header, (start, stop) in cases.items():
        part = await scene.vault.get(url, headers={"Range": header})
        assert part.status_code == 206, header
        assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"
        assert part.content == scene.data[start:stop], header
    beyond = await scene.vault.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{size}"
    head = await scene.vault.head(url)
    assert (head.status_code, head.headers["Content-Length"]) == (200, str(size))
    altered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    assert (await scene.vault.get(altered)).status_code == 403

    entries = await scene.vault.get(
        f"{scene.kit.path}/audit/entries",
        headers=scene.kit.headers("dpo"),
        params={"action": "consultation"},
    )
    (entry,) = entries.json()["items"]
    assert entry["motif"] == "vérification d'un signalement"
    assert entry["recording_ids"] == [scene.recording_id]


async def _procedure(scene: Scene, kind: str = "judiciaire") -> str:
    opened = await scene.vault.post(
        f"{scene.kit.path}/procedures",
        headers=scene.kit.headers("responsable"),
        json={"type": kind, "reference": f"PV-{uuid.uuid4().hex[:6]}"},
    )
    assert opened.status_code == 201, opened.text
    procedure: str = opened.json()["id"]
    attached = await scene.vault.post(
        f"{scene.kit.path}/procedures/{procedure}/recordings",
        headers=scene.kit.headers("habilite"),
        json={"recording_id": scene.recording_id, "qualification": "faits de violence"},
    )
    assert attached.status_code == 201, attached.text
    return procedure


async def test_procedure_holds_then_releases(scene: Scene, servers: Servers) -> None:
    store = ObjectStore(servers.storage)
    recording = (
        await scene.vault.get(
            f"{scene.kit.path}/recordings/{scene.recording_id}",
            headers=scene.kit.headers("responsable"),
        )
    ).json()
    assert recording["legal_hold"] is False
    procedure = await _procedure(scene)
    path = f"{scene.kit.path}/recordings/{scene.recording_id}"
    assert (await scene.vault.get(path, headers=scene.kit.headers("dpo"))).json()["legal_hold"]
    key = f"recordings/{scene.kit.id}/{scene.recording_id}.sealed"
    assert store.client.is_object_legal_hold_enabled(store.bucket, key)
    found = await scene.vault.get(
        f"{scene.kit.path}/recordings",
        headers=scene.kit.headers("habilite"),
        params={"procedure_id": procedure},
    )
    assert [r["id"] for r in found.json()["items"]] == [scene.recording_id]

    closed = await scene.vault.post(
        f"{scene.kit.path}/procedures/{procedure}/close", headers=scene.kit.headers("responsable")
    )
    assert closed.status_code == 200, closed.text
    assert not store.client.is_object_legal_hold_enabled(store.bucket, key)
    again = await scene.vault.post(
        f"{scene.kit.path}/procedures/{procedure}/recordings",
        headers=scene.kit.headers("habilite"),
        json={"recording_id": scene.recording_id, "qualification": "encore"},
    )
    assert again.status_code == 409  # closed


async def _detach(
    scene: Scene, procedure: str, role: str = "habilite", motif: str | None = "rattaché par erreur"
) -> httpx.Response:
    return await scene.vault.post(
        f"{scene.kit.path}/procedures/{procedure}/recordings/{scene.recording_id}/detach",
        headers=scene.kit.headers(role),
        json={} if motif is None else {"motif": motif},
    )


async def test_detach_lifts_the_hold_only_when_no_other_procedure_holds(
    scene: Scene, servers: Servers
) -> None:
    store = ObjectStore(servers.storage)
    key = f"recordings/{scene.kit.id}/{scene.recording_id}.sealed"
    recording = f"{scene.kit.path}/recordings/{scene.recording_id}"
    first = await _procedure(scene)
    second = await _procedure(scene, "disciplinaire")

    for role in ("dpo", "agent"):  # they may read procedures (the DPO) or not: never detach
        refused = await _detach(scene, first, role)
        assert refused.status_code == 403, (role, refused.text)
    assert (await _detach(scene, first, motif=None)).status_code == 422
    assert (await _detach(scene, first, motif="x")).status_code == 422  # a motif says why

    detached = await _detach(scene, first)
    assert detached.status_code == 200, detached.text
    assert detached.json()["recording_ids"] == []
    # The other open procedure still holds it: the store's hold stays.
    assert store.client.is_object_legal_hold_enabled(store.bucket, key)
    assert (await scene.vault.get(recording, headers=scene.kit.headers("dpo"))).json()["legal_hold"]
    again = await _detach(scene, first)
    assert again.status_code == 404, again.text  # not attached (any more)
    assert "not attached" in again.json()["detail"]

    released = await _detach(scene, second, "maire", "la procédure n'en a plus besoin")
    assert released.status_code == 200, released.text
    assert not store.client.is_object_legal_hold_enabled(store.bucket, key)
    assert not (await scene.vault.get(recording, headers=scene.kit.headers("dpo"))).json()[
        "legal_hold"
    ]

    # Attached again, then the procedure closed: its history is frozen.
    reattached = await scene.vault.post(
        f"{scene.kit.path}/procedures/{first}/recordings",
        headers=scene.kit.headers("responsable"),
        json={"recording_id": scene.recording_id, "qualification": "finalement utile"},
    )
    assert reattached.status_code == 201, reattached.text
    assert store.client.is_object_legal_hold_enabled(store.bucket, key)
    closed = await scene.vault.post(
        f"{scene.kit.path}/procedures/{first}/close", headers=scene.kit.headers("responsable")
    )
    assert closed.status_code == 200, closed.text
    frozen = await _detach(scene, first)
    assert frozen.status_code == 409, frozen.text
    assert closed.json()["recording_ids"] == [scene.recording_id]
    unknown = await scene.vault.post(
        f"{scene.kit.path}/procedures/{uuid.uuid4()}/recordings/{scene.recording_id}/detach",
        headers=scene.kit.headers("habilite"),
        json={"motif": "rattaché par erreur"},
    )
    assert unknown.status_code == 404

    logged = await scene.vault.get(
        f"{scene.kit.path}/audit/entries",
        headers=scene.kit.headers("dpo"),
        params={"action": "modification", "limit": 100},
    )
    detaches = [e for e in logged.json()["items"] if e["details"].get("event") == "detached"]
    assert sorted((e["details"]["procedure"], e["motif"], e["details"]["released"])
                  for e in detaches) == sorted([
        (first, "rattaché par erreur", False),
        (second, "la procédure n'en a plus besoin", True),
    ])  # fmt: skip
    assert all(e["recording_ids"] == [scene.recording_id] for e in detaches)


async def _extract(scene: Scene, procedure: str) -> httpx.Response:
    return await scene.vault.post(
        f"{scene.kit.path}/procedures/{procedure}/extractions",
        headers=scene.kit.headers("habilite"),
        json={
            "recording_id": scene.recording_id,
            "motif": "réquisition judiciaire",
            "destinataires": ["OPJ Martin, commissariat de L'Haÿ-les-Roses"],
        },
    )


def _flip_clip_byte(package: bytes, target: Path) -> None:
    """The same package with one byte of the clip changed."""
    with zipfile.ZipFile(io.BytesIO(package)) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(".mp4"):
                data = data[:1000] + bytes([data[1000] ^ 1]) + data[1001:]
            out.writestr(info, data)


async def test_extraction_package_is_valid_and_tamper_evident(
    scene: Scene, live: Live, tmp_path: Path
) -> None:
    procedure = await _procedure(scene)
    response = await _extract(scene, procedure)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/zip"
    package = tmp_path / "package.zip"
    package.write_bytes(response.content)

    with zipfile.ZipFile(package) as archive:
        clip = next(n for n in archive.namelist() if n.endswith(".mp4"))
        assert archive.read(clip) == scene.data  # byte for byte as uploaded
        archive.extractall(tmp_path / "bag")
    (bag_dir,) = (tmp_path / "bag").iterdir()
    bag = bagit.Bag(str(bag_dir))
    bag.validate()  # the reference validator
    assert bag.info["External-Identifier"].startswith("PV-")
    assert "OPJ Martin" in bag.info["Temoin-Destinataires"]

    vault_key = (await scene.vault.get("/v1/audit/public-key")).json()["public_key"]
    receipt_key = (await scene.ingest.get("/v1/receipts/public-key")).json()["public_key"]
    report = verify_package(package, vault_key=vault_key, receipt_key=receipt_key)
    assert report.valid, report.problems
    assert report.clip_sha256 == scene.receipt["sha256"]
    checked = run_temoin(
        "verify", str(package), "--vault-key", vault_key, "--receipt-key", receipt_key,
        env=live.env,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr

    tampered = tmp_path / "tampered.zip"
    _flip_clip_byte(response.content, tampered)
    assert not verify_package(tampered, vault_key=vault_key, receipt_key=receipt_key).valid
    assert run_temoin("verify", str(tampered), env=live.env).returncode == 1
    with zipfile.ZipFile(tampered) as archive:
        archive.extractall(tmp_path / "tampered")
    (tampered_dir,) = (tmp_path / "tampered").iterdir()
    with pytest.raises(bagit.BagValidationError):
        bagit.Bag(str(tampered_dir)).validate()

    entries = await scene.vault.get(
        f"{scene.kit.path}/audit/entries",
        headers=scene.kit.headers("dpo"),
        params={"action": "extraction"},
    )
    (entry,) = entries.json()["items"]
    assert entry["destinataires"] == ["OPJ Martin, commissariat de L'Haÿ-les-Roses"]
    assert entry["procedure_ref"].startswith("PV-")


async def test_extraction_refusals(scene: Scene) -> None:
    training = await _procedure(scene, "formation")
    refused = await _extract(scene, training)
    assert refused.status_code == 422
    assert "anonymis" in refused.json()["detail"]
    opened = await scene.vault.post(
        f"{scene.kit.path}/procedures",
        headers=scene.kit.headers("responsable"),
        json={"type": "administrative", "reference": "ADM-1"},
    )
    not_attached = await _extract(scene, opened.json()["id"])
    assert not_attached.status_code == 409
    no_destinataire = await scene.vault.post(
        f"{scene.kit.path}/procedures/{training}/extractions",
        headers=scene.kit.headers("habilite"),
        json={"recording_id": scene.recording_id, "motif": "x" * 5, "destinataires": []},
    )
    assert no_destinataire.status_code == 422


async def test_the_procedures_list_says_which_recordings_each_holds(scene: Scene) -> None:
    """Read for a whole page at once (one query, not one per procedure): each procedure
    with its own recordings, none with another's."""
    data, metadata = make_clip(scene.kit, size=MiB + 7)
    uploaded = await scene.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(scene.kit, metadata)
    )
    assert uploaded.status_code == 201, uploaded.text
    second = str(uploaded.json()["recording_id"])
    one = await _procedure(scene)
    both = await _procedure(scene)
    attached = await scene.vault.post(
        f"{scene.kit.path}/procedures/{both}/recordings",
        headers=scene.kit.headers("habilite"),
        json={"recording_id": second, "qualification": "témoin de la scène"},
    )
    assert attached.status_code == 201, attached.text
    empty = await scene.vault.post(
        f"{scene.kit.path}/procedures",
        headers=scene.kit.headers("responsable"),
        json={"type": "administrative", "reference": f"PV-{uuid.uuid4().hex[:6]}"},
    )
    assert empty.status_code == 201, empty.text
    listed = await scene.vault.get(
        f"{scene.kit.path}/procedures", headers=scene.kit.headers("habilite")
    )
    assert listed.status_code == 200, listed.text
    held = {p["id"]: sorted(p["recording_ids"]) for p in listed.json()["items"]}
    assert held == {
        one: [scene.recording_id],
        both: sorted([scene.recording_id, second]),
        empty.json()["id"]: [],
    }
