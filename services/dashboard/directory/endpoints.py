from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.dashboard.api.client import ApiClient, ApiProblem
from services.dashboard.api.deps import VaultDep, organisation_path
from services.dashboard.auth.sessions import CsrfChecked, Person, PersonDep
from services.dashboard.kit.templating import pages_of

router = APIRouter(include_in_schema=False)
CAMERA_STATUSES = {"active": "en service", "retired": "retirée", "lost": "perdue"}
STATION_STATUSES = {"active": "en service", "revoked": "révoquée"}


def _org(person: Person) -> str:
    return organisation_path(person, "pas d'annuaire")


async def _section(vault: ApiClient, path: str, what: str, **params: Any) -> dict[str, Any]:
    """One list of the page: its items, or the vault's refusal to show beside its heading."""
    try:
        found: dict[str, Any] = await vault.get(path, what, params={"limit": 500, **params})
    except ApiProblem as problem:
        if problem.status != 403:
            raise
        return {"items": [], "refused": problem.message}
    return {"items": found["items"], "refused": None}


async def _page(
    request: Request,
    person: Person,
    vault: ApiClient,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    message: str | None = None,
) -> Response:
    org = _org(person)
    agents = await _section(vault, f"{org}/agents", "la liste des agents")
    habilitations = await _section(vault, f"{org}/habilitations", "les habilitations", active=True)
    by_agent: dict[str, dict[str, Any]] = {h["agent_id"]: h for h in habilitations["items"]}
    return pages_of(request).render(
        request,
        "directory/annuaire.html",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + "Annuaire",
        agents=agents,
        habilitations=habilitations,
        by_agent=by_agent,
        cameras=await _section(vault, f"{org}/cameras", "la liste des caméras"),
        stations=await _section(vault, f"{org}/stations", "la liste des stations"),
        camera_statuses=CAMERA_STATUSES,
        station_statuses=STATION_STATUSES,
        errors=errors or {},
        message=message,
    )


@router.get("/annuaire", name="directory")
async def directory(request: Request, person: PersonDep, vault: VaultDep) -> Response:
    return await _page(request, person, vault)


@router.post("/annuaire/agents/{agent_id}/habilitation", dependencies=[CsrfChecked])
async def designate(
    request: Request,
    agent_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    note: Annotated[str, Form()] = "",
) -> Response:
    """Designate an agent (R241-12): the vault decides whether this person may."""
    body = {"note": note.strip() or None}
    try:
        await vault.post(
            f"{_org(person)}/agents/{agent_id}/habilitations", "la désignation d'agents", json=body
        )
    except ApiProblem as problem:
        if problem.status not in (403, 409, 422):
            raise
        return await _page(request, person, vault, problem.status, message=_said(problem))
    return RedirectResponse("/annuaire#agents", status_code=303)


@router.post("/annuaire/habilitations/{habilitation_id}/retrait", dependencies=[CsrfChecked])
async def withdraw(
    request: Request,
    habilitation_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    motif: Annotated[str, Form()] = "",
) -> Response:
    if len(motif.strip()) < 3:
        errors = {
            f"retrait-{habilitation_id}": "Indiquez le motif du retrait (au moins 3 caractères)."
        }
        return await _page(request, person, vault, 422, errors=errors)
    try:
        await vault.post(
            f"{_org(person)}/habilitations/{habilitation_id}/withdraw",
            "le retrait des habilitations",
            json={"reason": motif.strip()},
        )
    except ApiProblem as problem:
        if problem.status not in (403, 409, 422):
            raise
        return await _page(request, person, vault, problem.status, message=_said(problem))
    return RedirectResponse("/annuaire#agents", status_code=303)


def _said(problem: ApiProblem) -> str:
    return problem.message + (f" Précision du service : {problem.detail}" if problem.detail else "")
