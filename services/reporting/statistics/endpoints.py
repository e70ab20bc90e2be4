"""The reports: an organisation's yearly report to the préfet (R241-17) for the maire and the
responsable, and a préfecture's table over its département, in JSON, CSV (and PDF)."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from services.reporting.settings import ReportingSettings
from services.reporting.statistics import finalisation
from services.reporting.statistics.finalisation import SignatoryIn, refuse_if_finalised
from services.reporting.statistics.models import Evaluation, FinalisedReport
from services.reporting.statistics.pdf import prefecture_table_pdf, report_letter
from services.reporting.statistics.report import (
    CSV_FIELDS,
    Report,
    ReportDay,
    ReportYear,
    Signatory,
    build_report,
    check_period,
    csv_row,
    organisation_info,
    organisations_of,
)
from shared.access import OrgAccess, departement_access, organisation_access
from shared.auth import Principal, Role
from shared.errors import NotFound, UnprocessableEntity
from shared.openapi import problems
from shared.schemas import JsonBody
from shared.signatures import b64encode, key_id, public_key_of
from shared.web import SessionDep

router = APIRouter(prefix="/v1", tags=["reports"])

# R241-17: the report is the service's (the maire's and the responsable's); the préfecture
# gets statistics only, for its département.
Reader = Annotated[OrgAccess, Depends(organisation_access(Role.maire, Role.responsable))]
Author = Annotated[OrgAccess, Depends(organisation_access(Role.responsable))]
Format = Literal["json", "csv", "pdf"]
REPORT = "/organisations/{org_id}/report"
# What `format=csv` and `format=pdf` answer, besides the JSON of the response model.
FORMATS = {
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "application/pdf": {"schema": {"type": "string", "format": "binary"}},
    }
}


def _period(year: int | None, start: date | None, end: date | None) -> tuple[date, date]:
    if start is None and end is None:
        year = year or datetime.now(UTC).year
        return date(year, 1, 1), date(year, 12, 31)
    if start is None or end is None:
        raise UnprocessableEntity("give both start and end, or a year", field="query.start")
    check_period(start, end)
    return start, end


def _csv(header: list[str], rows: list[list[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _render(report: Report, fmt: Format) -> Response:
    if fmt == "csv":
        body = _csv([name for name, _ in CSV_FIELDS], [csv_row(report)])
        return Response(body, media_type="text/csv; charset=utf-8")
    if fmt == "pdf":
        return Response(report_letter(report), media_type="application/pdf")
    return Response(report.model_dump_json(), media_type="application/json")


class FinalisationOf(BaseModel):
    """The report finalised for a period, as the live report's answer names it."""

    id: uuid.UUID
    href: str = Field(description="the finalised report (`?format=pdf`: the letter as sent)")
    finalised_at: datetime
    finalised_by: str = Field(description="the subject of the person who finalised it")
    signatory: Signatory | None = Field(
        description="who signs the letter as sent; null for reports finalised before the "
        "signatory was frozen with them"
    )


class LiveReport(Report):
    """The report as the events give it now, and whether its period was finalised."""

    finalised: FinalisationOf | None = Field(
        description="the report finalised for exactly this period (its figures are those "
        "sent, which later events do not change); null while the period is not finalised"
    )


def _finalisation_of(row: FinalisedReport) -> FinalisationOf:
    return FinalisationOf(
        id=row.id,
        href=finalisation.report_path(row.organisation_id, row.id),
        finalised_at=row.finalised_at,
        finalised_by=row.finalised_by,
        signatory=Report.model_validate_json(row.body).signatory,
    )


@router.get(REPORT, response_model=LiveReport, responses={200: FORMATS})
async def organisation_report(
    access: Reader,
    session: SessionDep,
    year: ReportYear | None = None,
    start: ReportDay | None = None,
    end: ReportDay | None = None,
    format: Format = "json",
) -> Response:
    """The report for a calendar year (default: this one) or any date range (inclusive); in
    JSON, with the report finalised for that period if there is one (`finalised`)."""
    first, last = _period(year, start, end)
    org = await organisation_info(session, access.organisation_id)
    report = await build_report(session, org, first, last)
    if format != "json":
        return _render(report, format)
    sent = await finalisation.finalised_for(session, org.id, first, last)
    live = LiveReport(
        **report.model_dump(), finalised=_finalisation_of(sent) if sent is not None else None
    )
    return Response(live.model_dump_json(), media_type="application/json")


class EvaluationIn(JsonBody):
    start: ReportDay
    end: ReportDay
    text: str = Field(min_length=1, max_length=20000)


@router.put(f"{REPORT}/evaluation", status_code=204)
async def write_evaluation(data: EvaluationIn, access: Author, session: SessionDep) -> None:
    """« Évaluation de l'impact de l'emploi des caméras individuelles dans les rapports des
    agents avec la population » (R241-17), written by the responsable for the period."""
    check_period(data.start, data.end)
    await organisation_info(session, access.organisation_id)
    await refuse_if_finalised(
        session, access.organisation_id, data.start, data.end, "its évaluation was sent with it"
    )
    existing = await session.get(Evaluation, (access.organisation_id, data.start, data.end))
    if existing is None:
        session.add(
            Evaluation(
                organisation_id=access.organisation_id,
                period_start=data.start,
                period_end=data.end,
                text=data.text,
                written_by=access.subject,
                written_at=datetime.now(UTC),
            )
        )
    else:
        existing.text, existing.written_by = data.text, access.subject
        existing.written_at = datetime.now(UTC)


class FinaliseIn(JsonBody):
    start: ReportDay
    end: ReportDay
    signatory: SignatoryIn | None = Field(
        default=None,
        description="who signs the letter; default: the responsable finalising, under the "
        "title « Chef de service de la police municipale »",
    )


class Finalised(BaseModel):
    id: uuid.UUID
    version: int
    body: str = Field(description="the report exactly as signed and hashed (JSON text)")
    sha256: str
    key_id: str
    signature: str = Field(description="Ed25519 over 'temoin-report-v1\\n' + the report JSON")
    pdf_sha256: str | None = Field(
        description="SHA-256 of the letter as sent (`?format=pdf`); null for reports "
        "finalised before letters were frozen"
    )
    pdf_signature: str | None = Field(
        description="Ed25519 over 'temoin-report-pdf-v1\\n' + the letter's bytes"
    )
    finalised_at: datetime
    report: Report


def _finalised(row: FinalisedReport) -> Finalised:
    return Finalised(
        id=row.id,
        version=row.version,
        body=row.body,
        sha256=row.sha256,
        key_id=row.key_id,
        signature=row.signature,
        pdf_sha256=row.pdf_sha256,
        pdf_signature=row.pdf_signature,
        finalised_at=row.finalised_at,
        report=Report.model_validate_json(row.body),
    )


@router.post(
    f"{REPORT}/finalise", response_model=Finalised, status_code=201, responses=problems(409)
)
async def finalise(
    data: FinaliseIn, request: Request, access: Reader, session: SessionDep
) -> Finalised:
    """Freeze the report and its letter as sent: hashed, signed, logged; later events do
    not change it. A period is finalised once (409 names the report already sent)."""
    settings: ReportingSettings = request.app.state.settings
    check_period(data.start, data.end)
    org = await organisation_info(session, access.organisation_id)
    row = await finalisation.finalise(
        session, settings.signing_key(), access, org, data.start, data.end, data.signatory
    )
    return _finalised(row)


@router.get(
    f"{REPORT}/finalised/{{report_id}}",
    response_model=Finalised,
    responses={200: FORMATS},
)
async def finalised_report(
    report_id: uuid.UUID, access: Reader, session: SessionDep, format: Format = "json"
) -> Response:
    """A finalised report as sent: `format=pdf` is the letter, byte for byte the one whose
    SHA-256 was signed and logged."""
    row = await session.get(FinalisedReport, report_id)
    if row is None or row.organisation_id != access.organisation_id:
        raise NotFound("no such finalised report")
    if format == "pdf":
        letter = finalisation.frozen_letter(row)
        return Response(
            letter,
            media_type="application/pdf",
            headers={"Repr-Digest": f"sha-256=:{b64encode(hashlib.sha256(letter).digest())}:"},
        )
    if format == "csv":
        return _render(Report.model_validate_json(row.body), "csv")
    return Response(_finalised(row).model_dump_json(), media_type="application/json")


@router.get("/reports/public-key")
async def reports_public_key(request: Request) -> dict[str, str]:
    """The key that signs finalised reports (public: anyone may check one)."""
    settings: ReportingSettings = request.app.state.settings
    key = public_key_of(settings.signing_key())
    return {"algorithm": "Ed25519", "public_key": key, "key_id": key_id(key)}


class PrefectureTable(BaseModel):
    departement: str
    period: dict[str, date]
    rows: list[Report]
    totals: dict[str, int]


Prefecture = Annotated[Principal, Depends(departement_access())]


@router.get(
    "/prefectures/{departement}/table", response_model=PrefectureTable, responses={200: FORMATS}
)
async def prefecture_table(
    departement: Annotated[str, Path(pattern=r"^(\d{2,3}|2[AB])$")],
    principal: Prefecture,
    session: SessionDep,
    year: ReportYear | None = None,
    format: Format = "json",
) -> Response:
    """One row per organisation of the département (those with no data included, marked as
    such) and totals, for a year (default: this one)."""
    start, end = _period(year, None, None)
    rows = [
        await build_report(session, org, start, end)
        for org in await organisations_of(session, departement)
    ]
    totals = {
        name: sum(int(value(r) or 0) for r in rows)
        for name, value in CSV_FIELDS
        if name not in ("organisation", "departement", "periode_debut", "periode_fin",
                        "delai_median_minutes", "donnees")
    }  # fmt: skip
    if format == "csv":
        lines = [csv_row(r) for r in rows]
        lines.append(
            ["TOTAL", departement, start.isoformat(), end.isoformat(), *totals.values(), "", ""]
        )
        return Response(
            _csv([n for n, _ in CSV_FIELDS], lines), media_type="text/csv; charset=utf-8"
        )
    table = PrefectureTable(
        departement=departement, period={"start": start, "end": end}, rows=rows, totals=totals
    )
    if format == "pdf":
        return Response(prefecture_table_pdf(table), media_type="application/pdf")
    return Response(table.model_dump_json(), media_type="application/json")
