"""Anonymised copies for training (R241-12: a recording may be extracted for training only as
an anonymised copy). Asked for within an open `formation` procedure the recording is attached
to; made by the background job (jobs.py); viewed through a consultation (logged, R241-14) and
approved or rejected by a person before it can be extracted (procedures/extraction.py)."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.derivatives import schemas
from services.vault.derivatives.engine import DEFAULT_PARAMETERS
from services.vault.derivatives.models import ACTIVE, SEALED, Derivative, DerivativeStatus
from services.vault.derivatives.repository import DerivativeRepository
from services.vault.procedures.models import ProcedureType
from services.vault.procedures.service import ProcedureService
from services.vault.recordings.models import Consultation, Recording, RecordingStatus
from services.vault.recordings.viewing import media_url, open_consultation
from services.vault.settings import VaultSettings
from shared import audit
from shared.access import OrgAccess
from shared.audit import AuditAction, AuditEntry, Outcome
from shared.db import flush_or_conflict, utc_now
from shared.errors import Conflict, Gone, NotFound, UnprocessableEntity
from shared.storage import ObjectStore

ONE_AT_A_TIME = (
    "an anonymised copy of this recording is already being made: wait for it, or cancel it"
)


def default_parameters() -> dict[str, Any]:
    """The engine's defaults, recorded with the demande: the copy is made with these whatever
    a later default becomes."""
    return asdict(DEFAULT_PARAMETERS)


class DerivativeService:
    def __init__(
        self,
        session: AsyncSession,
        store: ObjectStore,
        settings: VaultSettings,
        access: OrgAccess,
    ) -> None:
        self.session = session
        self.settings = settings
        self.access = access
        self.org_id = access.organisation_id
        self.repository = DerivativeRepository(session)
        self.procedures = ProcedureService(session, store, access, settings)

    async def derivative(self, derivative_id: uuid.UUID) -> Derivative:
        derivative = await self.repository.get(self.org_id, derivative_id)
        if derivative is None:
            raise NotFound("no such anonymised copy")
        return derivative

    async def search(
        self,
        *,
        recording_id: uuid.UUID | None,
        procedure_id: uuid.UUID | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Derivative], int]:
        return await self.repository.search(
            self.org_id,
            recording_id=recording_id,
            procedure_id=procedure_id,
            limit=limit,
            offset=offset,
        )

    async def request(self, procedure_id: uuid.UUID, data: schemas.DerivativeIn) -> Derivative:
        """The demande: a job waiting for the runner (202)."""
        procedure = await self.procedures.procedure(procedure_id)
        if procedure.type != ProcedureType.formation.value:
            raise UnprocessableEntity(
                "an anonymised copy is made for training only: within a `formation` procedure",
                field="procedure.type",
            )
        if not procedure.is_open:
            raise Conflict("this procedure is closed")
        if await self.repository.get(self.org_id, data.recording_id) is not None:
            raise UnprocessableEntity(
                "this is an anonymised copy: a copy is made from the original recording only",
                field="body.recording_id",
            )
        recording = await self.procedures.recording(data.recording_id)
        # Locked: a demande and the erasure job do not cross (the erasure skips locked rows).
        await self.session.refresh(recording, with_for_update=True)
        if recording.status == RecordingStatus.erased.value or recording.wrapped_key is None:
            raise Gone("this recording was erased")
        if recording.status == RecordingStatus.damaged.value:
            raise Conflict("this recording failed its integrity check: no copy can be made")
        if not await self.procedures.holds(procedure.id, recording.id):
            raise Conflict(
                "attach the recording to the formation procedure before asking for its "
                "anonymised copy"
            )
        if await self.repository.active_for(recording.id) is not None:
            raise Conflict(ONE_AT_A_TIME)
        parameters = default_parameters()
        if data.parameters is not None:
            parameters.update(data.parameters.model_dump(exclude_none=True))
        derivative = Derivative(
            id=uuid.uuid4(),
            organisation_id=self.org_id,
            recording_id=recording.id,
            procedure_id=procedure.id,
            requested_by=self.access.subject,
            requested_role=self.access.role.value,
            motif=data.motif,
            parameters=parameters,
            status=DerivativeStatus.en_attente.value,
            attempt=0,
            cancel_requested=False,
            frames_done=0,
            chunk_size=0,
            size=0,
            sealed_size=0,
            content_type="video/mp4",
        )
        self.session.add(derivative)
        await flush_or_conflict(self.session, ONE_AT_A_TIME)
        await self._log(
            AuditAction.derivation_requested,
            derivative,
            recording,
            motif=data.motif,
            procedure_ref=procedure.reference,
            details={
                "procedure": str(procedure.id),
                "type": procedure.type,
                "original_sha256": recording.sha256,
                "parameters": parameters,
            },
        )
        return derivative

    async def cancel(self, derivative_id: uuid.UUID) -> Derivative:
        """A waiting job ends at once; a running one at its worker's next heartbeat."""
        derivative = await self.derivative(derivative_id)
        await self.session.refresh(derivative, with_for_update=True)
        if derivative.status not in ACTIVE:
            raise Conflict("this anonymised copy is no longer being made: nothing to cancel")
        if derivative.status == DerivativeStatus.en_attente.value:
            derivative.status = DerivativeStatus.annule.value
            derivative.finished_at = utc_now()
            derivative.reason = f"Fabrication annulée par {self.access.subject}."
            recording = await self.session.get(Recording, derivative.recording_id)
            assert recording is not None
            await log_finished(
                self.session, derivative, recording, self.access.subject, self.access.role.value
            )
        else:
            derivative.cancel_requested = True
        await self.session.flush()
        return derivative

    async def consult(
        self, derivative_id: uuid.UUID, data: schemas.DerivativeConsultationIn
    ) -> tuple[str, Consultation]:
        """A consultation of the copy (logged like any, R241-14) and its signed media URL."""
        derivative = await self.derivative(derivative_id)
        if derivative.status == DerivativeStatus.efface.value:
            raise Gone("this anonymised copy was erased with its recording")
        if derivative.status not in SEALED or derivative.wrapped_key is None:
            raise Conflict("this anonymised copy is not made yet: nothing to view")
        consultation, details = await open_consultation(
            self.session,
            self.settings,
            self.access,
            derivative.recording_id,
            data.motif,
            derivative.procedure_id,
            derivative.id,
        )
        recording = await self.session.get(Recording, derivative.recording_id)
        assert recording is not None
        await self._log(
            AuditAction.consultation, derivative, recording, motif=data.motif, details=details
        )
        return media_url(consultation, self.settings), consultation

    async def review(self, derivative_id: uuid.UUID, data: schemas.ReviewIn) -> Derivative:
        """Approve or reject a copy « à vérifier », having viewed it."""
        derivative = await self.derivative(derivative_id)
        await self.session.refresh(derivative, with_for_update=True)
        if derivative.status != DerivativeStatus.a_verifier.value:
            raise Conflict("only an anonymised copy waiting for review can be approved or rejected")
        if not await self.repository.consulted_by(derivative.id, self.access.subject):
            raise Conflict(
                "view the anonymised copy (open a consultation of it) before reviewing it"
            )
        derivative.status = data.decision
        derivative.reviewed_by = self.access.subject
        derivative.reviewed_at = utc_now()
        derivative.review_reason = data.reason
        await self.session.flush()
        recording = await self.session.get(Recording, derivative.recording_id)
        assert recording is not None
        await self._log(
            AuditAction.derivation_reviewed,
            derivative,
            recording,
            motif=data.reason,
            details={"decision": data.decision, "sha256": derivative.sha256},
        )
        return derivative

    async def _log(
        self,
        action: AuditAction,
        derivative: Derivative,
        recording: Recording,
        *,
        motif: str | None = None,
        procedure_ref: str | None = None,
        details: dict[str, Any],
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
                motif=motif,
                procedure_ref=procedure_ref,
                details={"derivative": str(derivative.id), **details},
            ),
        )


async def log_finished(
    session: AsyncSession,
    derivative: Derivative,
    recording: Recording,
    actor: str = "temoin-vault:derivatives",
    role: str = "system",
) -> None:
    """The job's end, made or not (R241-14: the copy's making is traced like its use)."""
    made = derivative.status == DerivativeStatus.a_verifier.value
    details: dict[str, Any] = {"derivative": str(derivative.id), "status": derivative.status}
    if made:
        details |= {
            "sha256": derivative.sha256,
            "size": derivative.size,
            # The sealed object made, so that a row pointed at another object differs
            # (derivatives/attested.py checks it before packaging).
            "object_key": derivative.object_key,
            "object_version": derivative.object_version,
            "original_sha256": recording.sha256,
            "frames": (derivative.result or {}).get("frames"),
            "tools": (derivative.result or {}).get("tools"),
        }
    else:
        details["reason"] = derivative.reason
    await audit.append(
        session,
        AuditEntry(
            action=AuditAction.derivation_finished,
            service="vault",
            actor_subject=actor,
            actor_role=role,
            organisation_id=derivative.organisation_id,
            recording_ids=[recording.id],
            outcome=Outcome.success if made else Outcome.failed,
            details=details,
        ),
    )
