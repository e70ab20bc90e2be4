"""The training copies' rows against the log, for `temoin audit verify --registry`
(services/vault/audit/registry.py): a row of vault.derivatives is a copy of what its entries
attest, each naming it in `details.derivative` (docs/training-copies.md):

- `derivation_requested`: who asked, for which recording and procedure, with which motif and
  parameters, when;
- `derivation_finished`: the job's end, made (the copy's SHA-256 and size, its object, the
  tools and frames, when) or not (its status);
- `derivation_reviewed`: who approved or rejected it, when, having watched which SHA-256;
- the original's `effacement` entry, whose `details.derivatives` lists the copies erased with it.

A status, a reviewer or a SHA-256 set by SQL, or a row made up or deleted, differs from them.
The extraction makes the same comparison before packaging a copy, from the entries the vault
wrote only (derivatives/attested.py).
Training copies are few (one per recording asked for within a formation procedure): the rows
and these entries are read whole, not in pages."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import RowMapping, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.vault.audit.registry import far
from services.vault.audit.verify import Finding
from services.vault.derivatives.models import ACTIVE, SEALED, Derivative, DerivativeStatus
from shared.audit import AuditAction, Outcome

_ENTRIES = text(
    """
    SELECT entry_id, action, outcome, actor_subject, motif, recording_ids, occurred_at,
           details, details->>'derivative' AS derivative
      FROM audit.entries
     WHERE action IN ('derivation_requested', 'derivation_finished', 'derivation_reviewed')
       AND details ? 'derivative'
    """
)
_ERASURES = text(
    """
    SELECT entry_id, jsonb_array_elements_text(details->'derivatives') AS derivative
      FROM audit.entries
     WHERE action = 'effacement' AND outcome = 'success'
       AND jsonb_typeof(details->'derivatives') = 'array'
    """
)


# A copy's own entries, and the field of Logged each goes in.
BY_ACTION = {
    AuditAction.derivation_requested.value: "requested",
    AuditAction.derivation_finished.value: "finished",
    AuditAction.derivation_reviewed.value: "reviewed",
}


@dataclass
class Logged:
    """A copy's entries, by action."""

    requested: list[RowMapping] = field(default_factory=list)
    finished: list[RowMapping] = field(default_factory=list)
    reviewed: list[RowMapping] = field(default_factory=list)
    erased_in: uuid.UUID | None = None


async def derivative_findings(connection: AsyncConnection) -> list[Finding]:
    """Every training copy's row compared with its entries; every copy logged whose row is
    gone."""
    logged: dict[str, Logged] = defaultdict(Logged)
    for entry in (await connection.execute(_ENTRIES)).mappings():
        getattr(logged[entry["derivative"]], BY_ACTION[entry["action"]]).append(entry)
    for erasure in (await connection.execute(_ERASURES)).mappings():
        logged[erasure["derivative"]].erased_in = erasure["entry_id"]
    findings: list[Finding] = []
    rows = (await connection.execute(select(Derivative.__table__))).mappings()
    for row in rows:
        where = f"derivative {row['id']}"
        found = row_differences(row, logged.pop(str(row["id"]), Logged()))
        findings += [Finding("registry", where, difference) for difference in found]
    for derivative, entries in logged.items():
        if entries.requested:
            findings.append(
                Finding(
                    "registry",
                    f"derivative {derivative}",
                    f"asked for in the log (entry {entries.requested[0]['entry_id']}), its row "
                    "is gone",
                )
            )
    return findings


def row_differences(row: Mapping[Any, Any], logged: Logged) -> list[str]:
    """How one copy's row differs from its entries."""
    if len(logged.requested) != 1:
        return [f"{len(logged.requested)} derivation_requested entries in the log, not one"]
    requested = logged.requested[0]
    details = requested["details"]
    found = [
        f"{name} differs from the log (entry {requested['entry_id']})"
        for name, differs in (
            ("recording_id", row["recording_id"] not in requested["recording_ids"]),
            ("procedure_id", details.get("procedure") != str(row["procedure_id"])),
            ("requested_by", row["requested_by"] != requested["actor_subject"]),
            ("motif", row["motif"] != requested["motif"]),
            ("parameters", row["parameters"] != details.get("parameters")),
            ("created_at", far(row["created_at"], requested["occurred_at"])),
        )
        if differs
    ]
    return found + _made(row, logged) + _reviewed(row, logged) + _erased(row, logged)


_MAKING = ("tools", "frames")


def _made(row: Mapping[Any, Any], logged: Logged) -> list[str]:
    """The job's end: none while it runs; a success stating this SHA-256 and size for a copy
    made; a failure with this status for one that was not."""
    status = row["status"]
    if len(logged.finished) > 1:
        return [f"{len(logged.finished)} derivation_finished entries: a job ends once"]
    end = logged.finished[0] if logged.finished else None
    if end is None:
        if status in ACTIVE:
            return []
        return [f"status {status!r} in the row, the log has no derivation_finished entry"]
    details, entry = end["details"], f"(entry {end['entry_id']})"
    if status in ACTIVE:
        return [f"status {status!r} in the row, the job ended in the log {entry}"]
    if end["outcome"] == Outcome.success.value:
        if status not in (*SEALED, DerivativeStatus.efface.value):
            return [f"status {status!r} in the row, made in the log {entry}"]
        if (details.get("sha256"), details.get("size")) != (row["sha256"], row["size"]):
            return [f"sha256 or size differs from the copy the log says was made {entry}"]
        # The object's key and version: in the entries written since they carried them.
        if any(
            name in details and details[name] != row[name]
            for name in ("object_key", "object_version")
        ):
            return [f"object differs from the one the log says was made {entry}"]
        # What the derivation record states of the making: the tools and model, the frames,
        # the time.
        result = row["result"] or {}
        if any(name in details and details[name] != result.get(name) for name in _MAKING):
            return [f"tools or frames differ from the log's account of the job {entry}"]
        if far(row["finished_at"], end["occurred_at"]):
            return [f"finished_at differs from the log {entry}"]
        return []
    # A job that failed or was cancelled; erased later with its original, the row says so.
    if status != DerivativeStatus.efface.value and details.get("status") != status:
        return [f"status {status!r} in the row, {details.get('status')!r} in the log {entry}"]
    return []


def _reviewed(row: Mapping[Any, Any], logged: Logged) -> list[str]:
    """Approved or rejected only as the review entry says, by whom it names, when."""
    status = row["status"]
    reviews = logged.reviewed
    if status in (DerivativeStatus.approuve.value, DerivativeStatus.rejete.value):
        if len(reviews) != 1:
            return [f"status {status!r} in the row, {len(reviews)} derivation_reviewed entries"]
    elif status != DerivativeStatus.efface.value:
        if reviews:
            return [f"reviewed in the log (entry {reviews[0]['entry_id']}), {status!r} in the row"]
        return []
    if not reviews:
        return [] if row["reviewed_by"] is None else ["reviewed in the row, not in the log"]
    review, entry = reviews[0], f"(entry {reviews[0]['entry_id']})"
    found = []
    if status != DerivativeStatus.efface.value and review["details"].get("decision") != status:
        found.append(f"status {status!r} in the row, another decision in the log {entry}")
    if row["reviewed_by"] != review["actor_subject"] or far(
        row["reviewed_at"], review["occurred_at"]
    ):
        found.append(f"reviewer or review date differs from the log {entry}")
    # The copy the reviewer watched: an object swapped before the review is not the one made.
    if "sha256" in review["details"] and review["details"]["sha256"] != row["sha256"]:
        found.append(f"sha256 differs from the copy reviewed in the log {entry}")
    return found


def _erased(row: Mapping[Any, Any], logged: Logged) -> list[str]:
    """Erased with its original in the row exactly when the original's effacement lists it."""
    erased_row = row["status"] == DerivativeStatus.efface.value or row["erased_at"] is not None
    if erased_row and logged.erased_in is None:
        return ["erased in the row, no effacement entry lists it"]
    if not erased_row and logged.erased_in is not None:
        return [f"erased in the log (entry {logged.erased_in}), not in the row"]
    return []
