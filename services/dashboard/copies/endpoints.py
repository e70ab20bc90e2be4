"""Copies anonymisées pour la formation (R241-12): asked for from a `formation` procedure's
page, followed on their own page, viewed through a logged consultation and approved or
rejected with a reason. The vault decides everything (who may, in which state); the approved
copy is extracted with the procedure's own extraction form (procedures/endpoints.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from services.dashboard.api.client import ApiClient, ApiProblem
from services.dashboard.api.deps import VaultDep, organisation_path
from services.dashboard.auth.sessions import CsrfChecked, Person, PersonDep
from services.dashboard.copies import words
from services.dashboard.kit.consultations import recall, remember
from services.dashboard.kit.forms import too_short
from services.dashboard.kit.templating import pages_of

router = APIRouter(include_in_schema=False)
# The session's open consultations of copies, by id (apart from the recordings' own).
CONSULTATIONS = "consultations_copies"
FRAMES_PER_SECOND = 25  # when the copy's result does not say
DEMANDE = "/procedures/{procedure_id}/enregistrements/{recording_id}/copie-anonymisee"
COPY = "/copies-anonymisees/{derivative_id}"
DECISIONS = {"approuve": "Approuver la copie", "rejete": "Rejeter la copie"}


def _org(person: Person) -> str:
    return organisation_path(person, "aucune copie anonymisée")


def _said(problem: ApiProblem) -> str:
    return problem.message + (f" Précision du service : {problem.detail}" if problem.detail else "")


def _refused_fields(problem: ApiProblem, names: dict[str, str]) -> dict[str, str]:
    return {names.get(k, k): f"Valeur refusée : {v}" for k, v in problem.fields.items()}


async def _optional(vault: ApiClient, path: str, what: str, fallback: dict[str, Any]) -> Any:
    """A detail the page can do without (the recording's date): ``fallback`` when refused."""
    try:
        return await vault.get(path, what)
    except ApiProblem as problem:
        if problem.status not in (403, 404, 410):
            raise
        return fallback


async def _demande_page(
    request: Request,
    person: Person,
    vault: ApiClient,
    procedure_id: uuid.UUID,
    recording_id: uuid.UUID,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    message: str | None = None,
) -> Response:
    org = _org(person)
    procedure = await vault.get(f"{org}/procedures/{procedure_id}", "cette procédure")
    recording = await _optional(
        vault, f"{org}/recordings/{recording_id}", "cet enregistrement", {"id": str(recording_id)}
    )
    return pages_of(request).render(
        request,
        "copies/demande.html",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + "Demander une copie anonymisée",
        procedure=procedure,
        recording=recording,
        form=form or {},
        errors=errors or {},
        message=message,
    )


@router.get(DEMANDE, name="derivative_demande_form")
async def demande_form(
    request: Request,
    procedure_id: uuid.UUID,
    recording_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
) -> Response:
    return await _demande_page(request, person, vault, procedure_id, recording_id)


@router.post(DEMANDE, dependencies=[CsrfChecked])
async def demande(
    request: Request,
    procedure_id: uuid.UUID,
    recording_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    motif: Annotated[str, Form()] = "",
) -> Response:
    """The demande (logged by the vault with its motif); the copy is made in the background."""
    form = {"motif": motif}
    if too_short(motif):
        errors = {"motif": "Indiquez le motif de la demande (au moins 3 caractères)."}
        return await _demande_page(
            request, person, vault, procedure_id, recording_id, form, errors, 422
        )
    try:
        asked = await vault.post(
            f"{_org(person)}/procedures/{procedure_id}/derivatives",
            "la demande de copie anonymisée",
            json={"recording_id": str(recording_id), "motif": motif.strip()},
        )
    except ApiProblem as problem:
        if problem.status == 422 and set(problem.fields) <= {"motif"} and problem.fields:
            fields = _refused_fields(problem, {})
            return await _demande_page(
                request, person, vault, procedure_id, recording_id, form, fields, 422
            )
        if problem.status not in (403, 404, 409, 410, 422):
            raise
        return await _demande_page(
            request, person, vault, procedure_id, recording_id, form, None,
            problem.status, _said(problem),
        )  # fmt: skip
    return RedirectResponse(f"/copies-anonymisees/{asked['id']}", status_code=303)


async def _copy_page(
    request: Request,
    person: Person,
    vault: ApiClient,
    derivative_id: uuid.UUID,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    message: str | None = None,
) -> Response:
    org = _org(person)
    derivative = await vault.get(f"{org}/derivatives/{derivative_id}", "cette copie anonymisée")
    procedure = await _optional(
        vault,
        f"{org}/procedures/{derivative['procedure_id']}",
        "cette procédure",
        {"id": derivative["procedure_id"], "reference": "", "closed_at": None},
    )
    recording = await _optional(
        vault,
        f"{org}/recordings/{derivative['recording_id']}",
        "cet enregistrement",
        {"id": derivative["recording_id"]},
    )
    result = derivative.get("result") or {}
    faces = result.get("faces_per_frame") or []
    return pages_of(request).render(
        request,
        "copies/copie.html",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + "Copie anonymisée",
        derivative=derivative,
        procedure=procedure,
        recording=recording,
        state=words.status(derivative),
        reason=words.reason(str(derivative.get("reason") or "")),
        active=derivative["status"] in words.ACTIVE,
        viewable=derivative["status"] in words.VIEWABLE,
        frames_with_faces=sum(1 for n in faces if n),
        faces_blurred=sum(faces),
        may_act=person.has("responsable", "habilite"),
        may_extract=person.has("maire", "responsable", "habilite"),
        decisions=DECISIONS,
        form=form or {},
        errors=errors or {},
        message=message,
    )


@router.get(COPY, name="derivative")
async def copy(
    request: Request, derivative_id: uuid.UUID, person: PersonDep, vault: VaultDep
) -> Response:
    return await _copy_page(request, person, vault, derivative_id)


@router.post(f"{COPY}/annuler", dependencies=[CsrfChecked])
async def cancel(
    request: Request,
    derivative_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    retour: Annotated[str, Form()] = "",
) -> Response:
    """Stop the making (a running job stops at its next heartbeat: nothing is kept)."""
    try:
        cancelled = await vault.post(
            f"{_org(person)}/derivatives/{derivative_id}/cancel", "l'annulation de cette copie"
        )
    except ApiProblem as problem:
        if problem.status not in (403, 404, 409):
            raise
        return await _copy_page(
            request, person, vault, derivative_id, None, None, problem.status, _said(problem)
        )
    if retour == "procedure":
        return RedirectResponse(
            f"/procedures/{cancelled['procedure_id']}#enregistrements", status_code=303
        )
    return RedirectResponse(f"/copies-anonymisees/{derivative_id}", status_code=303)


@router.post(f"{COPY}/verification", dependencies=[CsrfChecked])
async def review(
    request: Request,
    derivative_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    decision: Annotated[str, Form()] = "",
    raison: Annotated[str, Form()] = "",
) -> Response:
    """Approve or reject, with the reason (logged by the vault, required either way)."""
    form = {"decision": decision, "raison": raison}
    errors: dict[str, str] = {}
    if decision not in DECISIONS:
        errors["decision"] = "Choisissez : approuver ou rejeter la copie."
    if too_short(raison):
        errors["raison"] = (
            "Indiquez ce que vous avez vérifié ou pourquoi vous rejetez la copie "
            "(au moins 3 caractères)."
        )
    if errors:
        return await _copy_page(request, person, vault, derivative_id, form, errors, 422)
    try:
        await vault.post(
            f"{_org(person)}/derivatives/{derivative_id}/review",
            "la vérification de cette copie",
            json={"decision": decision, "reason": raison.strip()},
        )
    except ApiProblem as problem:
        if problem.status == 422 and problem.fields:
            fields = _refused_fields(problem, {"reason": "raison"})
            return await _copy_page(request, person, vault, derivative_id, form, fields, 422)
        if problem.status not in (403, 404, 409):
            raise
        return await _copy_page(
            request, person, vault, derivative_id, form, None, problem.status, _said(problem)
        )
    return RedirectResponse(f"/copies-anonymisees/{derivative_id}", status_code=303)


async def _view_page(
    request: Request,
    person: Person,
    vault: ApiClient,
    derivative_id: uuid.UUID,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    message: str | None = None,
) -> Response:
    derivative = await vault.get(
        f"{_org(person)}/derivatives/{derivative_id}", "cette copie anonymisée"
    )
    return pages_of(request).render(
        request,
        "copies/visionner.html",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + "Visionner une copie anonymisée",
        derivative=derivative,
        form=form or {},
        errors=errors or {},
        message=message,
    )


@router.get(f"{COPY}/visionner", name="derivative_view_form")
async def view_form(
    request: Request, derivative_id: uuid.UUID, person: PersonDep, vault: VaultDep
) -> Response:
    return await _view_page(request, person, vault, derivative_id)


@router.post(f"{COPY}/visionner", dependencies=[CsrfChecked])
async def view(
    request: Request,
    derivative_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    motif: Annotated[str, Form()] = "",
) -> Response:
    """A consultation of the copy with its motif (logged like any), then the player."""
    form = {"motif": motif}
    if too_short(motif):
        errors = {"motif": "Indiquez le motif du visionnage (au moins 3 caractères)."}
        return await _view_page(request, person, vault, derivative_id, form, errors, 422)
    try:
        consultation = await vault.post(
            f"{_org(person)}/derivatives/{derivative_id}/consultations",
            "le visionnage de cette copie",
            json={"motif": motif.strip()},
        )
    except ApiProblem as problem:
        if problem.status == 422 and problem.fields:
            fields = _refused_fields(problem, {})
            return await _view_page(request, person, vault, derivative_id, form, fields, 422)
        if problem.status not in (403, 404, 409, 410):
            raise
        return await _view_page(
            request, person, vault, derivative_id, form, None, problem.status, _said(problem)
        )
    # As for a recording (recordings/endpoints.py): the player's page is a GET, reloading it
    # opens no second consultation, and an expired link is said so.
    remember(request, CONSULTATIONS, consultation, motif, derivative_id=str(derivative_id))
    return RedirectResponse(
        f"/copies-anonymisees/{derivative_id}/lecture/{consultation['id']}", status_code=303
    )


@router.get(f"{COPY}/lecture/{{consultation_id}}", name="derivative_player")
async def player(
    request: Request,
    derivative_id: uuid.UUID,
    consultation_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
) -> Response:
    derivative = await vault.get(
        f"{_org(person)}/derivatives/{derivative_id}", "cette copie anonymisée"
    )
    consultation, expired = recall(
        request, CONSULTATIONS, consultation_id, derivative_id=str(derivative_id)
    )
    fps = float((derivative.get("result") or {}).get("fps") or FRAMES_PER_SECOND)
    return pages_of(request).render(
        request,
        "copies/lecture.html",
        status_code=410 if consultation is None else 200,
        title="Lien de lecture expiré" if expired else "Visionnage de la copie anonymisée",
        derivative=derivative,
        state=words.status(derivative),
        consultation=consultation,
        expired=expired,
        frames_per_second=int(fps) if fps.is_integer() else round(fps, 3),
    )
