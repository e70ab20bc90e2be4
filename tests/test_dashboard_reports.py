"""« Rapport annuel » and « Tableau du département » with a real vault and reporting behind
the dashboard: the year's figures as the letter words them, the évaluation, finalisation (then
the évaluation is refused in French), the letter and the table passed on by the dashboard
with the person's token, which never reaches the browser."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dashboard.app import create_app
from tests.fixtures.apps import ClientFactory
from tests.fixtures.directory import OrgKit, build_org
from tests.fixtures.oidc import (
    OidcProvider,
    OneAtATime,
    close_dashboard,
    dashboard_settings,
    person_claims,
)
from tests.fixtures.servers import Servers
from tests.test_dashboard_pages import SUBJECTS, _checked, _csrf
from tests.test_reports import _feed

JWT = re.compile(rb"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")


@dataclass
class Scene:
    kit: OrgKit
    http: httpx.AsyncClient
    provider: OidcProvider

    async def as_role(self, role: str) -> None:
        self.http.cookies.clear()
        subject = SUBJECTS[role].format(tag=self.kit.id.hex[:8])
        claims = person_claims(self.kit.id, role, name=f"Personne {role}")
        if role == "prefecture":
            claims = {"name": "Préfecture", "roles": ["prefecture"], "departement": "94"}
        self.provider.sign_in_as(subject, **claims)
        page = await self.http.get("/connexion")
        assert page.status_code == 200, page.text


@pytest.fixture
async def scene(
    client_for: ClientFactory,
    servers: Servers,
    oidc_provider: OidcProvider,
    connection: AsyncConnection,
) -> AsyncIterator[Scene]:
    async with client_for("vault") as vault:
        async with client_for("ingest", vault_transport=vault._transport) as ingest:  # noqa: SLF001
            kit = await build_org(vault, ingest, servers)
    # Three recordings in March 2025, as the audit log's feed tells reporting.
    march = datetime(2025, 3, 10, 9, tzinfo=UTC)
    await _feed(connection, *((kit.id, march + timedelta(days=n)) for n in range(3)))
    trust = {"auth_issuer": oidc_provider.issuer, "auth_jwks_url": oidc_provider.jwks_url}
    async with client_for("vault", **trust) as vault, client_for("reporting", **trust) as reporting:
        app = create_app(
            dashboard_settings(oidc_provider, servers.database_url),
            vault_transport=OneAtATime(vault._transport, one := asyncio.Lock()),  # noqa: SLF001
            reporting_transport=OneAtATime(reporting._transport, one),  # noqa: SLF001
        )
        async with httpx.AsyncClient(
            base_url=oidc_provider.dashboard_url,
            mounts={oidc_provider.dashboard_url: httpx.ASGITransport(app=app)},
            follow_redirects=True,
            timeout=30,
        ) as http:
            yield Scene(kit=kit, http=http, provider=oidc_provider)
        await close_dashboard(app)


def _no_token(response: httpx.Response) -> None:
    assert not JWT.search(response.content)
    for name, value in response.headers.items():
        assert not JWT.search(value.encode()), name
        assert name.lower() != "authorization"


async def test_the_responsable_writes_the_evaluation_then_finalises(scene: Scene) -> None:
    await scene.as_role("responsable")
    page = await scene.http.get("/rapport", params={"annee": 2025})
    text = _checked(page)
    assert page.status_code == 200, text
    assert '<a href="/rapport" aria-current="page">Rapport annuel</a>' in page.text
    assert "Préfecture</a>" not in text  # not this role's page
    figures = dict(re.findall(r'<th scope="row">([^<]+)</th><td class="number">([^<]+)</td>', text))
    assert figures["Enregistrements sur interventions"] == "3", figures
    assert figures["Enregistrements pour procédure judiciaire"] == "0"
    assert "Caméras utilisées" in figures and "Agents habilités" in figures
    assert 'name="evaluation"' in text and "disabled" not in text
    assert 'action="/rapport/finaliser"' in text and "Rapport finalisé le" not in text

    # The letter, fetched by the dashboard with the person's token.
    letter = await scene.http.get("/rapport/apercu.pdf", params={"annee": 2025})
    assert letter.status_code == 200
    assert letter.headers["content-type"] == "application/pdf"
    assert letter.content.startswith(b"%PDF")
    assert "attachment" in letter.headers["content-disposition"]
    _no_token(letter)

    empty = await scene.http.post(
        "/rapport/evaluation", data={"csrf_token": _csrf(page), "annee": "2025", "evaluation": " "}
    )
    assert empty.status_code == 422
    assert 'href="#champ-evaluation"' in _checked(empty) and 'aria-invalid="true"' in empty.text

    words = "Les caméras ont apaisé plusieurs interventions."
    saved = await scene.http.post(
        "/rapport/evaluation",
        data={"csrf_token": _csrf(page), "annee": "2025", "evaluation": words},
    )
    assert saved.status_code == 200 and str(saved.url).endswith("/rapport?annee=2025#evaluation")
    assert words in _checked(saved)

    done = await scene.http.post(
        "/rapport/finaliser", data={"csrf_token": _csrf(saved), "annee": "2025"}
    )
    text = _checked(done)
    assert done.status_code == 200, text
    assert "Le rapport 2025 est finalisé" in text
    match = re.search(r'href="(/rapport/finalise/[0-9a-f-]+\.pdf)"', text)
    assert match, text
    assert re.search(r'<textarea id="champ-evaluation"[^>]* disabled', done.text)
    sent = await scene.http.get(match.group(1))
    assert sent.status_code == 200
    assert sent.headers["content-type"] == "application/pdf" and sent.content.startswith(b"%PDF")
    _no_token(sent)

    refused = await scene.http.post(
        "/rapport/evaluation",
        data={"csrf_token": _csrf(done), "annee": "2025", "evaluation": "Un ajout"},
    )
    assert refused.status_code == 409
    text = _checked(refused)
    assert "Le rapport 2025 a déjà été finalisé" in text and "ne peut plus être modifiée" in text

    again = await scene.http.post(
        "/rapport/finaliser", data={"csrf_token": _csrf(done), "annee": "2025"}
    )
    assert again.status_code == 409
    assert "il ne peut l'être qu'une fois" in _checked(again)


async def test_a_maire_must_say_who_signs(scene: Scene) -> None:
    await scene.as_role("maire")
    page = await scene.http.get("/rapport", params={"annee": 2025})
    text = _checked(page)
    assert page.status_code == 200, text
    assert 'name="evaluation"' not in text  # the responsable's to write
    assert 'id="champ-signataire_nom"' in text and 'id="champ-signataire_titre"' in text
    missing = await scene.http.post(
        "/rapport/finaliser",
        data={"csrf_token": _csrf(page), "annee": "2025", "signataire_titre": "Maire"},
    )
    assert missing.status_code == 422
    text = _checked(missing)
    assert "Indiquez le nom de la personne qui signe la lettre." in text
    assert 'href="#champ-signataire_nom"' in text
    assert 'value="Maire"' in missing.text  # what was typed stays
    signed = await scene.http.post(
        "/rapport/finaliser",
        data={
            "csrf_token": _csrf(page),
            "annee": "2025",
            "signataire_nom": "Claire Martin",
            "signataire_titre": "Maire de la commune",
        },
    )
    assert signed.status_code == 200
    assert "Le rapport 2025 est finalisé" in _checked(signed)
    # Another person, in another session, learns it from the API's report: when, by whom, the
    # letter as sent, and no form to finalise it again.
    await scene.as_role("responsable")
    page = await scene.http.get("/rapport", params={"annee": 2025})
    text = _checked(page)
    said = re.search(r'<p class="finalised">(.*?)</p>', text, re.S)
    assert said, text
    today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Paris"))
    assert re.fullmatch(
        rf'Rapport finalisé le <time datetime="{today:%Y-%m-%d}T[^"]+">{today.day} \w+ '
        rf"{today.year} à \d+\xa0h\xa0\d\d</time> par Claire Martin, Maire de la commune\.",
        said.group(1),
    ), said.group(1)
    assert re.search(r'href="/rapport/finalise/[0-9a-f-]+\.pdf"', text)
    assert 'action="/rapport/finaliser"' not in text
    assert re.search(r'<textarea id="champ-evaluation"[^>]* disabled', page.text)
    # Another year is not finalised: its form is there.
    other = _checked(await scene.http.get("/rapport", params={"annee": 2024}))
    assert 'action="/rapport/finaliser"' in other and "Rapport finalisé le" not in other
    refused = await scene.http.post(
        "/rapport/evaluation",
        data={"csrf_token": _csrf(page), "annee": "2025", "evaluation": "Trop tard"},
    )
    assert refused.status_code == 409
    text = _checked(refused)
    assert "Le rapport 2025 a déjà été finalisé" in text
    assert re.search(r'href="/rapport/finalise/[0-9a-f-]+\.pdf"', text)
    assert re.search(
        r'<textarea id="champ-evaluation"[^>]* disabled[^>]*></textarea>', refused.text
    )
    assert "Votre texte, qui n'a pas été enregistré :" in text and "Trop tard" in text


async def test_the_prefecture_reads_its_table(scene: Scene) -> None:
    await scene.as_role("prefecture")
    home = await scene.http.get("/")
    assert '<a href="/prefecture">Préfecture</a>' in home.text
    assert "Rapport annuel</a>" not in home.text
    page = await scene.http.get("/prefecture", params={"annee": 2025})
    text = _checked(page)
    assert page.status_code == 200, text
    assert "Tableau du département 94" in text
    name = "Police municipale de L'Haÿ-les-Roses"
    # Other tests' organisations may bear the same name: this one's row is among them.
    rows = re.findall(rf'<th scope="row">{name}</th>(.*?)</tr>', text, re.S)
    assert rows, text
    assert any('<td class="number">3</td>' in row for row in rows), rows
    empty = await scene.http.get("/prefecture", params={"annee": 2024})
    assert "aucune donnée" in _checked(empty)

    csv = await scene.http.get("/prefecture/tableau-2025.csv")
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.strip().splitlines()[-1].startswith("TOTAL")
    # The page's totals row is the API's, as the CSV (and the PDF) give it, column by column,
    # and it is the sum of the rows the page shows.
    header, *_, total = (line.split(";") for line in csv.text.strip().splitlines())
    sent = dict(zip(header, total, strict=True))
    columns = ["enregistrements", "enregistrements_procedure_judiciaire",
               "enregistrements_procedure_administrative", "enregistrements_formation",
               "enregistrements_procedure_disciplinaire", "cameras_utilisees",
               "agents_habilites"]  # fmt: skip
    foot = re.search(r"<tfoot>(.*?)</tfoot>", text, re.S)
    assert foot, text
    assert '<th scope="row">Total du département</th>' in foot.group(1)
    shown = [int(v) for v in re.findall(r'<td class="number">(\d+)</td>', foot.group(1))]
    assert shown == [int(sent[name]) for name in columns], (shown, sent)
    body = re.search(r"<tbody>(.*?)</tbody>", text, re.S)
    assert body
    rows = [
        [int(v) for v in re.findall(r'<td class="number">(\d+)</td>', row)] or [0] * 7
        for row in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)
    ]
    assert shown == [sum(column) for column in zip(*rows, strict=True)]
    assert shown[0] >= 3
    _no_token(csv)
    pdf = await scene.http.get("/prefecture/tableau-2025.pdf")
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    _no_token(pdf)
    # The report is not the préfecture's: the API refuses, the page says so in French.
    refused = await scene.http.get("/rapport", params={"annee": 2025})
    assert refused.status_code == 403
    assert "Votre compte ne désigne aucune organisation : pas de rapport." in _checked(refused)


async def test_the_apis_refusals_are_said_in_french(scene: Scene) -> None:
    # The DPO may not read the report: the reporting API says why, in English; the page says
    # it in French, the API's reason included, and no English word of it.
    await scene.as_role("dpo")
    refused = await scene.http.get("/rapport", params={"annee": 2025})
    assert refused.status_code == 403
    text = _checked(refused)
    assert "Vous n'avez pas accès au rapport annuel." in text
    assert "Précision du service : Cette action demande l'un des rôles maire, responsable." in text
    assert "Les rôles de votre jeton sont : dpo." in text
    notice = re.search(r'<div class="notice notice-error" role="alert">(.*?)</div>', text, re.S)
    assert notice, text
    assert not re.search(r"\b(this|token|needs|roles are)\b", notice.group(1)), notice.group(1)
    # A finalised report that does not exist: the API's 404, in French.
    await scene.as_role("responsable")
    missing = await scene.http.get("/rapport/finalise/00000000-0000-4000-8000-000000000000.pdf")
    assert missing.status_code == 404
    text = _checked(missing)
    assert "Précision du service : Ce rapport finalisé n'existe pas." in text
    assert "no such" not in text
