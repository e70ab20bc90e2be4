"""Journal (DPO, responsable): the audit trail (R241-14) with its filters and its CSV export,
the signed tree heads a witness keeps, and the check of one entry's inclusion proof.

Who may read what is the vault's answer: entries and proofs for the DPO and the responsable,
tree heads and witnesses also for the maire and the préfecture (services/vault/audit)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from services.dashboard.api.client import ApiClient, ApiProblem, problem_of
from services.dashboard.api.deps import VaultDep, organisation_path
from services.dashboard.auth.sessions import Person, PersonDep
from services.dashboard.journal.proofs import check_inclusion
from services.dashboard.kit.templating import PARIS, pages_of
from services.dashboard.kit.words import ACTION_LABELS

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
LATEST_HEADS = 10
HEADS_PAGE = 1000  # the vault's largest page of heads
STALE_S = 86_400  # a witness silent for a day: the alert docs/audit.md suggests
# The vault's query parameters, as the form names them (for errors shown beside the field).
FORM_NAMES = {
    "since": "du",
    "until": "au",
    "action": "action",
    "actor": "auteur",
    "recording_id": "enregistrement",
}
UNAVAILABLE = "Le service est momentanément indisponible : réessayez dans un instant."


def _org(person: Person) -> str:
    return organisation_path(person, "aucun journal à afficher")


def _day(value: str, end: bool = False) -> datetime | None:
    """A day typed in the form, in Paris, as the API's UTC instant: its first moment, or (for
    the end of a period) the next day's, so that « au 3 mars » includes the whole 3 March."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    if end:
        day += timedelta(days=1)
    return datetime.combine(day, time(0), tzinfo=PARIS)


class Selection:
    """The filters of the form, checked, and the vault's query parameters they make."""

    def __init__(self, du: str, au: str, action: str, auteur: str, enregistrement: str) -> None:
        self.form = {
            "du": du.strip(),
            "au": au.strip(),
            "action": action if action in ACTION_LABELS else "",
            "auteur": auteur.strip(),
            "enregistrement": enregistrement.strip(),
        }
        self.params: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        since = _day(self.form["du"]) if self.form["du"] else None
        until = _day(self.form["au"], end=True) if self.form["au"] else None
        if self.form["du"] and since is None:
            self.errors["du"] = "Indiquez une date de début valide, par exemple 03/03/2026."
        if self.form["au"] and until is None:
            self.errors["au"] = "Indiquez une date de fin valide, par exemple 31/03/2026."
        if since is not None and until is not None and until <= since:
            self.errors["au"] = "La date de fin doit être le jour de début ou un jour après."
        if since is not None:
            self.params["since"] = since.isoformat()
        if until is not None:
            self.params["until"] = until.isoformat()
        if self.form["action"]:
            self.params["action"] = self.form["action"]
        if self.form["auteur"]:
            self.params["actor"] = self.form["auteur"]
        if self.form["enregistrement"]:
            try:
                self.params["recording_id"] = str(uuid.UUID(self.form["enregistrement"]))
            except ValueError:
                self.errors["enregistrement"] = (
                    "Indiquez l'identifiant complet d'un enregistrement (32 chiffres et lettres "
                    "de a à f, par exemple celui de l'adresse de sa page)."
                )

    @property
    def query(self) -> str:
        """The filters in a link (pages, export), without the empty ones."""
        return urlencode({k: v for k, v in self.form.items() if v})

    def refused(self, problem: ApiProblem) -> None:
        """The vault's 422, each problem beside the field it names."""
        for name, text in problem.fields.items():
            self.errors[FORM_NAMES.get(name, name)] = f"Valeur refusée : {text}"
        if not problem.fields:
            self.errors["du"] = problem.detail or problem.message


@router.get("/journal", name="journal")
async def journal(
    request: Request,
    person: PersonDep,
    vault: VaultDep,
    du: str = "",
    au: str = "",
    action: str = "",
    auteur: str = "",
    enregistrement: str = "",
    page: int = 1,
) -> Response:
    selection = Selection(du, au, action, auteur, enregistrement)
    page = max(page, 1)
    results: dict[str, Any] = {"items": [], "total": 0}
    if not selection.errors:
        try:
            results = await vault.get(
                f"{_org(person)}/audit/entries",
                "le journal",
                params={
                    **selection.params,
                    "limit": PAGE_SIZE,
                    "offset": (page - 1) * PAGE_SIZE,
                },
            )
        except ApiProblem as problem:
            if problem.status != 422:
                raise
            selection.refused(problem)
    total = int(results.get("total", 0))
    return pages_of(request).render(
        request,
        "journal/journal.html",
        status_code=422 if selection.errors else 200,
        title=("Erreur : " if selection.errors else "") + "Journal",
        items=results.get("items", []),
        total=total,
        page=page,
        pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
        first=(page - 1) * PAGE_SIZE + 1,
        filters=selection.form,
        query=selection.query,
        errors=selection.errors,
        actions=ACTION_LABELS,
    )


async def _stream(vault: ApiClient, path: str, what: str, params: dict[str, Any]) -> httpx.Response:
    """An answer of the vault read as it comes (an export has no bound): its refusal, read
    whole, becomes an ApiProblem like any other."""
    outgoing = vault.http.build_request(
        "GET", path, params=params, headers={"Authorization": f"Bearer {vault.token}"}
    )
    try:
        answer = await vault.http.send(outgoing, stream=True)
    except Exception as error:  # the transport failed: said like any unavailable service
        raise ApiProblem(503, UNAVAILABLE) from error
    if answer.is_error:
        await answer.aread()
        await answer.aclose()
        raise problem_of(answer, what)
    return answer


@router.get("/journal/export.csv", name="journal_export")
async def export(
    request: Request,
    person: PersonDep,
    vault: VaultDep,
    du: str = "",
    au: str = "",
    action: str = "",
    auteur: str = "",
    enregistrement: str = "",
) -> Response:
    """The whole selection as the vault's CSV, passed on chunk by chunk (never held whole)."""
    selection = Selection(du, au, action, auteur, enregistrement)
    if selection.errors:
        return await journal(request, person, vault, du, au, action, auteur, enregistrement)
    answer = await _stream(
        vault,
        f"{_org(person)}/audit/entries",
        "l'export du journal",
        {**selection.params, "format": "csv"},
    )
    stamp = datetime.now(PARIS).strftime("%Y-%m-%d-%Hh%M")
    return StreamingResponse(
        answer.aiter_bytes(),  # decoded: the vault may compress, the browser gets plain CSV
        media_type=answer.headers.get("content-type", "text/csv; charset=utf-8"),
        headers={"Content-Disposition": f'attachment; filename="journal-{stamp}.csv"'},
        background=BackgroundTask(answer.aclose),
    )


# --- signed tree heads, for a witness -----------------------------------------------------


async def _latest_heads(vault: ApiClient, latest: int, count: int) -> list[dict[str, Any]]:
    """The ``count`` latest signed heads, newest first. The vault lists heads by size from
    a given size up: one page covers the last HEADS_PAGE sizes (sizes only grow, so it holds
    every head among them); older ones are reached by each head's link to the one before."""
    found: list[dict[str, Any]] = await vault.get(
        "/v1/audit/heads",
        "les têtes signées du journal",
        params={"after_size": max(latest - HEADS_PAGE, -1), "limit": HEADS_PAGE},
    )
    heads = found[-count:][::-1]
    while heads and len(heads) < count and (heads[-1].get("previous_size") or 0) > 0:
        before: list[dict[str, Any]] = await vault.get(
            "/v1/audit/heads",
            "les têtes signées du journal",
            params={"after_size": int(heads[-1]["previous_size"]) - 1, "limit": 1},
        )
        if not before or before[0]["tree_size"] >= heads[-1]["tree_size"]:
            break
        heads.append(before[0])
    return heads


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = int(seconds // 60)
    if minutes < 1:
        return "il y a moins d'une minute"
    if minutes < 60:
        return f"il y a {minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"il y a {hours} h"
    return f"il y a {hours // 24} jours"


@router.get("/journal/tetes", name="journal_heads")
async def heads(request: Request, person: PersonDep, vault: VaultDep) -> Response:
    status = await vault.get("/v1/audit/witnesses", "l'état des témoins du journal")
    latest = status.get("latest_head")
    found = [] if latest is None else await _latest_heads(vault, int(latest), LATEST_HEADS)
    key = await vault.get("/v1/audit/public-key", "la clé publique du journal")
    witnesses = [
        {
            **witness,
            "age": _age(witness.get("age_s")),
            "behind": None
            if witness.get("tree_size") is None or latest is None
            else int(latest) - int(witness["tree_size"]),
            "stale": witness.get("age_s") is None or float(witness["age_s"]) > STALE_S,
        }
        for witness in status.get("witnesses", [])
    ]
    return pages_of(request).render(
        request,
        "journal/tetes.html",
        title="Têtes signées du journal",
        heads=found,
        latest=latest,
        witnesses=witnesses,
        key=key,
        may_read_entries=person.has("dpo", "responsable"),
    )


@router.get("/journal/tetes.json", name="journal_heads_json")
async def heads_json(person: PersonDep, vault: VaultDep) -> Response:
    """Every signed head, as `temoin audit heads` writes them (`temoin audit check --heads`
    reads this file). The first page is asked before answering, so a refusal is a page."""
    what = "les têtes signées du journal"
    first: list[dict[str, Any]] = await vault.get(
        "/v1/audit/heads", what, params={"after_size": -1, "limit": HEADS_PAGE}
    )

    async def pages() -> AsyncIterator[str]:
        page, separator = first, "\n  "
        yield "["
        while page:
            for head in page:
                yield separator + json.dumps(head, ensure_ascii=False)
                separator = ",\n  "
            if len(page) < HEADS_PAGE:
                break
            page = await vault.get(
                "/v1/audit/heads",
                what,
                params={"after_size": page[-1]["tree_size"], "limit": HEADS_PAGE},
            )
        yield "\n]\n"

    return StreamingResponse(
        pages(),
        media_type="application/json",
        headers={"Content-Disposition": 'attachment; filename="tetes-signees.json"'},
    )


@router.get("/journal/tetes/checkpoint.txt", name="journal_checkpoint")
async def checkpoint(person: PersonDep, vault: VaultDep, taille: int | None = None) -> Response:
    """The log's signed checkpoint (C2SP), with the witnesses' cosignatures: the text
    `temoin witness cosign` checks."""
    params = {} if taille is None else {"tree_size": taille}
    answer = await vault.request(
        "GET", "/v1/audit/checkpoint", "ce point de contrôle du journal", params=params
    )
    name = "checkpoint.txt" if taille is None else f"checkpoint-{taille}.txt"
    return Response(
        answer.text,
        media_type="text/plain; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- one entry's inclusion proof ----------------------------------------------------------


NOT_IN_LOG = (
    "Aucune entrée de ce numéro ne figure dans une tête signée du journal de votre "
    "organisation. Une entrée toute récente y entre en quelques secondes : réessayez dans un "
    "instant."
)


@router.get("/journal/preuve", name="journal_proof")
async def proof(request: Request, person: PersonDep, vault: VaultDep, entree: str = "") -> Response:
    """Fetch an entry's inclusion proof and check it here, with the log's public key."""
    errors: dict[str, str] = {}
    found: dict[str, Any] | None = None
    result = None
    key: dict[str, Any] | None = None
    if entree.strip():
        try:
            entry_id = uuid.UUID(entree.strip())
        except ValueError:
            errors["entree"] = (
                "Indiquez le numéro complet d'une entrée du journal (32 chiffres et lettres "
                "de a à f)."
            )
        else:
            try:
                found = await vault.get(
                    f"{_org(person)}/audit/entries/{entry_id}/proof",
                    "la preuve de cette entrée",
                )
            except ApiProblem as problem:
                if problem.status != 404:
                    raise
                errors["entree"] = NOT_IN_LOG
            if found is not None:
                key = await vault.get("/v1/audit/public-key", "la clé publique du journal")
                result = check_inclusion(found, str(key["public_key"]))
    return pages_of(request).render(
        request,
        "journal/preuve.html",
        status_code=422 if errors else 200,
        title=("Erreur : " if errors else "") + "Vérifier une entrée du journal",
        entree=entree.strip(),
        errors=errors,
        proof=found,
        result=result,
        key=key,
    )


@router.get("/journal/preuve.json", name="journal_proof_json")
async def proof_json(person: PersonDep, vault: VaultDep, entree: uuid.UUID) -> Response:
    """The proof as the vault gives it, for `temoin audit check` on a witness's machine."""
    answer = await vault.request(
        "GET", f"{_org(person)}/audit/entries/{entree}/proof", "la preuve de cette entrée"
    )
    return Response(
        answer.content,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="preuve-{entree}.json"'},
    )
