"""Finding recordings and viewing them (R241-12): metadata search scoped by role, and
consultations, each logged with its motif (R241-14) and opening a short-lived media URL."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, exists
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.directory.models import Organisation
from services.vault.procedures.models import Procedure, ProcedureRecording
from services.vault.recordings.erasure import held_by_open_procedure
from services.vault.recordings.media import MediaGrant, sign_grant
from services.vault.recordings.models import Consultation, Recording, RecordingStatus
from services.vault.recordings.repository import Consulted
from services.vault.recordings.schemas import ConsultationIn
from services.vault.settings import VaultSettings
from shared import audit
from shared.access import OrgAccess, withheld_reason
from shared.audit import AuditAction, AuditEntry, Outcome
from shared.auth import Role
from shared.db import page, utc_now
from shared.errors import Conflict, Forbidden, Gone, NotFound, UnprocessableEntity

WEARER_ACCESS = (
    "a maire or responsable may allow it (the organisation's wearer_access, "
    "PUT /v1/organisations/{org_id}; loi 2021-646 art. 45)"
)


class ViewingService:
    def __init__(self, session: AsyncSession, settings: VaultSettings, access: OrgAccess) -> None:
        self.session = session
        self.settings = settings
        self.access = access
        self.org_id = access.organisation_id

    @property
    def as_wearer(self) -> bool:
        """Acting as the wearing agent: only their own recordings (loi 2021-646 art. 45)."""
        return self.access.role == Role.agent

    async def search(
        self,
        *,
        started_from: datetime | None,
        started_until: datetime | None,
        agent_id: uuid.UUID | None,
        camera_id: uuid.UUID | None,
        place: str | None,
        procedure_id: uuid.UUID | None,
        status: str | None,
        station_id: uuid.UUID | None = None,
        received_since: datetime | None = None,
        erasure_before: datetime | None = None,
        limit: int,
        offset: int,
    ) -> tuple[list[Recording], int]:
        filters: list[ColumnElement[bool]] = []
        if self.as_wearer:
            filters.append(Recording.agent_id == self.access.principal.agent_id)
        if started_from is not None:
            filters.append(Recording.started_at >= started_from)
        if started_until is not None:
            filters.append(Recording.started_at < started_until)
        if agent_id is not None:
            filters.append(Recording.agent_id == agent_id)
        if camera_id is not None:
            filters.append(Recording.camera_id == camera_id)
        if place:
            filters.append(Recording.address.ilike(f"%{place}%"))
        if status is not None:
            filters.append(Recording.status == status)
        if procedure_id is not None:
            filters.append(
                exists().where(
                    ProcedureRecording.recording_id == Recording.id,
                    ProcedureRecording.procedure_id == procedure_id,
                )
            )
        if station_id is not None:
            filters.append(Recording.station_id == station_id)
        if received_since is not None:
            filters.append(Recording.received_at >= received_since)
        order_by: list[Any] = [Recording.started_at.desc()]
        if erasure_before is not None:
            # What the erasure job will take by then (services/vault/recordings/erasure.py):
            # past retention, not erased, no open procedure holding it. Only sealed ones: a
            # damaged recording is the scrub's list, not one to attach before it goes.
            filters += [
                Recording.retain_until < erasure_before,
                Recording.status == RecordingStatus.sealed.value,
                ~held_by_open_procedure(),
            ]
            order_by = [Recording.retain_until]
        return await page(
            self.session,
            Recording,
            [Recording.organisation_id == self.org_id, *filters],
            limit=limit,
            offset=offset,
            order_by=order_by,
        )

    async def recording(self, recording_id: uuid.UUID) -> Recording:
        recording = await self.session.get(Recording, recording_id)
        if recording is None or recording.organisation_id != self.org_id:
            raise NotFound("no such recording")
        if self.as_wearer and recording.agent_id != self.access.principal.agent_id:
            raise NotFound("no such recording")  # the wearer sees only their own
        return recording

    async def consult(
        self, recording_id: uuid.UUID, data: ConsultationIn
    ) -> tuple[str, Consultation]:
        """Log the consultation and return its signed media URL."""
        recording = await self.recording(recording_id)
        if self.as_wearer:
            await self._check_wearer(recording, data)
        if recording.status == RecordingStatus.erased.value:
            raise Gone("this recording was erased at the end of its retention")
        if recording.status == RecordingStatus.damaged.value:
            raise Conflict("this recording failed its integrity check: it cannot be viewed")
        if data.procedure_id is not None:
            procedure = await self.session.get(Procedure, data.procedure_id)
            if procedure is None or procedure.organisation_id != self.org_id:
                raise NotFound("no such procedure")
        consultation, details = await open_consultation(
            self.session, self.settings, self.access, recording.id, data.motif, data.procedure_id
        )
        if data.purpose is not None:
            details["purpose"] = data.purpose.value
        await self._log(AuditAction.consultation, recording, details, motif=data.motif)
        return media_url(consultation, self.settings), consultation

    async def close(self, recording_id: uuid.UUID, consultation_id: uuid.UUID) -> None:
        """End one's own consultation: its media URL stops working at once."""
        consultation = await self.session.get(Consultation, consultation_id)
        if (
            consultation is None
            or consultation.organisation_id != self.org_id
            or consultation.recording_id != recording_id
            or consultation.subject != self.access.subject
        ):
            raise NotFound("no such consultation")
        if consultation.closed_at is None:
            consultation.closed_at = utc_now()
            await self.session.flush()

    async def _check_wearer(self, recording: Recording, data: ConsultationIn) -> None:
        organisation = await self.session.get(Organisation, self.org_id)
        assert organisation is not None
        if not organisation.wearer_access:
            raise Forbidden(
                f"this service does not give wearers access to their recordings: {WEARER_ACCESS}"
            )
        if data.purpose is None:
            raise UnprocessableEntity(
                "a wearer views a recording only for one of the purposes of loi 2021-646 "
                "art. 45: give `purpose`",
                field="body.purpose",
            )

    async def _log(
        self,
        action: AuditAction,
        recording: Recording,
        details: dict[str, Any],
        *,
        motif: str | None = None,
        outcome: Outcome = Outcome.success,
    ) -> None:
        await audit.append(
            self.session,
            AuditEntry(
                action=action,
                service="vault",
                actor_subject=self.access.subject,
                actor_role=self.access.role.value,
                organisation_id=self.org_id,
                recording_ids=[recording.id],
                outcome=outcome,
                motif=motif,
                details=details,
            ),
        )


async def open_consultation(
    session: AsyncSession,
    settings: VaultSettings,
    access: OrgAccess,
    recording_id: uuid.UUID,
    motif: str,
    procedure_id: uuid.UUID | None,
    derivative_id: uuid.UUID | None = None,
) -> tuple[Consultation, dict[str, Any]]:
    """A consultation of a recording (or of its anonymised copy, ``derivative_id``) by the
    person acting, flushed, and the details its `consultation` entry states (the caller logs
    it, R241-14, with what it adds); its media URL lives ``media_url_ttl_s``."""
    consultation = Consultation(
        id=uuid.uuid4(),
        organisation_id=access.organisation_id,
        recording_id=recording_id,
        derivative_id=derivative_id,
        subject=access.subject,
        role=access.role.value,
        motif=motif,
        procedure_id=procedure_id,
        expires_at=utc_now() + timedelta(seconds=settings.media_url_ttl_s),
    )
    session.add(consultation)
    await session.flush()
    details: dict[str, Any] = {
        "consultation": str(consultation.id),
        "expires_at": consultation.expires_at.isoformat(),
    }
    if procedure_id is not None:
        details["procedure"] = str(procedure_id)
    return consultation, details


def media_url(consultation: Consultation, settings: VaultSettings) -> str:
    """The consultation's signed media URL (recordings/media.py)."""
    grant = MediaGrant(
        consultation.id, consultation.recording_id, consultation.subject, consultation.expires_at
    )
    return f"/v1/media/{sign_grant(grant, settings.media_signing_key())}"


def still_allowed(consulted: Consulted) -> Forbidden | None:
    """Why the viewer of a consultation may no longer view its recording, or None. Checked at
    every media request, so that a decision (a habilitation withdrawn, an agent deactivated,
    wearer access turned off, the consultation closed) applies at once, not when the URL
    expires. Roles that the directory does not hold (maire, préfecture) stand on the token
    that opened the consultation."""
    consultation = consulted.consultation
    if consultation.closed_at is not None:
        return Forbidden("this consultation was closed: open a new one")
    if consultation.expires_at <= utc_now():
        return Forbidden("this consultation has expired: open a new one")
    role = Role(consultation.role)
    reason = withheld_reason(
        role, consulted.person, consultation.organisation_id, consultation.subject
    )
    if reason is not None:
        return Forbidden(f"the viewer no longer holds the role {role.value}: {reason}")
    if role == Role.agent:
        person = consulted.person
        if not consulted.wearer_access:
            return Forbidden(
                f"this service no longer gives wearers access to their recordings: {WEARER_ACCESS}"
            )
        if person is None or person.agent_id != consulted.recording.agent_id:
            return Forbidden("a wearer views only their own recordings")
    return None
