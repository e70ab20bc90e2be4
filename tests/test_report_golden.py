"""The golden test (issue on reporting): L'Haÿ-les-Roses in 2018, rebuilt through the public
APIs of real processes: 8 cameras, 14 agents with habilitations, 26 clips through ingest, 4
used for judicial procedures and 22 for administrative ones, extracted. The report for 2018
gives the letter's figures (26, 4, 22, 0) and 8 cameras, in JSON, CSV and the letter's text
(addressed to the préfet du Val-de-Marne, dated from L'Haÿ-les-Roses, PDF/A);
replaying the feed changes nothing; the préfecture's table has the commune."""

from __future__ import annotations

import asyncio
import io
import time
from datetime import UTC, datetime, timedelta

import httpx
import pikepdf
from pypdf import PdfReader
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporting.statistics.consumer import Consumer
from services.reporting.statistics.french import day_fr, letter_day
from shared.audit import read_feed
from shared.db import create_sessionmaker, session_scope
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import Live
from tests.fixtures.servers import Servers

CAMERAS = 8
AGENTS = 14
CLIPS = 26


async def _ok(response: httpx.Response) -> dict[str, object]:
    assert response.is_success, f"{response.request.url}: {response.status_code} {response.text}"
    body: dict[str, object] = response.json()
    return body


async def _lhay_les_roses_2018(
    vault: httpx.AsyncClient, ingest: httpx.AsyncClient, servers: Servers
) -> OrgKit:
    kit = await build_org(
        vault, ingest, servers, name="Police municipale de L'Haÿ-les-Roses (essai)",
        insee=fresh_insee(), commune="L'Haÿ-les-Roses",
    )  # fmt: skip
    manage = kit.headers("responsable")
    # 14 agents with habilitations: the three of the kit (one already habilité) and 11 more.
    for person in ("responsable", "wearer"):
        await _ok(await vault.post(
            f"{kit.path}/agents/{kit.agents[person]}/habilitations", headers=manage,
            json={"note": "désignation 2018"},
        ))  # fmt: skip
    for n in range(AGENTS - 3):
        agent = await _ok(await vault.post(
            f"{kit.path}/agents", headers=kit.headers("maire"),
            json={"matricule": f"PM-{n:02d}-{kit.id.hex[:4]}", "first_name": "Agent",
                  "last_name": f"N{n}", "roles": ["agent"]},
        ))  # fmt: skip
        await _ok(await vault.post(
            f"{kit.path}/agents/{agent['id']}/habilitations", headers=manage,
            json={"note": "désignation 2018"},
        ))  # fmt: skip
    serials = [kit.camera_serial]
    for n in range(CAMERAS - 1):
        serial = f"CAM-{n}-{kit.id.hex[:6]}"
        await _ok(await vault.post(
            f"{kit.path}/cameras", headers=manage, json={"serial": serial, "model": "Reveal D3"}
        ))  # fmt: skip
        serials.append(serial)
    kit.tokens["_serials"] = ",".join(serials)
    return kit


async def test_the_2018_report_of_lhay_les_roses(
    live: Live, servers: Servers, engine: AsyncEngine
) -> None:
    async with (
        httpx.AsyncClient(base_url=live.vault.url, timeout=60) as vault,
        httpx.AsyncClient(base_url=live.ingest.url, timeout=60) as ingest,
        httpx.AsyncClient(base_url=live.reporting.url, timeout=60) as reporting,
    ):
        kit = await _lhay_les_roses_2018(vault, ingest, servers)
        serials = kit.tokens["_serials"].split(",")
        wearer = f"WEA-{kit.id.hex[:8]}"
        recordings = []
        for n in range(CLIPS):
            started = datetime(2018, 1 + n % 5, 3 + n, 9, 30, tzinfo=UTC)
            data, metadata = make_clip(
                kit, size=20_000 + n, camera_serial=serials[n % CAMERAS], agent_matricule=wearer,
                started_at=started, ended_at=started + timedelta(minutes=4),
            )  # fmt: skip
            receipt = await _ok(await ingest.post(
                "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
            ))  # fmt: skip
            recordings.append(str(receipt["recording_id"]))

        habilite = kit.headers("habilite")
        plan = [
            ("judiciaire", recordings[:2]),
            ("judiciaire", recordings[2:4]),
            ("administrative", recordings[4:15]),
            ("administrative", recordings[15:]),
        ]
        for n, (kind, attached) in enumerate(plan):
            procedure = await _ok(await vault.post(
                f"{kit.path}/procedures", headers=kit.headers("responsable"),
                json={"type": kind, "reference": f"2018-{kind[:3].upper()}-{n}"},
            ))  # fmt: skip
            for recording in attached:
                await _ok(await vault.post(
                    f"{kit.path}/procedures/{procedure['id']}/recordings", headers=habilite,
                    json={"recording_id": recording, "qualification": "intervention"},
                ))  # fmt: skip
                await _ok(await vault.post(
                    f"{kit.path}/recordings/{recording}/consultations", headers=habilite,
                    json={"motif": "préparation de la procédure", "procedure_id": procedure["id"]},
                ))  # fmt: skip
                extracted = await vault.post(
                    f"{kit.path}/procedures/{procedure['id']}/extractions", headers=habilite,
                    json={"recording_id": recording, "motif": "réquisition",
                          "destinataires": ["Parquet de Créteil"]},
                )  # fmt: skip
                assert extracted.status_code == 200, extracted.text

        evaluated = await reporting.put(
            f"{kit.path}/report/evaluation", headers=kit.headers("responsable"),
            json={"start": "2018-01-01", "end": "2018-12-31",
                  "text": "Les caméras ont apaisé la plupart des interventions."},
        )  # fmt: skip
        assert evaluated.status_code == 204, evaluated.text

        # The figures arrive as the vault sequences the log and reporting follows it.
        path = f"{kit.path}/report"
        deadline = time.monotonic() + 60
        while True:
            report = await _ok(await reporting.get(
                path, headers=kit.headers("maire"), params={"year": 2018}
            ))  # fmt: skip
            used = report["recordings_used"]
            assert isinstance(used, dict)
            if report["recordings"] == CLIPS and used["administrative"] == 22:
                break
            assert time.monotonic() < deadline, report
            await asyncio.sleep(0.5)

        assert (report["recordings"], used["judiciaire"], used["administrative"]) == (26, 4, 22)
        assert (used["formation"], used["disciplinaire"]) == (0, 0)
        assert report["cameras_used"] == 8
        assert report["procedures"] == {"judiciaire": 2, "administrative": 2, "disciplinaire": 0}
        # Consultations and extractions count when they happen (this year), not in 2018.
        assert (report["consultations"], report["extractions"]) == (0, 0)
        now = await _ok(await reporting.get(
            path, headers=kit.headers("maire"), params={"year": datetime.now(UTC).year}
        ))  # fmt: skip
        assert (now["consultations"], now["extractions"], now["recordings"]) == (26, 26, 0)
        assert report["evaluation"] == "Les caméras ont apaisé la plupart des interventions."
        assert [m["recordings"] for m in report["monthly"]] == [6, 5, 5, 5, 5]  # type: ignore[index, union-attr]

        csv = await reporting.get(path, headers=kit.headers("maire"),
                                  params={"year": 2018, "format": "csv"})  # fmt: skip
        header, row = csv.text.strip().splitlines()
        fields = dict(zip(header.split(";"), row.split(";"), strict=True))
        assert fields["enregistrements"] == "26"
        assert fields["enregistrements_procedure_judiciaire"] == "4"
        assert fields["enregistrements_procedure_administrative"] == "22"
        assert fields["enregistrements_formation"] == "0"
        assert fields["cameras_utilisees"] == "8"

        # The letter, as the 2018 one reads: addressee, place and date (in Paris), the figures
        # as sentences, the signature block of a letter not finalised yet.
        before = letter_day(datetime.now(UTC))
        pdf = await reporting.get(path, headers=kit.headers("responsable"),
                                  params={"year": 2018, "format": "pdf"})  # fmt: skip
        after = letter_day(datetime.now(UTC))
        assert pdf.headers["content-type"] == "application/pdf"
        pages = PdfReader(io.BytesIO(pdf.content)).pages
        text = " ".join(" ".join(page.extract_text().split()) for page in pages)
        for line in ("Monsieur le Préfet du Val-de-Marne", "Monsieur le Préfet,", "R. 241-17",
                     "8 caméras individuelles",
                     "26 enregistrements sur interventions",
                     "4 enregistrements pour procédure judiciaire",
                     "22 enregistrements pour procédure administrative",
                     "0 enregistrement pour procédure disciplinaire",
                     "0 enregistrement pour formation",
                     "2 procédures judiciaires, de 2 procédures administratives et de 0 "
                     "procédure disciplinaire",
                     "Les caméras ont apaisé la plupart des interventions.",
                     "Le chef de service de la police municipale",
                     "Projet — non finalisé"):  # fmt: skip
            assert line in text, (line, text)
        assert any(f"L'Haÿ-les-Roses, le {day_fr(day)}" in text for day in (before, after)), text
        assert "département" not in text
        annex = " ".join(pages[-1].extract_text().split())
        for month in ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.",
                      "oct.", "nov.", "déc."):  # fmt: skip
            assert month in annex[annex.index("Enregistrements par mois") :], month
        with pikepdf.open(io.BytesIO(pdf.content)) as document:
            assert document.open_metadata().get("pdfaid:part") == "2"
            for page in document.pages:
                for font in page.Resources.Font.values():
                    assert "/FontFile2" in font.FontDescriptor, font.BaseFont

        # Replaying the whole feed into the statistics changes nothing.
        sessionmaker = create_sessionmaker(engine)
        async with session_scope(sessionmaker) as session:
            everything = await read_feed(session, after_seq=-1, limit=10**7)
            await Consumer(session).apply(everything)
        again = await _ok(await reporting.get(
            path, headers=kit.headers("maire"), params={"year": 2018}
        ))  # fmt: skip
        assert {k: v for k, v in again.items() if k != "generated_at"} == {
            k: v for k, v in report.items() if k != "generated_at"
        }

        # The préfecture of the Val-de-Marne sees the commune in its table; another does not.
        table = await _ok(await reporting.get(
            "/v1/prefectures/94/table", headers=kit.headers("prefecture"), params={"year": 2018}
        ))  # fmt: skip
        rows = {r["organisation"]["id"]: r for r in table["rows"]}  # type: ignore[union-attr]
        assert rows[str(kit.id)]["recordings"] == 26
        other = await reporting.get(
            "/v1/prefectures/91/table", headers=kit.headers("prefecture"), params={"year": 2018}
        )
        assert other.status_code == 404  # as for any id of someone else's
