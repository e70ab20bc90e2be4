"""Extraction (« communication », R241-12 and R241-14): a copy of a recording for a procedure,
as a signed BagIt package (shared/package.py, docs/extraction.md) streamed to the requester.

Only within an open procedure the recording is attached to, with a motif and its
destinataires, logged before the first byte leaves. R241-12 allows extraction for training
only of an anonymised copy: for a `formation` procedure the package holds an approved
anonymised copy (services/vault/derivatives/) and its signed derivation record, never the
original; for any other procedure, the original and never a copy."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream
from nacl.signing import SigningKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.audit.registry import Authenticated, histories, recording_differences
from services.vault.audit.schemas import proof_out
from services.vault.audit.service import AuditLog
from services.vault.directory.models import Agent, Camera, Organisation
from services.vault.procedures.models import Procedure, ProcedureType
from services.vault.procedures.schemas import ExtractionIn
from services.vault.procedures.service import ProcedureService
from services.vault.recordings.attested import note_divergence
from services.vault.recordings.keys import unwrap_data_key
from services.vault.recordings.models import Recording, RecordingStatus
from services.vault.recordings.reading import SealedObject, SealedReader
from services.vault.recordings.repository import RecordingRepository
from services.vault.recordings.schemas import RecordingOut
from services.vault.settings import VaultSettings
from shared import audit
from shared.access import OrgAccess
from shared.audit import AuditAction, AuditEntry, entries, naming
from shared.db import utc_now
from shared.errors import Conflict, Gone, NotFound, UnprocessableEntity
from shared.package import write_package
from shared.storage import ObjectStore

_EXTENSIONS = {"video/mp4": "mp4", "video/quicktime": "mov", "video/x-matroska": "mkv"}


@dataclass
class Package:
    """Everything needed to stream one package once the extraction is logged."""

    name: str
    reader: SealedReader
    recording: SealedObject  # the clip the package holds: a recording, or its training copy
    info: list[tuple[str, str]]
    files: dict[str, bytes]
    signer: SigningKey
    sha256: str
    content_type: str


class ExtractionService:
    def __init__(
        self,
        session: AsyncSession,
        store: ObjectStore,
        settings: VaultSettings,
        access: OrgAccess,
    ) -> None:
        self.session = session
        self.store = store
        self.settings = settings
        self.access = access
        self.procedures = ProcedureService(session, store, access, settings)

    async def prepare(self, procedure_id: uuid.UUID, data: ExtractionIn) -> Package:
        procedure = await self.procedures.procedure(procedure_id)
        for_training = procedure.type == ProcedureType.formation.value
        if for_training and data.derivative_id is None:
            raise UnprocessableEntity(
                "a recording is extracted for training only as an approved anonymised copy "
                "(R241-12): give `derivative_id`",
                field="body.derivative_id",
            )
        if not for_training and data.derivative_id is not None:
            raise UnprocessableEntity(
                "an anonymised copy is extracted for a `formation` procedure only",
                field="body.derivative_id",
            )
        if not procedure.is_open:
            raise Conflict("this procedure is closed: no more extractions for it")
        recording = await self.procedures.recording(data.recording_id)
        if not await self.procedures.holds(procedure.id, recording.id):
            raise Conflict("attach the recording to the procedure before extracting it")
        if recording.status == RecordingStatus.erased.value or recording.wrapped_key is None:
            raise Gone("this recording was erased")
        if recording.status == RecordingStatus.damaged.value:
            raise Conflict("this recording failed its integrity check: no copy can be made")
        # The package's metadata comes from the row: it must be what the log attests. A
        # training copy's record names its original's SHA-256 and its day: the same. Only
        # the entries the vault wrote attest anything (a superuser may change the `collecte`
        # entry with the row): checked by their authenticators, not by the signed head,
        # which a recording extracted right after its upload may not be under yet.
        authenticated = Authenticated(self.session, self.settings.writer_keys())
        history = (await histories(self.session, [recording.id], authenticated))[recording.id]
        differences = recording_differences(recording, history, held_in_registry=True)
        if differences:
            problem = "; ".join(differences)
            await note_divergence(
                self.session, recording, problem, by=self.access.subject, decision="not extracted"
            )
            await self.session.commit()  # the alert outlives the refusal, as refuse() does
            raise Conflict(
                "this recording's registry row differs from what the log attests: no package "
                f"can be made until it is resolved ({problem})"
            )
        if data.derivative_id is not None:
            # Imported here: the training package builds on this module's Package.
            from services.vault.derivatives.package import prepare_training

            return await prepare_training(self, procedure, recording, data, data.derivative_id)
        data_key = unwrap_data_key(
            self.settings, recording.wrapped_key, recording.kek_id, recording.id
        )
        reader = SealedReader(self.store, recording, data_key)
        # Its first chunk read and authenticated before the extraction is logged: a store
        # that is down (503) or an object found damaged (409) refuses it with nothing logged
        # as communicated.
        await reader.read(0, min(recording.size, recording.chunk_size))
        extraction_id = uuid.uuid4()
        proofs = await self._proofs(recording)
        receipt = await RecordingRepository(self.session).issued_receipt(recording.id)
        files = {
            "metadata.json": _json(await self._metadata(recording, procedure)),
            "audit.json": _json(
                {
                    "log_public_key_id": proofs[0]["head"]["key_id"] if proofs else None,
                    "proofs": proofs,
                }
            ),
        }
        if receipt is not None:
            files["receipt.json"] = _json(receipt)
        await audit.append(
            self.session,
            AuditEntry(
                action=AuditAction.extraction,
                service="vault",
                actor_subject=self.access.subject,
                actor_role=self.access.role.value,
                organisation_id=self.access.organisation_id,
                motif=data.motif,
                destinataires=data.destinataires,
                recording_ids=[recording.id],
                procedure_ref=procedure.reference,
                details={
                    "extraction": str(extraction_id),
                    "procedure": str(procedure.id),
                    "type": procedure.type,
                },
            ),
        )
        organisation = await self.session.get(Organisation, recording.organisation_id)
        assert organisation is not None
        now = utc_now()
        info = bag_info(
            organisation.name, procedure, self.access, extraction_id, data, now,
            ("Temoin-Recording-Id", str(recording.id)),
        )  # fmt: skip
        return Package(
            name=f"temoin-{reference_slug(procedure.reference)}-{str(recording.id)[:8]}",
            reader=reader,
            recording=recording,
            info=info,
            files=files,
            signer=self.settings.audit_key(),
            sha256=recording.sha256,
            content_type=recording.content_type,
        )

    async def _proofs(self, recording: Recording) -> list[dict[str, Any]]:
        """The recording's audit entries, each proved against a freshly signed tree head."""
        log = AuditLog(self.session, self.settings.log_keys())
        await log.sequence_all()
        head = await log.sign_head()
        ids = await self.session.scalars(
            select(entries.c.entry_id).where(naming(recording.id)).order_by(entries.c.occurred_at)
        )
        proofs = []
        for entry_id in ids:
            try:
                leaf, signed, path = await log.inclusion_proof(entry_id, head.tree_size)
            except NotFound:
                continue  # committed too recently to be in this head
            proofs.append(proof_out(leaf, signed, path).model_dump(mode="json"))
        return proofs

    async def _metadata(self, recording: Recording, procedure: Procedure) -> dict[str, Any]:
        camera = await self.session.get(Camera, recording.camera_id)
        agent = await self.session.get(Agent, recording.agent_id)
        return {
            "recording": RecordingOut.model_validate(recording).model_dump(mode="json"),
            "camera_serial": camera.serial if camera else None,
            "agent_matricule": agent.matricule if agent else None,
            "procedure": {
                "id": str(procedure.id),
                "type": procedure.type,
                "reference": procedure.reference,
            },
        }


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True).encode()


class _ChunkedSender:
    """A writable stream for zipfile, in a worker thread: it hands ~1 MiB pieces to the
    event loop through a bounded channel (backpressure: the zip waits for the client)."""

    def __init__(self, channel: MemoryObjectSendStream[bytes]) -> None:
        self.channel = channel
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= 1 << 20:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buffer:
            anyio.from_thread.run(self.channel.send, bytes(self.buffer))
            self.buffer.clear()


async def stream_package(package: Package) -> AsyncIterator[bytes]:
    """The package's bytes as they are made (a damaged or mismatching clip cuts the stream:
    a partial zip is not a valid package)."""
    send, receive = anyio.create_memory_object_stream[bytes](4)
    pieces = package.reader.chunks(0, package.recording.size)

    async def next_piece() -> memoryview | None:
        return await anext(pieces, None)

    def clip() -> Iterator[memoryview]:
        while (piece := anyio.from_thread.run(next_piece)) is not None:
            yield piece

    extension = _EXTENSIONS.get(package.content_type, "bin")
    clip_name = f"{package.recording.id}.{extension}"

    def build() -> None:
        sender = _ChunkedSender(send)
        write_package(
            sender,  # type: ignore[arg-type]  # write and flush are all zipfile needs here
            bag=package.name,
            info=package.info,
            clip_name=clip_name,
            clip=clip(),
            clip_size=package.recording.size,
            clip_sha256=package.sha256,
            files=package.files,
            signer=package.signer,
        )
        sender.flush()

    async def run() -> None:
        async with send:
            await anyio.to_thread.run_sync(build)

    task = asyncio.create_task(run())
    try:
        async with receive:
            async for piece in receive:
                yield piece
        await task  # raises what the builder raised: the stream is then cut short
    finally:
        receive.close()  # a client gone: the builder's next send fails and it stops
        await asyncio.gather(task, return_exceptions=True)
        await pieces.aclose()


def bag_info(
    organisation_name: str,
    procedure: Procedure,
    access: OrgAccess,
    extraction_id: uuid.UUID,
    data: ExtractionIn,
    now: datetime,
    what: tuple[str, str],
) -> list[tuple[str, str]]:
    """The package's bag-info.txt (BagIt 2.2.2): the standard fields, then Témoin's; ``what``
    names what was extracted (the recording, or the training copy)."""
    return [
        ("Source-Organization", organisation_name),
        ("External-Identifier", procedure.reference),
        ("External-Description", f"Procédure {procedure.type} {procedure.reference}"),
        ("Bagging-Date", now.date().isoformat()),
        ("Contact-Name", access.subject),
        ("Temoin-Extraction-Id", str(extraction_id)),
        ("Temoin-Procedure-Type", procedure.type),
        what,
        ("Temoin-Requester-Role", access.role.value),
        ("Temoin-Motif", data.motif),
        ("Temoin-Destinataires", "; ".join(data.destinataires)),
        ("Temoin-Extracted-At", now.isoformat()),
    ]


def reference_slug(reference: str) -> str:
    """The procedure's reference as it may stand in a file name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", reference).strip("-")[:40] or "proc"
