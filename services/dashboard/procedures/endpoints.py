"""Procédures (R241-12 à R241-14): the list, opening one, a procedure's page with its
recordings, attaching, detaching (with a motif), closing, and extracting a recording as the
vault's signed BagIt zip, streamed through to the browser (the person's token stays here, the
clip is never buffered)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from services.dashboard.api.client import ApiClient, ApiProblem, problem_of
from services.dashboard.api.deps import VaultDep, organisation_path
from services.dashboard.auth.sessions import CsrfChecked, Person, PersonDep
from services.dashboard.copies import words as derivative_words
from services.dashboard.kit.forms import too_short
from services.dashboard.kit.templating import pages_of, parse_instant

router = APIRouter(include_in_schema=False)
TYPES = {
    "judiciaire": "Procédure judiciaire",
    "administrative": "Procédure administrative",
    "disciplinaire": "Procédure disciplinaire",
    "formation": "Formation des agents",
}
FORMATION_REFUSED = (
    "L'extraction pour la formation des agents est refusée : elle exige une copie anonymisée "
    "de l'enregistrement, approuvée après vérification ; l'original n'est jamais extrait pour "
    "la formation (article R241-12)."
)
# Headers of the vault's package answer passed on to the browser.
PASSED_ON = ("content-type", "content-disposition", "content-length")


def _org(person: Person) -> str:
    return organisation_path(person, "aucune procédure")


def _said(problem: ApiProblem) -> str:
    return problem.message + (f" Précision du service : {problem.detail}" if problem.detail else "")


def _refused_fields(problem: ApiProblem, names: dict[str, str]) -> dict[str, str]:
    return {names.get(k, k): f"Valeur refusée : {v}" for k, v in problem.fields.items()}


async def _list_page(
    request: Request,
    person: Person,
    vault: ApiClient,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    message: str | None = None,
) -> Response:
    found = await vault.get(f"{_org(person)}/procedures", "les procédures", params={"limit": 500})
    items = sorted(found["items"], key=lambda p: (p["closed_at"] is not None, p["created_at"]))
    open_first = [p for p in items if p["closed_at"] is None] + [
        p for p in reversed(items) if p["closed_at"] is not None
    ]
    return pages_of(request).render(
        request,
        "procedures/liste.html",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + "Procédures",
        items=open_first,
        types=TYPES,
        form=form or {"type": "judiciaire"},
        errors=errors or {},
        message=message,
    )


@router.get("/procedures", name="procedures")
async def procedures(request: Request, person: PersonDep, vault: VaultDep) -> Response:
    return await _list_page(request, person, vault)


@router.post("/procedures", dependencies=[CsrfChecked])
async def open_procedure(
    request: Request,
    person: PersonDep,
    vault: VaultDep,
    type: Annotated[str, Form()] = "",  # noqa: A002 - the form's field
    reference: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
) -> Response:
    form = {"type": type, "reference": reference, "description": description}
    errors: dict[str, str] = {}
    if type not in TYPES:
        errors["type"] = "Choisissez le type de la procédure."
    if not reference.strip():
        errors["reference"] = "Indiquez la référence de la procédure (numéro de PV, de dossier)."
    if errors:
        return await _list_page(request, person, vault, form, errors, 422)
    body = {
        "type": type,
        "reference": reference.strip(),
        "description": description.strip() or None,
    }
    try:
        opened = await vault.post(
            f"{_org(person)}/procedures", "l'ouverture de procédures", json=body
        )
    except ApiProblem as problem:
        if problem.status == 422 and problem.fields:
            return await _list_page(request, person, vault, form, _refused_fields(problem, {}), 422)
        if problem.status in (403, 409, 422):
            return await _list_page(
                request, person, vault, form, None, problem.status, message=_said(problem)
            )
        raise
    return RedirectResponse(f"/procedures/{opened['id']}", status_code=303)


async def _recording(vault: ApiClient, org: str, recording_id: str) -> dict[str, Any]:
    """A recording of the procedure, or only its id when the vault will not say more."""
    try:
        found: dict[str, Any] = await vault.get(
            f"{org}/recordings/{recording_id}", "cet enregistrement"
        )
    except ApiProblem as problem:
        if problem.status not in (403, 404, 410):
            raise
        return {"id": recording_id}
    return found


async def _copies(
    vault: ApiClient, org: str, procedure_id: uuid.UUID
) -> dict[str, list[dict[str, Any]]] | None:
    """A formation procedure's anonymised copies by recording, newest first, each with its
    state in French; None when the vault will not show them to this person."""
    try:
        found = await vault.get(
            f"{org}/derivatives",
            "les copies anonymisées",
            params={"procedure_id": str(procedure_id), "limit": 500},
        )
    except ApiProblem as problem:
        if problem.status != 403:
            raise
        return None
    copies: dict[str, list[dict[str, Any]]] = {}
    for item in found["items"]:
        said = {**item, "state": derivative_words.status(item)}
        said["active"] = item["status"] in derivative_words.ACTIVE
        copies.setdefault(str(item["recording_id"]), []).append(said)
    return copies


async def _procedure_page(
    request: Request,
    person: Person,
    vault: ApiClient,
    procedure_id: uuid.UUID,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    message: str | None = None,
) -> Response:
    org = _org(person)
    procedure = await vault.get(f"{org}/procedures/{procedure_id}", "cette procédure")
    # One vault call per recording, made together rather than one after the other.
    recordings = list(
        await asyncio.gather(*(_recording(vault, org, str(r)) for r in procedure["recording_ids"]))
    )
    copies = await _copies(vault, org, procedure_id) if procedure["type"] == "formation" else None
    return pages_of(request).render(
        request,
        "procedures/fiche.html",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + f"Procédure {procedure['reference']}",
        procedure=procedure,
        recordings=recordings,
        copies=copies,
        may_ask_copy=person.has("responsable", "habilite"),
        types=TYPES,
        form=form or {},
        errors=errors or {},
        message=message,
    )


@router.get("/procedures/{procedure_id}", name="procedure")
async def procedure(
    request: Request, procedure_id: uuid.UUID, person: PersonDep, vault: VaultDep
) -> Response:
    return await _procedure_page(request, person, vault, procedure_id)


@router.post("/procedures/rattachement", dependencies=[CsrfChecked])
async def attach_from_recording(
    request: Request,
    person: PersonDep,
    vault: VaultDep,
    procedure: Annotated[str, Form()] = "",
    enregistrement: Annotated[str, Form()] = "",
    qualification: Annotated[str, Form()] = "",
) -> Response:
    """« Rattacher à une procédure » on a recording's page: back there once attached; an
    error is shown on the procedure's page, beside its own attach form."""
    try:
        procedure_id = uuid.UUID(procedure)
    except ValueError:
        raise ApiProblem(422, "Choisissez la procédure à laquelle rattacher.") from None
    return await attach(
        request, procedure_id, person, vault, enregistrement, qualification, "enregistrement"
    )


@router.post("/procedures/{procedure_id}/rattacher", dependencies=[CsrfChecked])
async def attach(
    request: Request,
    procedure_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    enregistrement: Annotated[str, Form()] = "",
    qualification: Annotated[str, Form()] = "",
    retour: Annotated[str, Form()] = "",
) -> Response:
    """Attach a recording (from this page, or from the recording's page: ``retour``)."""
    form = {"enregistrement": enregistrement, "qualification": qualification}
    errors: dict[str, str] = {}
    try:
        recording_id = uuid.UUID(enregistrement.strip())
    except ValueError:
        errors["enregistrement"] = (
            "Indiquez l'identifiant de l'enregistrement (tel qu'affiché sur sa page)."
        )
    if too_short(qualification):
        errors["qualification"] = (
            "Indiquez en quoi l'enregistrement intéresse la procédure (au moins 3 caractères)."
        )
    if errors:
        return await _procedure_page(request, person, vault, procedure_id, form, errors, 422)
    try:
        await vault.post(
            f"{_org(person)}/procedures/{procedure_id}/recordings",
            "le rattachement d'enregistrements",
            json={"recording_id": str(recording_id), "qualification": qualification.strip()},
        )
    except ApiProblem as problem:
        if problem.status == 422 and problem.fields:
            names = {"recording_id": "enregistrement"}
            fields = _refused_fields(problem, names)
            return await _procedure_page(request, person, vault, procedure_id, form, fields, 422)
        if problem.status in (403, 404, 409, 410, 422):
            return await _procedure_page(
                request, person, vault, procedure_id, form, None, problem.status, _said(problem)
            )
        raise
    if retour == "enregistrement":
        return RedirectResponse(f"/enregistrements/{recording_id}", status_code=303)
    return RedirectResponse(f"/procedures/{procedure_id}#enregistrements", status_code=303)


@router.post("/procedures/{procedure_id}/clore", dependencies=[CsrfChecked])
async def close(
    request: Request, procedure_id: uuid.UUID, person: PersonDep, vault: VaultDep
) -> Response:
    try:
        await vault.post(
            f"{_org(person)}/procedures/{procedure_id}/close", "la clôture de cette procédure"
        )
    except ApiProblem as problem:
        if problem.status not in (403, 409):
            raise
        return await _procedure_page(
            request, person, vault, procedure_id, None, None, problem.status, _said(problem)
        )
    return RedirectResponse(f"/procedures/{procedure_id}", status_code=303)


async def _detach_page(
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
    recording = await _recording(vault, org, str(recording_id))
    found = await vault.get(f"{org}/procedures", "les procédures", params={"limit": 500})
    # What the detach will change: whether another open procedure keeps it held, and whether
    # its retention has already run out (then the next erasure takes it).
    others = [
        p
        for p in found["items"]
        if p["id"] != str(procedure_id)
        and p["closed_at"] is None
        and str(recording_id) in p["recording_ids"]
    ]
    until = parse_instant(recording.get("retain_until"))
    return pages_of(request).render(
        request,
        "procedures/detacher.html",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + "Détacher un enregistrement",
        procedure=procedure,
        recording=recording,
        attached=str(recording_id) in procedure["recording_ids"],
        others=others,
        past_retention=until is not None and until <= datetime.now(UTC),
        types=TYPES,
        form=form or {},
        errors=errors or {},
        message=message,
    )


DETACH = "/procedures/{procedure_id}/enregistrements/{recording_id}/detacher"
# The vault's refusals of a detach, said for this page.
DETACH_REFUSALS = {
    404: "Cet enregistrement n'est pas (ou plus) rattaché à cette procédure.",
    409: "La procédure est close : ses enregistrements ne peuvent plus en être détachés.",
}


@router.get(DETACH, name="detach_form")
async def detach_form(
    request: Request,
    procedure_id: uuid.UUID,
    recording_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
) -> Response:
    return await _detach_page(request, person, vault, procedure_id, recording_id)


@router.post(DETACH, dependencies=[CsrfChecked])
async def detach(
    request: Request,
    procedure_id: uuid.UUID,
    recording_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    motif: Annotated[str, Form()] = "",
) -> Response:
    """Detach with a motif (logged by the vault); back to the procedure once done."""
    form = {"motif": motif}
    if too_short(motif):
        errors = {"motif": "Indiquez le motif du détachement (au moins 3 caractères)."}
        return await _detach_page(
            request, person, vault, procedure_id, recording_id, form, errors, 422
        )
    try:
        await vault.post(
            f"{_org(person)}/procedures/{procedure_id}/recordings/{recording_id}/detach",
            "le détachement d'enregistrements",
            json={"motif": motif.strip()},
        )
    except ApiProblem as problem:
        if problem.status == 422 and problem.fields:
            fields = _refused_fields(problem, {})
            return await _detach_page(
                request, person, vault, procedure_id, recording_id, form, fields, 422
            )
        if problem.status not in (403, 404, 409, 422):
            raise
        said = DETACH_REFUSALS.get(problem.status, problem.message)
        if problem.detail:
            said += f" Précision du service : {problem.detail}"
        return await _detach_page(
            request, person, vault, procedure_id, recording_id, form, None, problem.status, said
        )
    return RedirectResponse(f"/procedures/{procedure_id}#enregistrements", status_code=303)


async def _extraction_page(
    request: Request,
    person: Person,
    vault: ApiClient,
    procedure_id: uuid.UUID,
    recording_id: uuid.UUID,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
    message: str | None = None,
    copy: uuid.UUID | None = None,
) -> Response:
    org = _org(person)
    procedure = await vault.get(f"{org}/procedures/{procedure_id}", "cette procédure")
    return pages_of(request).render(
        request,
        "procedures/extraire.html",
        copy=copy,
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + "Extraire un enregistrement",
        procedure=procedure,
        recording=await _recording(vault, org, str(recording_id)),
        types=TYPES,
        form=form or {},
        errors=errors or {},
        message=message,
    )


EXTRACTION = "/procedures/{procedure_id}/enregistrements/{recording_id}/extraire"


@router.get(EXTRACTION, name="extraction_form")
async def extraction_form(
    request: Request,
    procedure_id: uuid.UUID,
    recording_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    copie: uuid.UUID | None = None,
) -> Response:
    """``copie``: the approved anonymised copy to extract for a formation procedure."""
    return await _extraction_page(request, person, vault, procedure_id, recording_id, copy=copie)


@router.post(EXTRACTION, dependencies=[CsrfChecked])
async def extract(
    request: Request,
    procedure_id: uuid.UUID,
    recording_id: uuid.UUID,
    person: PersonDep,
    vault: VaultDep,
    motif: Annotated[str, Form()] = "",
    destinataires: Annotated[str, Form()] = "",
    copie: Annotated[str, Form()] = "",
) -> Response:
    """The vault's package, passed on chunk by chunk as it comes; ``copie``: the approved
    anonymised copy extracted instead of the recording (formation)."""
    form = {"motif": motif, "destinataires": destinataires}
    try:
        copy = uuid.UUID(copie) if copie else None
    except ValueError:
        raise ApiProblem(422, "Cette copie anonymisée n'existe pas.") from None
    recipients = [line.strip() for line in destinataires.splitlines() if line.strip()]
    errors: dict[str, str] = {}
    if too_short(motif):
        errors["motif"] = "Indiquez le motif de l'extraction (au moins 3 caractères)."
    if not recipients:
        errors["destinataires"] = "Indiquez au moins un destinataire de la copie (un par ligne)."
    if errors:
        return await _extraction_page(
            request, person, vault, procedure_id, recording_id, form, errors, 422, copy=copy
        )
    body: dict[str, Any] = {
        "recording_id": str(recording_id),
        "motif": motif.strip(),
        "destinataires": recipients,
    }
    if copy is not None:
        body["derivative_id"] = str(copy)
    outgoing = vault.http.build_request(
        "POST",
        f"{_org(person)}/procedures/{procedure_id}/extractions",
        headers={"Authorization": f"Bearer {vault.token}"},
        json=body,
    )
    try:
        answer = await vault.http.send(outgoing, stream=True)
    except Exception as error:  # the transport failed: said like any unavailable service
        raise ApiProblem(
            503, "Le service est momentanément indisponible : réessayez dans un instant."
        ) from error
    if answer.is_error:
        await answer.aread()
        await answer.aclose()
        problem = problem_of(answer, "l'extraction de cet enregistrement")
        if problem.status == 401:
            raise problem
        # The original asked for a formation procedure: said whole; a copy's refusal is the
        # vault's own detail (not approved, another recording's, not a formation procedure).
        if copy is None and ("procedure" in problem.fields or "derivative_id" in problem.fields):
            problem = ApiProblem(422, FORMATION_REFUSED, problem.detail)
        elif (
            problem.status == 422
            and problem.fields
            and (copy is None or set(problem.fields) <= {"motif", "destinataires"})
        ):
            fields = _refused_fields(problem, {})
            return await _extraction_page(
                request, person, vault, procedure_id, recording_id, form, fields, 422
            )
        if problem.status not in (403, 404, 409, 410, 422):
            raise problem
        return await _extraction_page(
            request, person, vault, procedure_id, recording_id, form, None,
            problem.status, _said(problem), copy=copy,
        )  # fmt: skip
    headers = {k: v for k, v in answer.headers.items() if k.lower() in PASSED_ON}
    return StreamingResponse(
        answer.aiter_raw(),
        status_code=200,
        headers=headers,
        background=BackgroundTask(answer.aclose),
    )
