"""A training copy's row held to its entries before the copy is packaged (issue 18).

The extraction « pour formation » packages the copy its row names, approved as its row says.
A row is a copy of the log (services/vault/derivatives/registry.py) that a database superuser
can change: a copy rejected or never reviewed set to `approuve`, another SHA-256 or object, another
original. So before anything is read or logged the row is compared with the copy's entries
(`derivation_requested`, `derivation_finished`, `derivation_reviewed`, and the original's
`effacement`), by the same comparison `temoin audit verify --registry` makes; a difference
refuses the extraction and is alerted as a recording's is (services/vault/recordings/attested.py).

Which entries count: those the vault wrote, checked by their authenticator (the vault's Ed25519
signature over the entry, shared/audit.py), not those under a signed tree head. An approval is
typically extracted at once, before the sequencer has taken it in (it takes only transactions
older than every one still running, so another process's open transaction holds it back);
waiting for the signed head would refuse an honest approval as if it were tampering, and
trusting entries not in the log yet as they stand would let the superuser insert the approval
the row lacks. The authenticator is what the sequencer itself checks before logging an entry,
and the superuser cannot make one (the key is in the vault's configuration, not the database):
the check does not depend on how far the log has got, so it is neither flaky nor skippable.
Entries with no authenticator count only as the sequencer counts them, written before
migration 0010 (and in the log as they are): none can name a copy, the copies came with
migration 0015."""

from __future__ import annotations

import logging

from sqlalchemy import and_, inspect, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.audit.registry import Authenticated, with_leaves
from services.vault.derivatives.models import Derivative
from services.vault.derivatives.registry import BY_ACTION, Logged, row_differences
from services.vault.recordings.attested import alert
from services.vault.recordings.models import Recording
from shared.audit import AuditAction, Outcome, WriterKeys, entries, naming

_logger = logging.getLogger("temoin.vault.registry")

_COLUMNS = inspect(Derivative).column_attrs


async def differences(
    session: AsyncSession, derivative: Derivative, recording: Recording, writers: WriterKeys
) -> list[str]:
    """How the copy's row differs from the entries the vault wrote of it (none: it may be
    packaged). ``recording`` is the original its row names."""
    logged, found = await _logged(session, derivative, writers)
    row = {attribute.key: getattr(derivative, attribute.key) for attribute in _COLUMNS}
    found += row_differences(row, logged)
    # The original the copy was made from, as the demande and the job's end name it: the
    # derivation record binds the copy to this SHA-256.
    for entry in logged.requested + logged.finished:
        said = entry["details"].get("original_sha256")
        if said is not None and said != recording.sha256:
            found.append(
                f"the original's sha256 differs from the one the log names (entry "
                f"{entry['entry_id']})"
            )
    return found


async def _logged(
    session: AsyncSession, derivative: Derivative, writers: WriterKeys
) -> tuple[Logged, list[str]]:
    """The copy's entries the vault wrote, and a finding for each naming it that it did not
    write (a forged entry is not counted, and is said)."""
    copy = str(derivative.id)
    statement = with_leaves().where(
        # Read through the entries naming its original (the GIN index): a row pointed at
        # another original finds no demande of it there, and differs.
        naming(derivative.recording_id),
        or_(
            and_(
                entries.c.action.in_(list(BY_ACTION)),
                entries.c.details["derivative"].astext == copy,
            ),
            and_(
                entries.c.action == AuditAction.effacement.value,
                entries.c.outcome == Outcome.success.value,
                entries.c.details["derivatives"].contains([copy]),
            ),
        ),
    )
    rows = list((await session.execute(statement)).mappings())
    # By the rule the originals' checks use (services/vault/audit/registry.py).
    vouched, forged = await Authenticated(session, writers).vouched(rows)
    logged = Logged()
    for entry in vouched:
        if entry["action"] == AuditAction.effacement.value:
            logged.erased_in = entry["entry_id"]
        else:
            getattr(logged, BY_ACTION[entry["action"]]).append(entry)
    return logged, list(forged.values())


async def note_divergence(
    session: AsyncSession, derivative: Derivative, problem: str, *, by: str, decision: str
) -> None:
    """A copy's row found to differ from the log: a log line each time, and alerted (metric,
    `registry_divergence` entry) once per problem. Unlike a recording, a copy's row keeps no
    date of its last alert: the entries say whether this one was already raised."""
    _logger.error("derivative %s differs from the log (%s): %s", derivative.id, decision, problem)
    raised = await session.scalar(
        select(entries.c.entry_id)
        .where(
            naming(derivative.recording_id),
            entries.c.action == AuditAction.registry_divergence.value,
            entries.c.details["derivative"].astext == str(derivative.id),
            entries.c.details["problem"].astext == problem,
        )
        .limit(1)
    )
    if raised is not None:
        return
    await alert(
        session,
        derivative.organisation_id,
        derivative.recording_id,
        by=by,
        details={"derivative": str(derivative.id), "problem": problem, "decision": decision},
    )
