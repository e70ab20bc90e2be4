"""Annuaire (maire, responsable; read by the DPO and the agents habilités as the vault allows):
agents, habilitations and their history (R241-12), cameras and who wore them when (R241-10),
docking stations registered from their public key and revoked. Every form posts to the vault;
its refusals are shown in French, beside the field they name."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.dashboard.api.client import ApiClient, ApiProblem
from services.dashboard.api.deps import VaultDep, organisation_path
from services.dashboard.auth.sessions import CsrfChecked, Person, PersonDep
from services.dashboard.directory.forms import (
    AGENT_ROLES,
    CAMERA_STATUSES,
    FIELD_HELP,
    STATION_STATUSES,
    agent_body,
    agent_changes,
    assignment_body,
    paris_instant,
    paris_local,
    public_key_text,
    said,
    said_in_french,
)
from services.dashboard.kit.forms import too_short
from services.dashboard.kit.templating import pages_of

router = APIRouter(include_in_schema=False)
REFUSALS = (403, 404, 409)  # said at the top of the page; 422 beside its fields
Text = Annotated[str, Form()]
Roles = Annotated[list[str] | None, Form()]


def _org(person: Person) -> str:
    return organisation_path(person, "pas d'annuaire")


async def _section(vault: ApiClient, path: str, what: str, **params: Any) -> dict[str, Any]:
    """One list of a page: its items, or the vault's refusal to show beside its heading."""
    try:
        found: dict[str, Any] = await vault.get(path, what, params={"limit": 500, **params})
    except ApiProblem as problem:
        if problem.status != 403:
            raise
        return {"items": [], "refused": problem.message}
    return {"items": found["items"], "refused": None}


def _render(
    request: Request,
    template: str,
    title: str,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    **context: Any,
) -> Response:
    return pages_of(request).render(
        request,
        f"directory/{template}",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + title,
        errors=errors or {},
        message=message,
        agent_roles=AGENT_ROLES,
        camera_statuses=CAMERA_STATUSES,
        station_statuses=STATION_STATUSES,
        now_local=paris_local(datetime.now(UTC)),
        **context,
    )


def _refused(problem: ApiProblem, names: dict[str, str] | None = None) -> dict[str, Any]:
    """What a page shows for a refusal it expects: the fields in error, or one sentence."""
    if problem.status == 422 and problem.fields:
        return {"status_code": 422, "errors": said_in_french(problem, names)}
    if problem.status in (*REFUSALS, 422):
        return {"status_code": problem.status, "message": said(problem)}
    raise problem


def _names(agents: list[dict[str, Any]]) -> dict[str, str]:
    return {a["id"]: f"{a['first_name']} {a['last_name']}" for a in agents}


def _people(agents: list[dict[str, Any]]) -> dict[str, str]:
    """Who did it, by the subject the vault records: the agent's name when the directory knows
    it (a maire or a DPO is no agent: their subject is shown)."""
    return {a["subject"]: f"{a['first_name']} {a['last_name']}" for a in agents if a["subject"]}


# --- the directory at a glance ---------------------------------------------------------------


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
    # Every habilitation, active and withdrawn, newest first: the history R241-12 asks for.
    habilitations = await _section(vault, f"{org}/habilitations", "les habilitations")
    by_agent = {h["agent_id"]: h for h in reversed(habilitations["items"]) if h["active"]}
    return _render(
        request,
        "annuaire.html",
        "Annuaire",
        status_code,
        errors,
        message,
        agents=agents,
        habilitations=habilitations,
        by_agent=by_agent,
        names=_names(agents["items"]),
        people=_people(agents["items"]),
        cameras=await _section(vault, f"{org}/cameras", "la liste des caméras"),
        stations=await _section(vault, f"{org}/stations", "la liste des stations"),
    )


@router.get("/annuaire", name="directory")
async def directory(request: Request, person: PersonDep, vault: VaultDep) -> Response:
    return await _page(request, person, vault)


@router.post("/annuaire/agents/{agent_id}/habilitation", dependencies=[CsrfChecked])
async def designate(
    request: Request, agent_id: uuid.UUID, person: PersonDep, vault: VaultDep, note: Text = ""
) -> Response:
    """Designate an agent (R241-12): the vault decides whether this person may."""
    body = {"note": note.strip() or None}
    try:
        await vault.post(
            f"{_org(person)}/agents/{agent_id}/habilitations", "la désignation d'agents", json=body
        )
    except ApiProblem as problem:
        if problem.status not in (*REFUSALS, 422):
            raise
        return await _page(request, person, vault, problem.status, message=said(problem))
    return RedirectResponse("/annuaire#agents", status_code=303)


@router.post("/annuaire/habilitations/{habilitation_id}/retrait", dependencies=[CsrfChecked])
async def withdraw(
    request: Request,
    habilitation_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    motif: Text = "",
) -> Response:
    if too_short(motif):
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
        if problem.status not in (*REFUSALS, 422):
            raise
        return await _page(request, person, vault, problem.status, message=said(problem))
    return RedirectResponse("/annuaire#agents", status_code=303)


# --- agents -------------------------------------------------------------------------------


@router.get("/annuaire/agents/nouveau", name="new_agent")
async def new_agent(request: Request, person: PersonDep, vault: VaultDep) -> Response:
    _org(person)
    return _render(request, "agent_nouveau.html", "Enregistrer un agent", form={"roles": ["agent"]})


@router.post("/annuaire/agents", dependencies=[CsrfChecked])
async def create_agent(
    request: Request,
    person: PersonDep,
    vault: VaultDep,
    matricule: Text = "",
    first_name: Text = "",
    last_name: Text = "",
    subject: Text = "",
    roles: Roles = None,
) -> Response:
    form: dict[str, Any] = {"matricule": matricule, "first_name": first_name}
    form |= {"last_name": last_name, "subject": subject, "roles": roles or []}
    try:
        agent = await vault.post(
            f"{_org(person)}/agents",
            "l'enregistrement des agents",
            json=agent_body(form, roles or []),
        )
    except ApiProblem as problem:
        shown = _refused(problem)
        return _render(request, "agent_nouveau.html", "Enregistrer un agent", form=form, **shown)
    return RedirectResponse(f"/annuaire/agents/{agent['id']}", status_code=303)


async def _agent_page(
    request: Request,
    person: Person,
    vault: ApiClient,
    agent_id: uuid.UUID,
    form: dict[str, Any] | None = None,
    **shown: Any,
) -> Response:
    org = _org(person)
    agent = await vault.get(f"{org}/agents/{agent_id}", "cet agent")
    history = await _section(
        vault, f"{org}/habilitations", "les habilitations", agent_id=str(agent_id)
    )
    agents = await _section(vault, f"{org}/agents", "la liste des agents")
    title = f"Agent {agent['first_name']} {agent['last_name']}"
    return _render(
        request,
        "agent.html",
        title,
        agent=agent,
        people=_people(agents["items"]),
        habilitations=history,
        form=form or {**agent, "subject": agent["subject"] or ""},
        **shown,
    )


@router.get("/annuaire/agents/{agent_id}", name="agent")
async def agent_page(
    request: Request, agent_id: uuid.UUID, person: PersonDep, vault: VaultDep
) -> Response:
    return await _agent_page(request, person, vault, agent_id)


@router.post("/annuaire/agents/{agent_id}", dependencies=[CsrfChecked])
async def update_agent(
    request: Request,
    agent_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    first_name: Text = "",
    last_name: Text = "",
    subject: Text = "",
    active: Text = "",
    roles: Roles = None,
) -> Response:
    path = f"{_org(person)}/agents/{agent_id}"
    form: dict[str, Any] = {"first_name": first_name, "last_name": last_name}
    form |= {"subject": subject, "roles": roles or [], "active": active == "oui"}
    agent = await vault.get(path, "cet agent")
    changes = agent_changes(agent, {**form, "active": active}, roles or [])
    if changes:
        try:
            await vault.request("PATCH", path, "la modification des agents", json=changes)
        except ApiProblem as problem:
            shown = _refused(problem)
            return await _agent_page(request, person, vault, agent_id, form, **shown)
    return RedirectResponse(f"/annuaire/agents/{agent_id}", status_code=303)


# --- cameras and who wore them ------------------------------------------------------------


@router.get("/annuaire/cameras/nouvelle", name="new_camera")
async def new_camera(request: Request, person: PersonDep, vault: VaultDep) -> Response:
    _org(person)
    return _render(request, "camera_nouvelle.html", "Enregistrer une caméra", form={})


@router.post("/annuaire/cameras", dependencies=[CsrfChecked])
async def create_camera(
    request: Request, person: PersonDep, vault: VaultDep, serial: Text = "", model: Text = ""
) -> Response:
    form = {"serial": serial, "model": model}
    body = {"serial": serial.strip(), "model": model.strip()}
    try:
        camera = await vault.post(
            f"{_org(person)}/cameras", "l'enregistrement des caméras", json=body
        )
    except ApiProblem as problem:
        shown = _refused(problem)
        return _render(
            request, "camera_nouvelle.html", "Enregistrer une caméra", form=form, **shown
        )
    return RedirectResponse(f"/annuaire/cameras/{camera['id']}", status_code=303)


async def _camera_page(
    request: Request,
    person: Person,
    vault: ApiClient,
    camera_id: uuid.UUID,
    form: dict[str, Any] | None = None,
    **shown: Any,
) -> Response:
    org = _org(person)
    camera = await vault.get(f"{org}/cameras/{camera_id}", "cette caméra")
    assignments = await _section(
        vault, f"{org}/cameras/{camera_id}/assignments", "les affectations de cette caméra"
    )
    agents = await _section(vault, f"{org}/agents", "la liste des agents")
    return _render(
        request,
        "camera.html",
        f"Caméra {camera['serial']}",
        camera=camera,
        # Newest first: the wearer now, then who wore it before.
        assignments={**assignments, "items": list(reversed(assignments["items"]))},
        open_assignment=next((a for a in assignments["items"] if a["ends_at"] is None), None),
        agents=agents,
        names=_names(agents["items"]),
        people=_people(agents["items"]),
        form=form or {"status": camera["status"]},
        **shown,
    )


@router.get("/annuaire/cameras/{camera_id}", name="camera")
async def camera_page(
    request: Request, camera_id: uuid.UUID, person: PersonDep, vault: VaultDep
) -> Response:
    return await _camera_page(request, person, vault, camera_id)


@router.post("/annuaire/cameras/{camera_id}/etat", dependencies=[CsrfChecked])
async def change_camera_status(
    request: Request, camera_id: uuid.UUID, person: PersonDep, vault: VaultDep, status: Text = ""
) -> Response:
    try:
        await vault.request(
            "PATCH",
            f"{_org(person)}/cameras/{camera_id}",
            "la modification des caméras",
            json={"status": status},
        )
    except ApiProblem as problem:
        shown = _refused(problem)
        form = {"status": status}
        return await _camera_page(request, person, vault, camera_id, form, **shown)
    return RedirectResponse(f"/annuaire/cameras/{camera_id}", status_code=303)


@router.post("/annuaire/cameras/{camera_id}/affectations", dependencies=[CsrfChecked])
async def assign_camera(
    request: Request,
    camera_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    agent_id: Text = "",
    starts_at: Text = "",
    ends_at: Text = "",
) -> Response:
    form = {"agent_id": agent_id, "starts_at": starts_at, "ends_at": ends_at}
    body, errors = assignment_body(form)
    if errors:
        return await _camera_page(
            request, person, vault, camera_id, form, status_code=422, errors=errors
        )
    try:
        await vault.post(
            f"{_org(person)}/cameras/{camera_id}/assignments",
            "l'affectation des caméras",
            json=body,
        )
    except ApiProblem as problem:
        shown = _refused(problem)
        return await _camera_page(request, person, vault, camera_id, form, **shown)
    return RedirectResponse(f"/annuaire/cameras/{camera_id}#affectations", status_code=303)


@router.post(
    "/annuaire/cameras/{camera_id}/affectations/{assignment_id}/fin",
    dependencies=[CsrfChecked],
)
async def end_assignment(
    request: Request,
    camera_id: uuid.UUID,
    assignment_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    fin: Text = "",
) -> Response:
    ends_at = paris_instant(fin)
    form = {"fin": fin}
    if ends_at is None:
        errors = {"fin": FIELD_HELP["ends_at"]}
        return await _camera_page(
            request, person, vault, camera_id, form, status_code=422, errors=errors
        )
    try:
        await vault.post(
            f"{_org(person)}/assignments/{assignment_id}/end",
            "la fin des affectations",
            json={"ends_at": ends_at},
        )
    except ApiProblem as problem:
        shown = _refused(problem, {"ends_at": "fin"})
        return await _camera_page(request, person, vault, camera_id, form, **shown)
    return RedirectResponse(f"/annuaire/cameras/{camera_id}#affectations", status_code=303)


# --- docking stations ---------------------------------------------------------------------


@router.get("/annuaire/stations/nouvelle", name="new_station")
async def new_station(request: Request, person: PersonDep, vault: VaultDep) -> Response:
    _org(person)
    return _render(request, "station_nouvelle.html", "Enregistrer une station", form={})


@router.post("/annuaire/stations", dependencies=[CsrfChecked])
async def register_station(
    request: Request, person: PersonDep, vault: VaultDep, name: Text = "", public_key: Text = ""
) -> Response:
    form = {"name": name, "public_key": public_key}
    body = {"name": name.strip(), "public_key": public_key_text(public_key)}
    try:
        station = await vault.post(
            f"{_org(person)}/stations", "l'enregistrement des stations", json=body
        )
    except ApiProblem as problem:
        shown = _refused(problem)
        title = "Enregistrer une station"
        return _render(request, "station_nouvelle.html", title, form=form, **shown)
    return RedirectResponse(f"/annuaire/stations/{station['id']}?enregistree=1", status_code=303)


async def _station_page(
    request: Request, person: Person, vault: ApiClient, station_id: uuid.UUID, **shown: Any
) -> Response:
    org = _org(person)
    station = await vault.get(f"{org}/stations/{station_id}", "cette station")
    agents = await _section(vault, f"{org}/agents", "la liste des agents")
    return _render(
        request,
        "station.html",
        f"Station {station['name']}",
        station=station,
        people=_people(agents["items"]),
        just_registered=request.query_params.get("enregistree") == "1",
        form=shown.pop("form", {}),
        **shown,
    )


@router.get("/annuaire/stations/{station_id}", name="station")
async def station_page(
    request: Request, station_id: uuid.UUID, person: PersonDep, vault: VaultDep
) -> Response:
    return await _station_page(request, person, vault, station_id)


@router.post("/annuaire/stations/{station_id}/revocation", dependencies=[CsrfChecked])
async def revoke_station(
    request: Request, station_id: uuid.UUID, person: PersonDep, vault: VaultDep, motif: Text = ""
) -> Response:
    form = {"motif": motif}
    try:
        await vault.post(
            f"{_org(person)}/stations/{station_id}/revoke",
            "la révocation des stations",
            json={"reason": motif.strip()},
        )
    except ApiProblem as problem:
        shown = _refused(problem, {"reason": "motif"})
        return await _station_page(request, person, vault, station_id, form=form, **shown)
    return RedirectResponse(f"/annuaire/stations/{station_id}", status_code=303)
