"""The yearly report to the préfet (R241-17) for an organisation and a period, computed from
the daily aggregates (its cost depends on the number of days, not of recordings), and the
préfecture's table over the organisations of its département."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import and_, func, literal_column, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.reporting.statistics.consumer import DELAY_STEP
from services.reporting.statistics.models import (
    CameraDay,
    DailyCount,
    DelayBucket,
    Evaluation,
    HabilitationPeriod,
    ProcedureUse,
)
from shared.errors import NotFound, UnprocessableEntity

PROCEDURE_TYPES = ("judiciaire", "administrative", "disciplinaire")
USE_TYPES = ("judiciaire", "administrative", "formation", "disciplinaire")
# The years a report may cover: from the first year of body cameras for municipal police to
# a bound far enough from the calendar's end that no computed day can overflow it.
FIRST_YEAR = 2016
LAST_YEAR = 2100


def _in_report_years(day: date) -> date:
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise ValueError(f"a report's days lie between {FIRST_YEAR} and {LAST_YEAR}")
    return day


ReportYear = Annotated[int, Field(ge=FIRST_YEAR, le=LAST_YEAR)]
ReportDay = Annotated[date, AfterValidator(_in_report_years)]


class OrganisationInfo(BaseModel):
    id: uuid.UUID
    name: str
    departement: str
    place: str | None = Field(
        default=None, description="the commune the letter is written from (its first commune)"
    )


class Signatory(BaseModel):
    """Who signs the letter: frozen with a finalised report."""

    name: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1, max_length=200)


class Period(BaseModel):
    start: date
    end: date = Field(description="inclusive")


class Month(BaseModel):
    month: str  # YYYY-MM
    recordings: int
    consultations: int
    extractions: int


class Report(BaseModel):
    """JSON schema of the report (docs/reporting.md)."""

    organisation: OrganisationInfo
    period: Period
    cameras_used: int = Field(description="« nombre de caméras utilisées »")
    agents_habilites: int = Field(description="« nombre d'agents habilités »")
    procedures: dict[str, int] = Field(
        description="distinct procedures per type for which recordings were consulted and "
        "extracted (R241-17)"
    )
    recordings: int = Field(description="recordings made on interventions")
    recordings_used: dict[str, int] = Field(
        description="recordings used per procedure type (judiciaire, administrative, "
        "formation, disciplinaire), as in the 2018 letter"
    )
    consultations: int
    extractions: int
    erasures: int
    median_upload_delay_minutes: float | None = Field(
        description="from the end of recording to its arrival in the vault"
    )
    monthly: list[Month]
    evaluation: str | None = Field(description="« évaluation de l'impact », by the responsable")
    signatory: Signatory | None = Field(
        default=None, description="who signs the letter (set when finalising)"
    )
    has_data: bool
    generated_at: datetime


def check_period(start: date, end: date) -> None:
    if end < start:
        raise UnprocessableEntity(
            "the period is empty or inverted: end must be on or after start", field="query.end"
        )
    if end - start > timedelta(days=3 * 366):
        raise UnprocessableEntity("a report covers at most three years", field="query.end")


async def organisation_info(session: AsyncSession, org_id: uuid.UUID) -> OrganisationInfo:
    row = (
        await session.execute(
            text(
                "SELECT id, name, departement, place FROM vault.organisation_directory "
                "WHERE id = :id"
            ),
            {"id": org_id},
        )
    ).one_or_none()
    if row is None:
        raise NotFound("no such organisation")
    return OrganisationInfo(id=row.id, name=row.name, departement=row.departement, place=row.place)


async def organisations_of(session: AsyncSession, departement: str) -> list[OrganisationInfo]:
    rows = await session.execute(
        text(
            "SELECT id, name, departement, place FROM vault.organisation_directory "
            "WHERE departement = :d ORDER BY name"
        ),
        {"d": departement},
    )
    return [
        OrganisationInfo(id=r.id, name=r.name, departement=r.departement, place=r.place)
        for r in rows
    ]


def _median(buckets: list[tuple[int, int]]) -> float | None:
    """The middle of the bucket that holds the median (on the 10% scale of `delay_bucket`,
    within 5% of the true median), 0 when under a minute."""
    total = sum(count for _, count in buckets)
    if total == 0:
        return None
    seen = 0
    for minutes, count in sorted(buckets):
        seen += count
        if seen * 2 >= total:
            return round(minutes * math.sqrt(DELAY_STEP), 1)
    return None


async def build_report(
    session: AsyncSession, org: OrganisationInfo, start: date, end: date
) -> Report:
    check_period(start, end)
    in_period = and_(DailyCount.organisation_id == org.id, DailyCount.day.between(start, end))
    totals: dict[str, Any] = dict(
        (
            await session.execute(
                select(DailyCount.metric, func.sum(DailyCount.count))
                .where(in_period)
                .group_by(DailyCount.metric)
            )
        ).all()
    )
    # A literal format, so that SELECT and GROUP BY hold the same expression.
    month_of = func.to_char(DailyCount.day, literal_column("'YYYY-MM'"))
    monthly_rows = await session.execute(
        select(month_of, DailyCount.metric, func.sum(DailyCount.count))
        .where(in_period)
        .group_by(month_of, DailyCount.metric)
    )
    months: dict[str, dict[str, int]] = {}
    for month, metric, count in monthly_rows.all():
        months.setdefault(month, {})[metric] = int(count)
    cameras = await session.scalar(
        select(func.count(func.distinct(CameraDay.camera))).where(
            CameraDay.organisation_id == org.id, CameraDay.day.between(start, end)
        )
    )
    period_start = datetime.combine(start, datetime.min.time(), UTC)
    period_end = datetime.combine(end + timedelta(days=1), datetime.min.time(), UTC)
    agents = await session.scalar(
        select(func.count(func.distinct(HabilitationPeriod.agent_id))).where(
            HabilitationPeriod.organisation_id == org.id,
            HabilitationPeriod.granted_at < period_end,
            or_(
                HabilitationPeriod.withdrawn_at.is_(None),
                HabilitationPeriod.withdrawn_at >= period_start,
            ),
        )
    )
    procedures: dict[str, Any] = dict(
        (
            await session.execute(
                select(ProcedureUse.type, func.count(func.distinct(ProcedureUse.procedure_id)))
                .where(ProcedureUse.organisation_id == org.id, ProcedureUse.day.between(start, end))
                .group_by(ProcedureUse.type)
            )
        ).all()
    )
    delays = (
        await session.execute(
            select(DelayBucket.minutes, func.sum(DelayBucket.count))
            .where(DelayBucket.organisation_id == org.id, DelayBucket.day.between(start, end))
            .group_by(DelayBucket.minutes)
        )
    ).all()
    evaluation = await session.get(Evaluation, (org.id, start, end))
    recordings = int(totals.get("recordings", 0))
    return Report(
        organisation=org,
        period=Period(start=start, end=end),
        cameras_used=int(cameras or 0),
        agents_habilites=int(agents or 0),
        procedures={t: int(procedures.get(t, 0)) for t in PROCEDURE_TYPES},
        recordings=recordings,
        recordings_used={t: int(totals.get(f"used_{t}", 0)) for t in USE_TYPES},
        consultations=int(totals.get("consultations", 0)),
        extractions=int(totals.get("extractions", 0)),
        erasures=int(totals.get("erasures", 0)),
        median_upload_delay_minutes=_median([(int(m), int(c)) for m, c in delays]),
        monthly=[
            Month(
                month=month,
                recordings=values.get("recordings", 0),
                consultations=values.get("consultations", 0),
                extractions=values.get("extractions", 0),
            )
            for month, values in sorted(months.items())
        ],
        evaluation=evaluation.text if evaluation else None,
        has_data=bool(totals) or bool(agents),
        generated_at=datetime.now(UTC),
    )


CSV_FIELDS: list[tuple[str, Callable[[Report], Any]]] = [
    ("organisation", lambda r: r.organisation.name),
    ("departement", lambda r: r.organisation.departement),
    ("periode_debut", lambda r: r.period.start.isoformat()),
    ("periode_fin", lambda r: r.period.end.isoformat()),
    ("cameras_utilisees", lambda r: r.cameras_used),
    ("agents_habilites", lambda r: r.agents_habilites),
    ("procedures_judiciaires", lambda r: r.procedures["judiciaire"]),
    ("procedures_administratives", lambda r: r.procedures["administrative"]),
    ("procedures_disciplinaires", lambda r: r.procedures["disciplinaire"]),
    ("enregistrements", lambda r: r.recordings),
    ("enregistrements_procedure_judiciaire", lambda r: r.recordings_used["judiciaire"]),
    ("enregistrements_procedure_administrative", lambda r: r.recordings_used["administrative"]),
    ("enregistrements_formation", lambda r: r.recordings_used["formation"]),
    ("enregistrements_procedure_disciplinaire", lambda r: r.recordings_used["disciplinaire"]),
    ("consultations", lambda r: r.consultations),
    ("extractions", lambda r: r.extractions),
    ("effacements", lambda r: r.erasures),
    ("delai_median_minutes", lambda r: r.median_upload_delay_minutes),
    ("donnees", lambda r: "oui" if r.has_data else "aucune donnée"),
]


def csv_row(report: Report) -> list[Any]:
    return [value(report) for _, value in CSV_FIELDS]
