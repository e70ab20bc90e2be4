"""The extraction of an anonymised copy for training (R241-12): the package holds the approved
copy, never the original, with a derivation record the vault signs (what it was made from and
how, who approved it) and the audit entries of its demande, making, review and extraction with
their inclusion proofs (docs/training-copies.md). Its metadata keeps the day, the duration and
the procedure; it drops the wearer, the camera and the place."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from services.vault.audit.schemas import proof_out
from services.vault.audit.service import AuditLog
from services.vault.derivatives import attested
from services.vault.derivatives.models import Derivative, DerivativeStatus
from services.vault.derivatives.repository import DerivativeRepository
from services.vault.directory.models import Organisation
from services.vault.procedures.models import Procedure
from services.vault.procedures.schemas import ExtractionIn
from services.vault.recordings.keys import unwrap_data_key
from services.vault.recordings.models import Recording
from services.vault.recordings.reading import SealedReader
from services.vault.recordings.repository import RecordingRepository
from shared import audit
from shared.audit import AuditAction, AuditEntry, entries, naming
from shared.db import utc_now
from shared.errors import Conflict, Gone, NotFound, UnprocessableEntity
from shared.package import sign_derivation
from shared.receipts import receipt_digest

if TYPE_CHECKING:
    from services.vault.procedures.extraction import ExtractionService, Package


async def prepare_training(
    service: ExtractionService,
    procedure: Procedure,
    recording: Recording,
    data: ExtractionIn,
    derivative_id: uuid.UUID,
) -> Package:
    from services.vault.procedures.extraction import Package, bag_info, reference_slug

    session = service.session
    derivative = await DerivativeRepository(session).get(recording.organisation_id, derivative_id)
    if derivative is None:
        raise NotFound("no such anonymised copy")
    if derivative.recording_id != recording.id:
        raise UnprocessableEntity(
            "this anonymised copy is not a copy of that recording", field="body.derivative_id"
        )
    if derivative.status == DerivativeStatus.efface.value or (
        derivative.status == DerivativeStatus.approuve.value and derivative.wrapped_key is None
    ):
        raise Gone("this anonymised copy was erased with its recording")
    if derivative.status != DerivativeStatus.approuve.value or derivative.wrapped_key is None:
        raise Conflict(
            "only an approved anonymised copy can be extracted for training: have it reviewed"
        )
    # Approved, made from this original, this object and SHA-256: as the log has it, not
    # only as the row says (derivatives/attested.py).
    problems = await attested.differences(
        session, derivative, recording, service.settings.log_keys().writers
    )
    if problems:
        problem = "; ".join(problems)
        await attested.note_divergence(
            session, derivative, problem, by=service.access.subject, decision="not extracted"
        )
        await session.commit()  # the alert outlives the refusal, as an original's does
        raise Conflict(
            "this anonymised copy's registry row differs from what the log attests: no package "
            f"can be made until it is resolved ({problem})"
        )
    key = unwrap_data_key(
        service.settings, derivative.wrapped_key, derivative.kek_id or "", derivative.id
    )
    reader = SealedReader(service.store, derivative, key)
    # Its first chunk authenticated before the extraction is logged (as for an original).
    await reader.read(0, min(derivative.size, derivative.chunk_size))
    receipt = await _receipt_digest(service, recording)  # a refusal comes before the logging
    extraction_id = uuid.uuid4()
    now = utc_now()
    await audit.append(
        session,
        AuditEntry(
            action=AuditAction.extraction,
            service="vault",
            actor_subject=service.access.subject,
            actor_role=service.access.role.value,
            organisation_id=service.access.organisation_id,
            motif=data.motif,
            destinataires=data.destinataires,
            recording_ids=[recording.id],
            procedure_ref=procedure.reference,
            details={
                "extraction": str(extraction_id),
                "procedure": str(procedure.id),
                "type": procedure.type,
                "derivative": str(derivative.id),
                "sha256": derivative.sha256,
            },
        ),
    )
    # Committed now, so that the log sequences it and the package carries its proof too: the
    # extraction is logged before its first byte leaves, as any.
    await session.commit()
    proofs = await _proofs(service, recording, derivative)
    record = _record(derivative, recording, procedure, receipt)
    files = {
        "metadata.json": _json(_metadata(derivative, recording, procedure)),
        "derivation.json": _json(sign_derivation(record, service.settings.audit_key())),
        "audit.json": _json(
            {
                "log_public_key_id": proofs[0]["head"]["key_id"] if proofs else None,
                "proofs": proofs,
            }
        ),
    }
    organisation = await session.get(Organisation, recording.organisation_id)
    assert organisation is not None
    info = bag_info(
        organisation.name, procedure, service.access, extraction_id, data, now,
        ("Temoin-Derivative-Id", str(derivative.id)),
    )  # fmt: skip
    assert derivative.sha256 is not None
    return Package(
        name=f"temoin-formation-{reference_slug(procedure.reference)}-{str(derivative.id)[:8]}",
        reader=reader,
        recording=derivative,
        info=info,
        files=files,
        signer=service.settings.audit_key(),
        sha256=derivative.sha256,
        content_type=derivative.content_type,
    )


async def _receipt_digest(service: ExtractionService, recording: Recording) -> str | None:
    """The digest naming the receipt ingest signed for the original (shared/receipts.py), the
    link `temoin verify --receipt` checks; the receipt itself stays out of the package (it
    names the camera, the station and the arrival time). None when none is on file."""
    receipt = await RecordingRepository(service.session).issued_receipt(recording.id)
    if receipt is None:
        return None
    try:
        if (receipt["recording_id"], receipt["sha256"]) != (str(recording.id), recording.sha256):
            raise ValueError("it names another clip")
        return receipt_digest(receipt)
    except (KeyError, ValueError) as exc:
        # Ingest signed what it registered: a receipt on file that is not this clip's means the
        # store was altered; no record is signed that would bind the copy to it.
        raise Conflict(f"the receipt on file for this recording is not its own ({exc})") from exc


def _record(
    derivative: Derivative, recording: Recording, procedure: Procedure, receipt: str | None
) -> dict[str, Any]:
    """What the copy was made from and how (docs/training-copies.md)."""
    result = derivative.result or {}
    tools = dict(result.get("tools") or {})
    return {
        "format": "temoin-derivation-v1",
        "original": {
            "recording_id": str(recording.id),
            "sha256": recording.sha256,
            "receipt_sha256": receipt,
        },
        "derivative": {
            "id": str(derivative.id),
            "sha256": derivative.sha256,
            "size": derivative.size,
            "content_type": derivative.content_type,
        },
        "procedure": {"id": str(procedure.id), "type": procedure.type},
        "parameters": derivative.parameters,
        "tools": tools,
        "model_sha256": tools.get("model_sha256"),
        "frames": result.get("frames"),
        "width": result.get("width"),
        "height": result.get("height"),
        "fps": result.get("fps"),
        "faces_per_frame": result.get("faces_per_frame"),
        "requested_by": derivative.requested_by,
        "requested_at": derivative.created_at.isoformat(),
        "made_at": derivative.finished_at.isoformat() if derivative.finished_at else None,
        "approved_by": derivative.reviewed_by,
        "approved_at": derivative.reviewed_at.isoformat() if derivative.reviewed_at else None,
    }


def _metadata(derivative: Derivative, recording: Recording, procedure: Procedure) -> dict[str, Any]:
    """The day, the duration, the procedure: not the wearer, the camera nor the place."""
    return {
        "derivative_id": str(derivative.id),
        "day": recording.started_at.date().isoformat(),
        "duration_s": round((recording.ended_at - recording.started_at).total_seconds(), 3),
        "procedure": {
            "id": str(procedure.id),
            "type": procedure.type,
            "reference": procedure.reference,
        },
        "content_type": derivative.content_type,
    }


async def _proofs(
    service: ExtractionService, recording: Recording, derivative: Derivative
) -> list[dict[str, Any]]:
    """The copy's entries (demande, end of the job, consultations, review, extractions),
    each proved against a freshly signed tree head."""
    log = AuditLog(service.session, service.settings.log_keys())
    await log.sequence_all()
    head = await log.sign_head()
    ids = await service.session.scalars(
        select(entries.c.entry_id)
        .where(
            naming(recording.id),
            entries.c.details["derivative"].astext == str(derivative.id),
        )
        .order_by(entries.c.occurred_at)
    )
    proofs = []
    for entry_id in ids:
        try:
            leaf, signed, path = await log.inclusion_proof(entry_id, head.tree_size)
        except NotFound:
            continue
        proofs.append(proof_out(leaf, signed, path).model_dump(mode="json"))
    return proofs


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True).encode()
