"""Finalising a report: the figures, the évaluation, the signatory, the date and the letter
itself are frozen together, hashed, signed and logged. What was sent never changes: the same
period cannot be finalised twice, its évaluation can no longer be edited, and the letter is
served byte for byte as it was signed."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime

from nacl.signing import SigningKey
from pydantic import BaseModel, Field
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.reporting.statistics.models import FinalisedReport
from services.reporting.statistics.pdf import report_letter
from services.reporting.statistics.report import OrganisationInfo, Report, Signatory, build_report
from shared import audit
from shared.access import OrgAccess
from shared.audit import AuditAction, AuditEntry
from shared.errors import Conflict, UnprocessableEntity
from shared.signatures import b64encode, key_id, public_key_of

# What the signatures cover: a domain line, then the bytes (so that a report's signature can
# never be taken for a letter's, nor for anything else this key signs).
REPORT_DOMAIN = b"temoin-report-v1\n"
LETTER_DOMAIN = b"temoin-report-pdf-v1\n"
# The title under a responsable's name when the request does not give one (the seed's).
DEFAULT_TITLE = "Chef de service de la police municipale"


class SignatoryIn(BaseModel):
    name: str | None = Field(
        default=None, min_length=1, max_length=200, description="default: the responsable's"
    )
    title: str = Field(default=DEFAULT_TITLE, min_length=1, max_length=200)


def report_path(organisation_id: uuid.UUID, report_id: uuid.UUID) -> str:
    return f"/v1/organisations/{organisation_id}/report/finalised/{report_id}"


async def finalised_for(
    session: AsyncSession, organisation_id: uuid.UUID, start: date, end: date
) -> FinalisedReport | None:
    """The report finalised for exactly this period, if any (the first, for older ones)."""
    return await session.scalar(
        select(FinalisedReport)
        .where(
            FinalisedReport.organisation_id == organisation_id,
            FinalisedReport.period_start == start,
            FinalisedReport.period_end == end,
        )
        .order_by(FinalisedReport.version)
        .limit(1)
    )


async def refuse_if_finalised(
    session: AsyncSession, organisation_id: uuid.UUID, start: date, end: date, what: str
) -> None:
    existing = await finalised_for(session, organisation_id, start, end)
    if existing is not None:
        raise Conflict(
            f"the report for {start} to {end} was finalised on "
            f"{existing.finalised_at:%Y-%m-%d}: {what}",
            finalised=report_path(organisation_id, existing.id),
        )


async def _signatory(
    session: AsyncSession, access: OrgAccess, given: SignatoryIn | None
) -> Signatory:
    if given is not None and given.name is not None:
        return Signatory(name=given.name, title=given.title)
    row = (
        await session.execute(
            text(
                "SELECT first_name, last_name FROM vault.signatories "
                "WHERE organisation_id = :org AND subject = :subject"
            ),
            {"org": access.organisation_id, "subject": access.subject},
        )
    ).one_or_none()
    if row is None:
        raise UnprocessableEntity(
            "who signs the letter? You have no responsable's agent record in this "
            "organisation: give signatory.name (and signatory.title), or let the "
            "responsable finalise",
            field="body.signatory.name",
        )
    title = given.title if given is not None else DEFAULT_TITLE
    return Signatory(name=f"{row.first_name} {row.last_name}", title=title)


async def finalise(
    session: AsyncSession,
    key: SigningKey,
    access: OrgAccess,
    org: OrganisationInfo,
    start: date,
    end: date,
    signatory: SignatoryIn | None,
) -> FinalisedReport:
    """Freeze the report of ``org`` for the period, with its letter, as ``access`` sends it."""
    # One report per period: a second would make two different « sent » letters. Two
    # requests at once take turns here, so that the second sees the first and gets its 409.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": f"temoin-finalise:{org.id}:{start}:{end}"},
    )
    await refuse_if_finalised(session, org.id, start, end, "it cannot be finalised again")
    now = datetime.now(UTC)
    report = await build_report(session, org, start, end)
    report = report.model_copy(
        update={"signatory": await _signatory(session, access, signatory), "generated_at": now}
    )
    body = report.model_dump_json()
    letter = report_letter(report)
    row = FinalisedReport(
        id=uuid.uuid4(),
        organisation_id=org.id,
        period_start=start,
        period_end=end,
        body=body,
        sha256=hashlib.sha256(body.encode()).hexdigest(),
        signature=b64encode(key.sign(REPORT_DOMAIN + body.encode()).signature),
        key_id=key_id(public_key_of(key)),
        finalised_by=access.subject,
        finalised_at=now,
        pdf=letter,
        pdf_sha256=hashlib.sha256(letter).hexdigest(),
        pdf_signature=b64encode(key.sign(LETTER_DOMAIN + letter).signature),
        version=1,
    )
    session.add(row)
    await session.flush()
    await audit.append(
        session,
        AuditEntry(
            action=AuditAction.report_finalised,
            service="reporting",
            actor_subject=access.subject,
            actor_role=access.role.value,
            organisation_id=org.id,
            details={
                "report": str(row.id),
                "sha256": row.sha256,
                "pdf_sha256": row.pdf_sha256,
                "period": [start.isoformat(), end.isoformat()],
                "signatory": report.signatory.model_dump() if report.signatory else None,
            },
        ),
    )
    return row


def frozen_letter(row: FinalisedReport) -> bytes:
    """The letter as signed; reports finalised before letters were frozen are rendered again
    from their frozen figures (their hash was never signed, and the answer says so)."""
    if row.pdf is not None:
        return row.pdf
    return report_letter(Report.model_validate_json(row.body))
