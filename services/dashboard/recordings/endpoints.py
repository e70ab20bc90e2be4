from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.dashboard.api.client import ApiClient, ApiProblem
from services.dashboard.api.deps import VaultDep, organisation_path
from services.dashboard.auth.sessions import CsrfChecked, Person, PersonDep
from services.dashboard.kit.consultations import recall, remember
from services.dashboard.kit.forms import too_short
from services.dashboard.kit.templating import pages_of, typed_day

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 25
CONSULTATIONS = "consultations"  # the session's open consultations, by id
# Frame stepping: the recording's rate when the vault knows it, else the cameras' usual one.
FRAMES_PER_SECOND = 25

STATUSES = {
    "": "Tous",
    "sealed": "Scellé",
    "damaged": "Endommagé",
    "erased": "Effacé",
}
# Loi 2021-646 art. 45: the only purposes for which a wearer may view their own recording.
WEARER_PURPOSES = {
    "recherche_auteurs": "Faciliter la recherche des auteurs d'une infraction",
    "prevention_atteintes": "Prévenir une atteinte imminente à l'ordre public",
    "secours": "Porter secours aux personnes",
    "compte_rendu": "Établir fidèlement le compte rendu de l'intervention",
}
PROCEDURE_TYPES = {
    "judiciaire": "Procédure judiciaire",
    "administrative": "Procédure administrative",
    "disciplinaire": "Procédure disciplinaire",
    "formation": "Formation des agents",
}


def _org(person: Person) -> str:
    return organisation_path(person, "aucun enregistrement à afficher")


def _day(value: str, end: bool = False) -> str | None:
    """A day typed in the form (Paris) as the API's UTC instant: its start, or the next day's."""
    instant = typed_day(value, end)
    return instant.isoformat() if instant else None


@router.get("/enregistrements", name="recordings")
async def search(
    request: Request,
    person: PersonDep,
    vault: VaultDep,
    du: str = "",
    au: str = "",
    lieu: str = "",
    statut: str = "",
    recus_depuis: str = "",
    effacement_avant: str = "",
    station: str = "",
    page: int = 1,
) -> Response:
    page = max(page, 1)
    params: dict[str, Any] = {"limit": PAGE_SIZE, "offset": (page - 1) * PAGE_SIZE}
    errors: dict[str, str] = {}
    if du:
        params["started_from"] = _day(du) or errors.setdefault("du", "Date de début invalide.")
    if au:
        params["started_until"] = _day(au, end=True) or errors.setdefault(
            "au", "Date de fin invalide."
        )
    if lieu.strip():
        params["place"] = lieu.strip()
    if statut in STATUSES and statut:
        params["status"] = statut
    # Accueil's « voir tout »: received since a day, erased by the end of a day, one station.
    if recus_depuis:
        params["received_since"] = _day(recus_depuis) or errors.setdefault(
            "recus_depuis", "Date de réception invalide."
        )
    if effacement_avant:
        params["erasure_before"] = _day(effacement_avant, end=True) or errors.setdefault(
            "effacement_avant", "Date d'effacement invalide."
        )
    station_name: str | None = None
    if station:
        try:
            params["station_id"] = str(uuid.UUID(station))
        except ValueError:
            errors["station"] = "Station d'accueil inconnue."
        else:
            found = await _optional(vault, f"{_org(person)}/stations/{station}", "cette station")
            station_name = found["name"] if found else None
    results: dict[str, Any] = {"items": [], "total": 0}
    if not errors:
        try:
            results = await vault.get(
                f"{_org(person)}/recordings", "ces enregistrements", params=params
            )
        except ApiProblem as problem:
            if problem.status != 422:
                raise
            names = {
                "started_from": "du",
                "started_until": "au",
                "place": "lieu",
                "status": "statut",
                "received_since": "recus_depuis",
                "erasure_before": "effacement_avant",
                "station_id": "station",
            }
            errors = {names.get(k, k): f"Valeur refusée : {v}" for k, v in problem.fields.items()}
    total = int(results.get("total", 0))
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    filters = {
        "du": du,
        "au": au,
        "lieu": lieu,
        "statut": statut,
        "recus_depuis": recus_depuis,
        "effacement_avant": effacement_avant,
        "station": station,
    }
    query = urlencode({k: v for k, v in filters.items() if v})
    without_station = urlencode({k: v for k, v in filters.items() if v and k != "station"})
    return pages_of(request).render(
        request,
        "recordings/liste.html",
        title="Enregistrements",
        items=results.get("items", []),
        total=total,
        page=page,
        pages=pages,
        filters=filters,
        query=query,
        without_station=without_station,
        station_name=station_name,
        statuses=STATUSES,
        errors=errors,
    )


@router.get("/enregistrements/{recording_id}", name="recording")
async def recording(
    request: Request, recording_id: uuid.UUID, person: PersonDep, vault: VaultDep
) -> Response:
    org = _org(person)
    # The recording, the procedures and the history do not depend on one another: asked
    # together, the page waits for the slowest of them, not for their sum.
    item, found, entries = await _together(
        vault.get(f"{org}/recordings/{recording_id}", "cet enregistrement"),
        _refusable(vault.get(f"{org}/procedures", "les procédures", params={"limit": 500})),
        _refusable(
            vault.get(
                f"{org}/audit/entries",
                "l'historique de cet enregistrement",
                params={"recording_id": str(recording_id), "limit": 200},
            )
        ),
    )
    procedures: list[dict[str, Any]] | None = None
    attachable: list[dict[str, Any]] = []
    history: list[dict[str, Any]] | None = None
    refused: dict[str, str] = {}
    if isinstance(found, _Refused):
        refused["procedures"] = found.problem.detail or found.problem.message
    else:
        procedures = [p for p in found["items"] if str(recording_id) in p["recording_ids"]]
        # Those it could still be attached to (« Rattacher à une procédure »).
        attachable = [
            p
            for p in found["items"]
            if p["closed_at"] is None and str(recording_id) not in p["recording_ids"]
        ]
    if isinstance(entries, _Refused):
        refused["history"] = entries.problem.detail or entries.problem.message
    else:
        history = entries["items"]
    agent, camera = await _together(
        _optional(vault, f"{org}/agents/{item['agent_id']}", "cet agent"),
        _optional(vault, f"{org}/cameras/{item['camera_id']}", "cette caméra"),
    )
    return pages_of(request).render(
        request,
        "recordings/fiche.html",
        agent=agent,
        camera=camera,
        title="Enregistrement",
        item=item,
        procedures=procedures,
        attachable=attachable,
        may_attach=person.has("maire", "responsable", "habilite"),
        history=history,
        refused=refused,
        procedure_types=PROCEDURE_TYPES,
        may_view=person.has("maire", "responsable", "habilite", "agent"),
    )


async def _together(*calls: Awaitable[Any]) -> list[Any]:
    """The calls' answers, made at once. Every call is over before the page goes on, and the
    first failure in the order given is the page's (the recording's own before its parts')."""
    answers = await asyncio.gather(*calls, return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return answers


@dataclass
class _Refused:
    """A part of the page the person's role may not see: the vault's refusal, shown in its
    place."""

    problem: ApiProblem


async def _refusable(call: Awaitable[Any]) -> Any:
    """The call's answer, or ``_Refused`` when the vault answers 403; any other failure is
    the page's."""
    try:
        return await call
    except ApiProblem as problem:
        if problem.status != 403:
            raise
        return _Refused(problem)


async def _optional(vault: ApiClient, path: str, what: str) -> dict[str, Any] | None:
    """A detail the page can do without (an agent's name): None when the vault refuses it."""
    try:
        found: dict[str, Any] = await vault.get(path, what)
    except ApiProblem as problem:
        if problem.status not in (403, 404):
            raise
        return None
    return found


def _is_wearer_only(person: Person) -> bool:
    return person.has("agent") and not person.has("maire", "responsable", "habilite")


@router.get("/enregistrements/{recording_id}/visionner", name="view_form")
async def view_form(
    request: Request, recording_id: uuid.UUID, person: PersonDep, vault: VaultDep
) -> Response:
    item = await vault.get(f"{_org(person)}/recordings/{recording_id}", "cet enregistrement")
    return _view_form(request, person, item, {}, {})


def _view_form(
    request: Request,
    person: Person,
    item: dict[str, Any],
    form: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
    message: str | None = None,
) -> Response:
    return pages_of(request).render(
        request,
        "recordings/visionner.html",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + "Visionner un enregistrement",
        item=item,
        form=form,
        errors=errors,
        message=message,
        wearer=_is_wearer_only(person),
        purposes=WEARER_PURPOSES,
    )


@router.post("/enregistrements/{recording_id}/visionner", dependencies=[CsrfChecked])
async def view(
    request: Request,
    recording_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    motif: Annotated[str, Form()] = "",
    finalite: Annotated[str, Form()] = "",
) -> Response:
    """Open a consultation with its motif (logged by the vault), then show the player."""
    org = _org(person)
    item = await vault.get(f"{org}/recordings/{recording_id}", "cet enregistrement")
    form = {"motif": motif, "finalite": finalite}
    errors: dict[str, str] = {}
    if too_short(motif):
        errors["motif"] = "Indiquez le motif du visionnage (au moins 3 caractères)."
    if _is_wearer_only(person) and finalite not in WEARER_PURPOSES:
        errors["finalite"] = "Choisissez la finalité du visionnage."
    if errors:
        return _view_form(request, person, item, form, errors, 422)
    body: dict[str, Any] = {"motif": motif.strip()}
    if finalite in WEARER_PURPOSES:
        body["purpose"] = finalite
    try:
        consultation = await vault.post(
            f"{org}/recordings/{recording_id}/consultations",
            "le visionnage de cet enregistrement",
            json=body,
        )
    except ApiProblem as problem:
        if problem.status == 422:
            names = {"purpose": "finalite"}
            errors = {names.get(k, k): f"Valeur refusée : {v}" for k, v in problem.fields.items()}
            return _view_form(request, person, item, form, errors, 422)
        if problem.status in (403, 409, 410):
            return _view_form(
                request, person, item, form, {}, problem.status,
                message=problem.message + (f" {problem.detail}" if problem.detail else ""),
            )  # fmt: skip
        raise
    # Kept in the server-side session, the player's page is a GET: reloading it does not open
    # a second consultation, and once the link has expired the page says so instead.
    remember(request, CONSULTATIONS, consultation, motif, recording_id=str(recording_id))
    return RedirectResponse(
        f"/enregistrements/{recording_id}/lecture/{consultation['id']}", status_code=303
    )


@router.get("/enregistrements/{recording_id}/lecture/{consultation_id}", name="player")
async def player(
    request: Request,
    recording_id: uuid.UUID,
    consultation_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
) -> Response:
    """The player on the consultation's media URL; once it has expired (or is not this
    session's), the page says so and offers a new consultation, with a new motif."""
    item = await vault.get(f"{_org(person)}/recordings/{recording_id}", "cet enregistrement")
    consultation, expired = recall(
        request, CONSULTATIONS, consultation_id, recording_id=str(recording_id)
    )
    return pages_of(request).render(
        request,
        "recordings/lecture.html",
        status_code=410 if consultation is None else 200,
        title="Lien de lecture expiré" if expired else "Visionnage",
        item=item,
        consultation=consultation,
        expired=expired,
        frames_per_second=item.get("frame_rate") or FRAMES_PER_SECOND,
    )
