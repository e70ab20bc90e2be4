"""Collecte: a clip from ingest is checked against the directory (R241-10) and, once its
sealed object is complete in the store under object lock (resumable.py, parts.py),
registered with its `collecte` audit entry in one transaction. Nothing is registered unless
the sealed object is complete and matches."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.directory.models import Agent, Camera, CameraStatus, Organisation, Station
from services.vault.directory.repository import DirectoryRepository
from services.vault.recordings import attested
from services.vault.recordings.models import Recording, RecordingStatus
from services.vault.recordings.repository import RecordingRepository
from services.vault.settings import VaultSettings
from shared import audit, sealing
from shared.audit import AuditAction, AuditEntry
from shared.clips import ClipMetadata, StoredClip, erasure_notice
from shared.db import utc_now
from shared.errors import Forbidden, UnprocessableEntity
from shared.storage import ObjectStore


@dataclass(frozen=True)
class Resolved:
    station: Station
    organisation: Organisation
    camera: Camera
    agent: Agent


def _invalid(field: str, detail: str) -> UnprocessableEntity:
    return UnprocessableEntity(detail, field=f"metadata.{field}")


class CollecteService:
    def __init__(self, session: AsyncSession, store: ObjectStore, settings: VaultSettings) -> None:
        self.session = session
        self.store = store
        self.settings = settings
        self.repository = RecordingRepository(session)
        self.directory = DirectoryRepository(session)

    async def resolve(self, metadata: ClipMetadata, station_id: uuid.UUID) -> Resolved:
        """The directory's view of the clip: every problem is a 422 naming the field."""
        station = await self.repository.station(station_id)
        if station is None or station.status != "active":
            raise Forbidden(
                "this station is unknown or revoked in the vault's directory: a maire or "
                "responsable must register the dock again (`temoin station register`)"
            )
        organisation = await self.repository.organisation(station.organisation_id)
        assert organisation is not None  # a station belongs to an organisation
        camera = await self.directory.camera_by_serial(organisation.id, metadata.camera_serial)
        if camera is None:
            raise _invalid("camera_serial", "no such camera in the station's organisation")
        if camera.status != CameraStatus.active.value:
            raise _invalid("camera_serial", f"this camera is {camera.status}")
        assigned = await self.repository.wearer_at(camera.id, metadata.started_at)
        if metadata.agent_matricule is None:
            if assigned is None:
                raise _invalid(
                    "agent_matricule",
                    "the camera was assigned to nobody when recording started: give the wearer",
                )
            agent = assigned
        else:
            named = await self.directory.agent_by_matricule(
                organisation.id, metadata.agent_matricule
            )
            if named is None:
                raise _invalid("agent_matricule", "no such agent in the station's organisation")
            if assigned is not None and assigned.id != named.id:
                raise _invalid(
                    "agent_matricule",
                    f"the camera was assigned to {assigned.matricule} at that time, not "
                    f"{named.matricule}",
                )
            agent = named
        return Resolved(station, organisation, camera, agent)

    async def existing(self, resolved: Resolved, sha256: str) -> StoredClip | None:
        recording = await self.repository.by_content(resolved.camera.id, sha256)
        return None if recording is None else _stored(recording, resolved.camera, created=False)

    async def stored(self, recording_id: uuid.UUID) -> tuple[StoredClip, str]:
        """The registered recording, and the key of its sealed object."""
        recording = await self.session.get(Recording, recording_id)
        assert recording is not None
        camera = await self.session.get(Camera, recording.camera_id)
        assert camera is not None
        return _stored(recording, camera, created=False), recording.object_key

    def retain_until(self, metadata: ClipMetadata, resolved: Resolved) -> datetime:
        """R241-13: the recording is erased this long after it ended."""
        return metadata.ended_at + timedelta(days=resolved.organisation.retention_days)

    def lock_until(self, metadata: ClipMetadata, resolved: Resolved) -> datetime:
        return max(
            self.retain_until(metadata, resolved),
            utc_now() + timedelta(seconds=self.settings.minimum_lock_s),
        )

    async def register(
        self, metadata: ClipMetadata, resolved: Resolved, content_type: str, sealed: Sealed
    ) -> StoredClip:
        """The recording and its `collecte` entry, once its sealed object is complete."""
        recording = Recording(
            id=sealed.recording_id,
            organisation_id=resolved.organisation.id,
            camera_id=resolved.camera.id,
            agent_id=resolved.agent.id,
            station_id=resolved.station.id,
            started_at=metadata.started_at,
            ended_at=metadata.ended_at,
            clock_offset_ms=metadata.clock_offset_ms,
            latitude=metadata.place.latitude,
            longitude=metadata.place.longitude,
            address=metadata.place.address,
            pre_record_s=metadata.pre_record_s,
            intervention_ref=metadata.intervention_ref,
            size=metadata.size,
            sha256=metadata.sha256,
            content_type=content_type,
            received_at=utc_now(),
            object_key=sealed.object_key,
            object_version=sealed.object_version,
            chunk_size=sealed.chunk_size,
            sealed_size=sealing.sealed_size(metadata.size, sealed.chunk_size),
            wrapped_key=sealed.wrapped_key,
            kek_id=self.settings.kek_id,
            retain_until=self.retain_until(metadata, resolved),
            locked_until=sealed.locked_until,
            status=RecordingStatus.sealed.value,
            erased_at=None,
        )
        self.session.add(recording)
        await self.session.flush()
        await audit.append(self.session, _collecte_entry(recording, resolved))
        return _stored(recording, resolved.camera, created=True)


@dataclass(frozen=True)
class Sealed:
    """A complete sealed object in the store, ready to be registered."""

    recording_id: uuid.UUID
    object_key: str
    object_version: str | None
    chunk_size: int
    wrapped_key: bytes
    locked_until: datetime | None  # the COMPLIANCE retention the store applied


RECORDINGS_PREFIX = "recordings/"  # every sealed object's key starts so


def sealed_object_key(organisation_id: uuid.UUID, recording_id: uuid.UUID) -> str:
    return f"{RECORDINGS_PREFIX}{organisation_id}/{recording_id}.sealed"


def erasure_due(recording: Recording) -> bool:
    """Whether the clip arrived past its retention (R241-13): it is registered all the same,
    the camera must be freed, but the next erasure pass erases it unless a procedure holds it."""
    return recording.retain_until <= recording.received_at


def _collecte_entry(recording: Recording, resolved: Resolved) -> AuditEntry:
    # The serial and matricule as people read them, beside the facts the log attests.
    details: dict[str, Any] = {
        "camera": resolved.camera.serial,
        "agent": resolved.agent.matricule,
        **attested.facts(recording),
    }
    if erasure_due(recording):
        details["erasure_due"] = True
        details["notice"] = erasure_notice(recording.retain_until)
    return AuditEntry(
        action=AuditAction.collecte,
        service="vault",
        actor_subject=f"station:{resolved.station.id}",
        actor_role="station",
        organisation_id=recording.organisation_id,
        recording_ids=[recording.id],
        details=details,
    )


def _stored(recording: Recording, camera: Camera, *, created: bool) -> StoredClip:
    return StoredClip(
        recording_id=recording.id,
        organisation_id=recording.organisation_id,
        station_id=recording.station_id,
        camera_serial=camera.serial,
        sha256=recording.sha256,
        size=recording.size,
        received_at=recording.received_at,
        created=created,
        retain_until=recording.retain_until,
        erasure_due=erasure_due(recording),
    )
