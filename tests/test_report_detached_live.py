"""What a detach changes in the yearly report (R241-17): nothing that happened. The report
counts the procedures « pour le besoin desquelles il a été procédé à la consultation et à
l'extraction » and the recordings extracted for them, from the `extraction` entries: a
recording attached by mistake and detached before any extraction is not counted; one
extracted and detached afterwards stays counted, since its copy was transmitted."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx

from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import build_org, fresh_insee
from tests.fixtures.live import Live
from tests.fixtures.servers import Servers

YEAR = 2019


async def test_a_detached_recording_counts_only_if_it_was_extracted(
    live: Live, servers: Servers
) -> None:
    async with (
        httpx.AsyncClient(base_url=live.vault.url, timeout=60) as vault,
        httpx.AsyncClient(base_url=live.ingest.url, timeout=60) as ingest,
        httpx.AsyncClient(base_url=live.reporting.url, timeout=60) as reporting,
    ):
        kit = await build_org(vault, ingest, servers, insee=fresh_insee())
        habilite = kit.headers("habilite")
        extracted, mistaken, other = [], [], []
        for n, kept in enumerate((extracted, mistaken, other)):
            started = datetime(YEAR, 3, 4 + n, 10, 0, tzinfo=UTC)
            data, metadata = make_clip(
                kit,
                size=10_000 + n,
                agent_matricule=f"WEA-{kit.id.hex[:8]}",  # no assignment back then
                started_at=started,
                ended_at=started + timedelta(minutes=3),
            )
            receipt = await ingest.post(
                "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
            )
            assert receipt.status_code == 201, receipt.text
            kept.append(str(receipt.json()["recording_id"]))

        async def procedure(kind: str, *recordings: str) -> str:
            opened = await vault.post(
                f"{kit.path}/procedures",
                headers=kit.headers("responsable"),
                json={"type": kind, "reference": f"{kind}-{kit.id.hex[:6]}"},
            )
            assert opened.status_code == 201, opened.text
            path = f"{kit.path}/procedures/{opened.json()['id']}"
            for recording in recordings:
                attached = await vault.post(
                    f"{path}/recordings",
                    headers=habilite,
                    json={"recording_id": recording, "qualification": "intervention"},
                )
                assert attached.status_code == 201, attached.text
            return path

        async def detach(path: str, recording: str) -> None:
            detached = await vault.post(
                f"{path}/recordings/{recording}/detach",
                headers=habilite,
                json={"motif": "sans rapport avec la procédure"},
            )
            assert detached.status_code == 200, detached.text

        judiciaire = await procedure("judiciaire", extracted[0], mistaken[0])
        disciplinaire = await procedure("disciplinaire", other[0])
        package = await vault.post(
            f"{judiciaire}/extractions",
            headers=habilite,
            json={"recording_id": extracted[0], "motif": "réquisition",
                  "destinataires": ["Parquet de Créteil"]},
        )  # fmt: skip
        assert package.status_code == 200, package.text
        await detach(judiciaire, extracted[0])
        await detach(judiciaire, mistaken[0])
        await detach(disciplinaire, other[0])
        # Logged after the detaches: once reporting has counted it, it has read them too.
        consulted = await vault.post(
            f"{kit.path}/recordings/{other[0]}/consultations",
            headers=habilite,
            json={"motif": "contrôle"},
        )
        assert consulted.status_code == 201, consulted.text

        deadline = time.monotonic() + 60
        while True:
            now = (
                await reporting.get(
                    f"{kit.path}/report",
                    headers=kit.headers("maire"),
                    params={"year": datetime.now(UTC).year},
                )
            ).json()
            if now["consultations"] == 1:
                break
            assert time.monotonic() < deadline, now
            await asyncio.sleep(0.5)
        assert now["extractions"] == 1
        report = (
            await reporting.get(
                f"{kit.path}/report", headers=kit.headers("maire"), params={"year": YEAR}
            )
        ).json()
        assert report["recordings"] == 3
        assert report["procedures"] == {"judiciaire": 1, "administrative": 0, "disciplinaire": 0}
        assert report["recordings_used"]["judiciaire"] == 1
        assert report["recordings_used"]["disciplinaire"] == 0
