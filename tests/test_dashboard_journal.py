"""« Journal » (DPO, responsable), on committed data in a fresh database (the vault's CSV
export reads through a session of its own, outside any test transaction): filters narrow the
entries as the API does, the export holds the whole selection, the signed heads download for
a witness, an entry's inclusion proof is checked by the dashboard itself (and a tampered one
fails), the roles the vault refuses get the French page, and every code has its French word."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dashboard.api.client import ApiClient
from services.dashboard.app import create_app as create_dashboard
from services.dashboard.journal.endpoints import PAGE_SIZE, _latest_heads
from services.dashboard.journal.proofs import check_inclusion
from services.dashboard.kit.words import ACTION_LABELS, OUTCOME_LABELS, ROLE_LABELS
from shared.audit import AuditAction, Outcome
from shared.auth import Role
from shared.notes import Note
from tests.fixtures.apps import FACTORIES, serve_in_process, settings_for
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import LIVE_WITNESS
from tests.fixtures.oidc import Browser, OidcProvider, close_dashboard, dashboard_settings
from tests.fixtures.servers import Servers
from tests.test_authorization_matrix import prepare_recordings
from tests.test_dashboard_pages import Scene, _checked

REFUSED = 2 * PAGE_SIZE + 3  # more refused attempts than two pages hold


@dataclass
class Journal:
    scene: Scene
    vault: httpx.AsyncClient  # the same vault and database, for the kit's own tokens

    @property
    def kit(self) -> OrgKit:
        return self.scene.kit

    @property
    def http(self) -> httpx.AsyncClient:
        return self.scene.browser.http

    async def api(self, path: str, role: str = "dpo", **params: Any) -> Any:
        answer = await self.vault.get(
            f"{self.kit.path}{path}", headers=self.kit.headers(role), params=params
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def sign_head(self) -> dict[str, Any]:
        head = await self.vault.post("/v1/audit/heads", headers=self.kit.headers("dpo"))
        assert head.status_code == 200, head.text
        body: dict[str, Any] = head.json()
        return body


@pytest.fixture
async def journal(
    servers: Servers, fresh_engine: AsyncEngine, oidc_provider: OidcProvider
) -> AsyncIterator[Journal]:
    url = fresh_engine.url.render_as_string(hide_password=False)
    create_vault, create_ingest = FACTORIES["vault"][1], FACTORIES["ingest"][1]
    witnesses = str(LIVE_WITNESS.verifier)
    setup = create_vault(
        settings_for("vault", servers, database_url=url, audit_witnesses=witnesses)
    )
    async with serve_in_process(setup) as vault:
        ingest_app = create_ingest(
            settings_for("ingest", servers, database_url=url),
            vault_transport=vault._transport,  # noqa: SLF001
        )
        async with serve_in_process(ingest_app) as ingest:
            kit = await build_org(vault, ingest, servers, insee=fresh_insee())
            await prepare_recordings(vault, ingest, kit)
        for _ in range(REFUSED):  # a wearer may not list the agents: each attempt is logged
            refused = await vault.get(f"{kit.path}/agents", headers=kit.headers("agent"))
            assert refused.status_code == 403
        # The dashboard's vault: the same database, trusting the OpenID provider's tokens.
        trusting = create_vault(
            settings_for(
                "vault",
                servers,
                database_url=url,
                audit_witnesses=witnesses,
                auth_issuer=oidc_provider.issuer,
                auth_jwks_url=oidc_provider.jwks_url,
            )
        )
        async with serve_in_process(trusting) as dashboard_vault:
            app = create_dashboard(
                dashboard_settings(oidc_provider, servers.database_url),
                vault_transport=dashboard_vault._transport,  # noqa: SLF001
            )
            async with httpx.AsyncClient(
                base_url=oidc_provider.dashboard_url,
                mounts={oidc_provider.dashboard_url: httpx.ASGITransport(app=app)},
                follow_redirects=True,
                timeout=60,
            ) as http:
                browser = Browser(http=http, provider=oidc_provider, app=app)
                yield Journal(scene=Scene(kit=kit, browser=browser), vault=vault)
            await close_dashboard(app)


def _rows(text: str) -> list[str]:
    """The table's rows (the <tbody>), each as its HTML."""
    body = re.search(r"<tbody>(.*?)</tbody>", text, re.S)
    return re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S) if body else []


def _total(text: str) -> int:
    match = re.search(r'<h2 id="resultats-titre">(\d+) entrée', text)
    assert match, text
    return int(match.group(1))


async def _page(journal: Journal, path: str, status: int = 200) -> str:
    page = await journal.http.get(path)
    text = _checked(page)
    assert page.status_code == status, (path, page.status_code, text[-2000:])
    return text


async def test_filters_narrow_the_entries_as_the_api_does(journal: Journal) -> None:
    kit = journal.kit
    await journal.scene.as_role("dpo")
    everything = await journal.api("/audit/entries", limit=1)
    text = await _page(journal, "/journal")
    assert _total(text) == everything["total"] > 2 * PAGE_SIZE
    assert len(_rows(text)) == PAGE_SIZE
    assert "Page 1 sur" in text and 'rel="next"' in text

    wanted = {
        "action=access_refused": {"action": "access_refused"},
        f"auteur=habilite-{kit.id.hex[:8]}": {"actor": f"habilite-{kit.id.hex[:8]}"},
        f"enregistrement={kit.recording_id}": {"recording_id": str(kit.recording_id)},
        "action=consultation&auteur=nobody": {"action": "consultation", "actor": "nobody"},
    }
    for query, params in wanted.items():
        expected = (await journal.api("/audit/entries", limit=1, **params))["total"]
        text = await _page(journal, f"/journal?{query}")
        assert _total(text) == expected < everything["total"], query
        assert len(_rows(text)) == min(expected, PAGE_SIZE), query

    refused = _rows(await _page(journal, "/journal?action=access_refused&page=2"))
    assert len(refused) == PAGE_SIZE
    assert all("Accès refusé" in row and "<strong>Refusée</strong>" in row for row in refused)
    assert all("Agent porteur de caméra" in row for row in refused)  # the role, in French
    # The vault logged its reason in English; the journal says it in French.
    assert all("Raison :</span> Cette action demande" in row for row in refused), refused[0]
    assert not any("this action needs" in row for row in refused)

    history = await _page(journal, f"/journal?enregistrement={kit.recording_id}")
    assert "Collecte" in history and "Consultation" in history
    assert f'href="/enregistrements/{kit.recording_id}"' in history
    assert "collecte<" not in history  # no raw code in a cell

    # Days in Paris: the period that holds today holds everything, tomorrow nothing.
    today = date.today()
    around = f"du={today - timedelta(days=1)}&au={today + timedelta(days=1)}"
    assert _total(await _page(journal, f"/journal?{around}")) == everything["total"]
    later = f"du={today + timedelta(days=2)}&au={today + timedelta(days=3)}"
    assert _total(await _page(journal, f"/journal?{later}")) == 0

    wrong = await _page(journal, "/journal?enregistrement=pas-un-identifiant", 422)
    assert 'href="#champ-enregistrement"' in wrong and 'aria-invalid="true"' in wrong
    inverted = await _page(journal, f"/journal?du={today}&au={today - timedelta(days=1)}", 422)
    assert "La date de fin doit être le jour de début ou un jour après." in inverted


async def test_the_export_holds_the_whole_selection(journal: Journal) -> None:
    await journal.scene.as_role("responsable")
    listing = await _page(journal, "/journal?action=access_refused")
    assert 'href="/journal/export.csv?action=access_refused"' in listing
    for query, params in (("action=access_refused", {"action": "access_refused"}), ("", {})):
        expected = (await journal.api("/audit/entries", limit=1, **params))["total"]
        assert expected > PAGE_SIZE  # beyond one page of the journal
        exported = await journal.http.get(f"/journal/export.csv?{query}")
        assert exported.status_code == 200, exported.text
        assert exported.headers["content-type"].startswith("text/csv")
        assert exported.headers["content-disposition"].startswith("attachment;")
        assert "content-length" not in exported.headers  # streamed as it comes, not held
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert len(rows) == expected, query
        if params:
            assert {row["action"] for row in rows} == {"access_refused"}

    wrong = await journal.http.get("/journal/export.csv?du=hier")
    assert wrong.status_code == 422
    assert 'href="#champ-du"' in _checked(wrong)


async def test_signed_heads_download_for_a_witness(journal: Journal) -> None:
    head = await journal.sign_head()
    await journal.scene.as_role("dpo")
    text = await _page(journal, "/journal/tetes")
    assert head["root_hash"] in text
    assert "temoin witness cosign" in text
    key = (await journal.vault.get("/v1/audit/public-key")).json()
    assert key["public_key"] in text

    witness = journal.kit.headers("prefecture")
    every = (await journal.vault.get("/v1/audit/heads", headers=witness)).json()
    downloaded = await journal.http.get("/journal/tetes.json")
    assert downloaded.status_code == 200
    assert downloaded.headers["content-disposition"].startswith("attachment;")
    assert json.loads(downloaded.text) == every  # what `temoin audit heads` writes

    checkpoint = await journal.http.get("/journal/tetes/checkpoint.txt")
    expected = await journal.vault.get("/v1/audit/checkpoint", headers=witness)
    assert checkpoint.status_code == 200
    assert checkpoint.text == expected.text and checkpoint.text.startswith(key["origin"])
    sized = await journal.http.get(f"/journal/tetes/checkpoint.txt?taille={head['tree_size']}")
    assert sized.text == head["checkpoint"]

    # The witness the vault knows: it has cosigned nothing yet, then the latest head.
    assert "N'a encore rien contresigné" in text and LIVE_WITNESS.name in text
    note = Note.parse(head["checkpoint"])
    cosignature = LIVE_WITNESS.sign(note.text, timestamp=int(time.time()))
    cosigned = await journal.vault.post(
        "/v1/audit/cosignatures",
        headers=journal.kit.headers("dpo"),
        json={"tree_size": head["tree_size"], "cosignature": cosignature.line().rstrip("\n")},
    )
    assert cosigned.status_code == 201, cosigned.text
    assert "<td>À jour</td>" in await _page(journal, "/journal/tetes")
    await journal.vault.get(f"{journal.kit.path}/agents", headers=journal.kit.headers("agent"))
    later = await journal.sign_head()
    behind = later["tree_size"] - head["tree_size"]
    plural = "s" if behind != 1 else ""
    assert f"{behind} entrée{plural} signée{plural} depuis sa dernière" in await _page(
        journal, "/journal/tetes"
    )

    # The maire may keep heads as a witness (the vault says so), not read the entries.
    await journal.scene.as_role("maire")
    assert head["root_hash"] in await _page(journal, "/journal/tetes")


async def test_an_entry_proof_is_checked_here_and_a_tampered_one_fails(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    await journal.sign_head()
    consultation = (await journal.api("/audit/entries", action="consultation"))["items"][0]
    entry_id = consultation["entry_id"]
    await journal.scene.as_role("dpo")
    listing = await _page(journal, "/journal?action=consultation")
    assert f'href="/journal/preuve?entree={entry_id}"' in listing

    text = await _page(journal, f"/journal/preuve?entree={entry_id}")
    match = re.search(
        r"Preuve vérifiée : l'entrée figure dans le journal signé de taille (\d+), "
        r"tête signée le <time",
        text,
    )
    assert match, text
    proof = await journal.api(f"/audit/entries/{entry_id}/proof", tree_size=match.group(1))
    assert proof["head"]["root_hash"] in text and proof["audit_path"]

    # The check itself, on the vault's proof and on altered copies of it.
    key = (await journal.vault.get("/v1/audit/public-key")).json()["public_key"]
    assert check_inclusion(proof, key).verified
    path = copy.deepcopy(proof)
    path["audit_path"][0] = "0" * 64
    problems = check_inclusion(path, key).problems
    assert len(problems) == 1 and problems[0].startswith("Le chemin d'audit ne mène pas"), problems
    entry = copy.deepcopy(proof)
    entry["entry"]["motif"] = "un autre motif"
    assert any("contenu a été modifié" in p for p in check_inclusion(entry, key).problems)
    other = "A" * 43 + "="  # 32 zero bytes: a key that signed nothing
    assert any("signature de la tête" in p for p in check_inclusion(proof, other).problems)
    assert not check_inclusion({"entry": {}}, key).verified

    # The page, when the vault's answer has been tampered with on its way.
    original = ApiClient.get

    async def tampered(self: ApiClient, path: str, what: str, **kwargs: Any) -> Any:
        answer = await original(self, path, what, **kwargs)
        if path.endswith("/proof"):
            answer["audit_path"][-1] = answer["audit_path"][-1][::-1]
        return answer

    monkeypatch.setattr(ApiClient, "get", tampered)
    failed = await _page(journal, f"/journal/preuve?entree={entry_id}")
    assert "La preuve ne se vérifie pas" in failed and "Preuve vérifiée" not in failed
    monkeypatch.undo()

    download = await journal.http.get(f"/journal/preuve.json?entree={entry_id}")
    assert download.json()["entry"]["entry_id"] == entry_id
    unknown = await _page(journal, f"/journal/preuve?entree={'0' * 32}", 422)
    assert "Aucune entrée de ce numéro" in unknown and 'href="#champ-entree"' in unknown
    assert 'aria-invalid="true"' in await _page(journal, "/journal/preuve?entree=42", 422)


async def test_roles_the_vault_refuses_get_the_french_page(journal: Journal) -> None:
    entry = journal.kit.entry_id
    for role in ("dpo", "responsable"):
        home = _checked(await journal.scene.as_role(role))
        assert 'href="/journal"' in home, role
    for role in ("maire", "habilite", "agent"):
        home = _checked(await journal.scene.as_role(role))
        assert 'href="/journal"' not in home, role
        for path in ("/journal", "/journal/export.csv", f"/journal/preuve?entree={entry}"):
            text = await _page(journal, path, 403)
            assert "Demande refusée" in text and "Vous n'avez pas accès" in text, (role, path)
        heads = await journal.http.get("/journal/tetes")
        assert heads.status_code == (200 if role == "maire" else 403), role
    await journal.scene.as_role("prefecture")
    assert "Votre compte ne désigne aucune organisation" in await _page(journal, "/journal", 403)
    assert (await journal.http.get("/journal/tetes")).status_code == 200


async def test_the_recording_history_speaks_french(journal: Journal) -> None:
    await journal.scene.as_role("dpo")
    text = await _page(journal, f"/enregistrements/{journal.kit.recording_id}")
    history = text[text.index('id="historique-titre"') :]
    assert "<td>Collecte</td>" in history and "<td>Consultation</td>" in history
    assert "— Agent habilité" in history or "— Responsable du service" in history


@pytest.mark.parametrize(
    ("codes", "labels"),
    [(AuditAction, ACTION_LABELS), (Outcome, OUTCOME_LABELS), (Role, ROLE_LABELS)],
)
def test_every_code_has_a_french_word(codes: Any, labels: dict[str, str]) -> None:
    """A new audit action, outcome or role cannot ship without its label."""
    missing = [member.value for member in codes if member.value not in labels]
    assert missing == []
    assert all(labels[m.value] and labels[m.value] != m.value for m in codes)
    assert set(labels) == {m.value for m in codes}  # no label for a code that is gone


class _Heads:
    """The vault's GET /v1/audit/heads over heads of the given sizes (smallest first)."""

    def __init__(self, sizes: list[int]) -> None:
        self.heads = [
            {"tree_size": size, "previous_size": before}
            for before, size in zip([0, *sizes], sizes, strict=False)
        ]
        self.calls = 0

    async def get(self, path: str, what: str, params: dict[str, int]) -> list[dict[str, int]]:
        assert path == "/v1/audit/heads"
        self.calls += 1
        after = [h for h in self.heads if h["tree_size"] > params["after_size"]]
        return after[: params["limit"]]


@pytest.mark.parametrize(
    ("sizes", "calls"),
    [
        (list(range(1, 3001)), 1),  # a head per entry: the last page holds them all
        (list(range(500, 10_001, 500)), 9),  # sparse heads: reached by their links
        ([7, 9], 1),  # fewer heads than asked
    ],
)
async def test_the_latest_heads_are_found_newest_first(sizes: list[int], calls: int) -> None:
    vault = _Heads(sizes)
    found = await _latest_heads(vault, sizes[-1], 10)  # type: ignore[arg-type]
    assert [h["tree_size"] for h in found] == sizes[::-1][:10]
    assert vault.calls == calls
