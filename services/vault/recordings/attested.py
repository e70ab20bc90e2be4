"""What the log attests of a recording (issue 15). The facts that R241-10 and R241-11 make
evidence (the time range, the wearer, the camera, the place, the clip's size and SHA-256) and
the retention computed at collecte are written into the recording's `collecte` entry, which the
log signs; the registry row is then only a copy, which `temoin audit verify --registry`, the
fixity scrub and the erasure job check against it."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.recordings.models import Recording
from shared import audit
from shared.audit import AuditAction, AuditEntry, Outcome
from shared.db import utc_now

DIVERGENCES = Counter(
    "temoin_registry_divergences_total",
    "Registry rows (recordings, training copies) found to differ from what the log attests",
)
_logger = logging.getLogger("temoin.vault.registry")

# Compared as instants, whatever their textual form.
_INSTANTS = frozenset({"started_at", "ended_at", "retain_until"})


def facts(recording: Recording) -> dict[str, Any]:
    """The recording's attested facts, as the JSON its `collecte` entry carries."""
    return {
        "started_at": recording.started_at.isoformat(),
        "ended_at": recording.ended_at.isoformat(),
        "agent_id": str(recording.agent_id),
        "camera_id": str(recording.camera_id),
        "station": str(recording.station_id),
        "place": {
            "latitude": recording.latitude,
            "longitude": recording.longitude,
            "address": recording.address,
        },
        "clock_offset_ms": recording.clock_offset_ms,
        "pre_record_s": recording.pre_record_s,
        "intervention_ref": recording.intervention_ref,
        "size": recording.size,
        "sha256": recording.sha256,
        "content_type": recording.content_type,
        "object_key": recording.object_key,
        "object_version": recording.object_version,
        "retain_until": recording.retain_until.isoformat(),
    }


def _same(name: str, row: Any, logged: Any) -> bool:
    if name in _INSTANTS and isinstance(row, str) and isinstance(logged, str):
        try:
            return datetime.fromisoformat(row) == datetime.fromisoformat(logged)
        except ValueError:
            return False
    return bool(row == logged)


def differences(recording: Recording, logged: dict[str, Any]) -> list[str]:
    """Each fact on which the row and its `collecte` entry differ, as "field: row …, log …".
    A fact the entry does not carry (entries written before it did) is not compared."""
    return [
        f"{name}: row {value!r}, log {logged[name]!r}"
        for name, value in facts(recording).items()
        if name in logged and not _same(name, value, logged[name])
    ]


async def note_divergence(
    session: AsyncSession, recording: Recording, problem: str, *, by: str, decision: str
) -> None:
    """A row found to differ from the log: alerted once (metric, log line, audit entry) until
    they agree again. ``decision`` says what the finder did about it (say, "key kept")."""
    _logger.error("recording %s differs from the log (%s): %s", recording.id, decision, problem)
    if recording.divergence_noted_at is not None:
        return
    recording.divergence_noted_at = utc_now()
    await alert(
        session,
        recording.organisation_id,
        recording.id,
        by=by,
        details={"problem": problem, "decision": decision},
    )


async def alert(
    session: AsyncSession,
    organisation_id: uuid.UUID,
    recording_id: uuid.UUID,
    *,
    by: str,
    details: dict[str, Any],
) -> None:
    """The alert of a row found to differ from the log (a recording's, or one of its training
    copies', services/vault/derivatives/attested.py): the metric and a `registry_divergence`
    entry naming the recording."""
    DIVERGENCES.inc()
    await audit.append(
        session,
        AuditEntry(
            action=AuditAction.registry_divergence,
            service="vault",
            actor_subject=by,
            actor_role="system",
            organisation_id=organisation_id,
            recording_ids=[recording_id],
            outcome=Outcome.failed,
            details=details,
        ),
    )
