"""« Rapport annuel » (maire, responsable) and « Tableau du département » (préfecture): the
reporting API's figures, évaluation and finalisation; its PDF and CSV are fetched here with the
person's token and passed on, so the browser never holds the token. The API decides who may."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from services.dashboard.api.client import ApiClient, ApiProblem, problem_of
from services.dashboard.api.deps import ReportingDep, organisation_path
from services.dashboard.auth.sessions import CsrfChecked, Person, PersonDep
from services.dashboard.kit.templating import pages_of

router = APIRouter(include_in_schema=False)
FIRST_YEAR = 2018
# The letter's wording (2018 report), in its order.
USES = (
    ("judiciaire", "Enregistrements pour procédure judiciaire"),
    ("administrative", "Enregistrements pour procédure administrative"),
    ("formation", "Enregistrements pour formation"),
    ("disciplinaire", "Enregistrements pour procédure disciplinaire"),
)
# The API's total (named as its CSV column) of each use: the page shows the API's totals, not
# sums of its own, so that it agrees with the PDF and the CSV.
USE_TOTALS = {
    "judiciaire": "enregistrements_procedure_judiciaire",
    "administrative": "enregistrements_procedure_administrative",
    "formation": "enregistrements_formation",
    "disciplinaire": "enregistrements_procedure_disciplinaire",
}
PROCEDURES = (
    ("judiciaire", "Procédures judiciaires"),
    ("administrative", "Procédures administratives"),
    ("disciplinaire", "Procédures disciplinaires"),
)


def _years() -> list[int]:
    return list(range(datetime.now(UTC).year, FIRST_YEAR - 1, -1))


def _year(annee: int | None) -> int:
    years = _years()
    return annee if annee in years else years[0]


def _org(person: Person) -> str:
    return organisation_path(person, "pas de rapport")


def _period(year: int) -> dict[str, str]:
    return {"start": f"{year}-01-01", "end": f"{year}-12-31"}


async def _send(reporting: ApiClient, method: str, path: str, what: str, body: Any) -> Any:
    """PUT or POST whose 409 says the report was already sent: answers the body (or
    ``{"conflict": True}``), raises ``ApiProblem`` otherwise."""
    try:
        response = await reporting.http.request(
            method, path, json=body, headers={"Authorization": f"Bearer {reporting.token}"}
        )
    except httpx.HTTPError as error:
        raise ApiProblem(
            503, "Le service est momentanément indisponible : réessayez dans un instant."
        ) from error
    if response.status_code == 409:
        return {"conflict": True}
    if response.is_error:
        raise problem_of(response, what)
    return response.json() if response.content else {}


async def _page(
    request: Request,
    person: Person,
    reporting: ApiClient,
    year: int,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    message: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    report = await reporting.get(
        f"{_org(person)}/report", "le rapport annuel", params={"year": year}
    )
    values = values or {}
    # The API says whether the year is finalised, whoever finalised it and however.
    finalised = report.get("finalised") or None
    return pages_of(request).render(
        request,
        "reports/rapport.html",
        status_code=status_code,
        title=("Erreur : " if errors or message else "") + f"Rapport annuel {year}",
        report=report,
        year=year,
        years=_years(),
        uses=USES,
        procedures=PROCEDURES,
        finalised=finalised,
        evaluation=report.get("evaluation") or ""
        if finalised
        else values.get("evaluation", report.get("evaluation") or ""),
        unsaved=values.get("evaluation") if finalised else None,
        values=values,
        errors=errors or {},
        message=message,
    )


@router.get("/rapport", name="report")
async def report_page(
    request: Request,
    person: PersonDep,
    reporting: ReportingDep,
    annee: Annotated[int | None, Query()] = None,
) -> Response:
    return await _page(request, person, reporting, _year(annee))


@router.post("/rapport/evaluation", dependencies=[CsrfChecked])
async def write_evaluation(
    request: Request,
    person: PersonDep,
    reporting: ReportingDep,
    annee: Annotated[int, Form()],
    evaluation: Annotated[str, Form()] = "",
) -> Response:
    year = _year(annee)
    values = {"evaluation": evaluation}
    if not evaluation.strip():
        errors = {"evaluation": "Écrivez l'évaluation avant de l'enregistrer."}
        return await _page(request, person, reporting, year, 422, errors, values=values)
    try:
        answer = await _send(
            reporting,
            "PUT",
            f"{_org(person)}/report/evaluation",
            "l'évaluation du rapport",
            {**_period(year), "text": evaluation.strip()},
        )
    except ApiProblem as problem:
        if problem.status not in (403, 422):
            raise
        errors = {"evaluation": problem.fields.get("text", "")} if "text" in problem.fields else {}
        return await _page(
            request, person, reporting, year, problem.status, errors, _said(problem), values
        )
    if "conflict" in answer:
        message = (
            f"Le rapport {year} a déjà été finalisé : son évaluation a été envoyée avec lui "
            "et ne peut plus être modifiée."
        )
        return await _page(request, person, reporting, year, 409, message=message, values=values)
    return RedirectResponse(f"/rapport?annee={year}#evaluation", status_code=303)


@router.post("/rapport/finaliser", dependencies=[CsrfChecked])
async def finalise(
    request: Request,
    person: PersonDep,
    reporting: ReportingDep,
    annee: Annotated[int, Form()],
    signataire_nom: Annotated[str, Form()] = "",
    signataire_titre: Annotated[str, Form()] = "",
) -> Response:
    year = _year(annee)
    name, title = signataire_nom.strip(), signataire_titre.strip()
    values = {"signataire_nom": name, "signataire_titre": title}
    if person.has("maire") and not person.has("responsable"):
        errors = {}
        if not name:
            errors["signataire_nom"] = "Indiquez le nom de la personne qui signe la lettre."
        if not title:
            errors["signataire_titre"] = "Indiquez la qualité de la personne qui signe la lettre."
        if errors:
            return await _page(request, person, reporting, year, 422, errors, values=values)
    body: dict[str, Any] = _period(year)
    if name:
        body["signatory"] = {"name": name, **({"title": title} if title else {})}
    try:
        answer = await _send(
            reporting, "POST", f"{_org(person)}/report/finalise", "la finalisation du rapport", body
        )
    except ApiProblem as problem:
        if problem.status not in (403, 422):
            raise
        errors = {}
        if "signatory" in problem.fields:
            errors["signataire_nom"] = "Indiquez le nom de la personne qui signe la lettre."
        return await _page(
            request, person, reporting, year, problem.status, errors, _said(problem), values
        )
    if "conflict" in answer:
        message = f"Le rapport {year} a déjà été finalisé : il ne peut l'être qu'une fois."
        return await _page(request, person, reporting, year, 409, message=message, values=values)
    return RedirectResponse(f"/rapport?annee={year}#finalisation", status_code=303)


def _file(response: httpx.Response, filename: str) -> Response:
    """The API's file, passed on as is (its type and bytes), never its headers otherwise."""
    return Response(
        response.content,
        media_type=response.headers.get("content-type", "application/octet-stream"),
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/rapport/apercu.pdf")
async def preview(
    person: PersonDep, reporting: ReportingDep, annee: Annotated[int | None, Query()] = None
) -> Response:
    year = _year(annee)
    answer = await reporting.request(
        "GET", f"{_org(person)}/report", "le rapport annuel", params={"year": year, "format": "pdf"}
    )
    return _file(answer, f"rapport-{year}-apercu.pdf")


@router.get("/rapport/finalise/{report_id}.pdf")
async def finalised_letter(
    report_id: uuid.UUID, person: PersonDep, reporting: ReportingDep
) -> Response:
    answer = await reporting.request(
        "GET",
        f"{_org(person)}/report/finalised/{report_id}",
        "ce rapport finalisé",
        params={"format": "pdf"},
    )
    return _file(answer, f"rapport-finalise-{report_id}.pdf")


def _departement(person: Person) -> str:
    if not person.departement:
        raise ApiProblem(403, "Votre compte ne désigne aucun département : pas de tableau.")
    return f"/v1/prefectures/{person.departement}/table"


def _totals(totals: dict[str, int]) -> list[int]:
    """The département's totals in the order of the page's columns."""
    columns = ["enregistrements", *(USE_TOTALS[key] for key, _ in USES)]
    return [totals.get(name, 0) for name in [*columns, "cameras_utilisees", "agents_habilites"]]


@router.get("/prefecture", name="prefecture")
async def prefecture_page(
    request: Request,
    person: PersonDep,
    reporting: ReportingDep,
    annee: Annotated[int | None, Query()] = None,
) -> Response:
    year = _year(annee)
    table = await reporting.get(
        _departement(person), "le tableau du département", params={"year": year}
    )
    return pages_of(request).render(
        request,
        "reports/prefecture.html",
        title=f"Tableau du département {table['departement']} — {year}",
        table=table,
        totals=_totals(table.get("totals") or {}),
        year=year,
        years=_years(),
        uses=USES,
    )


@router.get("/prefecture/tableau-{annee}.{extension}")
async def prefecture_file(
    annee: int, extension: str, person: PersonDep, reporting: ReportingDep
) -> Response:
    if extension not in ("pdf", "csv"):
        raise ApiProblem(404, "Introuvable : ce fichier n'existe pas.")
    year = _year(annee)
    answer = await reporting.request(
        "GET",
        _departement(person),
        "le tableau du département",
        params={"year": year, "format": extension},
    )
    return _file(answer, f"tableau-{person.departement}-{year}.{extension}")


def _said(problem: ApiProblem) -> str:
    return problem.message + (f" Précision du service : {problem.detail}" if problem.detail else "")
