"""The registry bound to the log (issue 15).

The vault's rows are copies: what counts is what the log attests. A recording's facts are in
its `collecte` entry (services/vault/recordings/attested.py), its holds in the procedures'
`modification` entries (`attached`, `detached`, `closed`), its erasure in its `effacement` entry; a
habilitation's grant and withdrawal in theirs; a consultation in its `consultation` entry.

- ``histories`` reads a recording's history from the log, counting only the entries a voucher
  vouches for. ``Authenticated`` vouches for the entries the vault wrote, by their
  authenticator (the sequencer's own rule, with its allowance for entries older than
  authenticators, decided by their position in the log): the extraction and the scrub
  decide from those, at once, without waiting for the sequencer to take a fresh entry in
  (services/vault/derivatives/attested.py says why). An ``Attestor`` keeps only entries the
  log really holds: each hashes to its leaf, and the leaf is included under the latest signed
  tree head, whose signature verifies and which is consistent with the head signed before it
  (so stored hashes cannot have been rewritten under an older head). The erasure job, which
  sequences and signs first, decides from that, never from one column
  (services/vault/recordings/erasure.py).
- ``verify_registry`` (`temoin audit verify --registry`) compares every row that matters with
  the log (the entries ``Authenticated`` vouches for) and names the row and the entry of each
  difference. Run beside ``verify_log``, which proves the entries themselves intact.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import anyio.to_thread
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    RowMapping,
    Select,
    Uuid,
    bindparam,
    cast,
    literal_column,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.vault.audit.repository import AuditRepository
from services.vault.audit.service import AuditLog, TreeHead, refusal
from services.vault.audit.tables import leaves, refusals
from services.vault.audit.verify import Finding
from services.vault.recordings import attested
from services.vault.recordings.models import Recording, RecordingStatus
from shared import merkle
from shared.audit import AuditAction, Outcome, Refusal, WriterKeys, canonical_bytes, entries
from shared.errors import NotFound

# How far a row's date may be from its entry's (both are set in one transaction).
CLOCK_SLACK = timedelta(seconds=5)


class Unattested(Exception):
    """The log cannot vouch for anything now: no signed head, or heads that do not agree."""


@dataclass
class History:
    """What the log says of one recording."""

    collecte: Mapping[str, Any] | None = None  # the details of its collecte entry
    collecte_entry: uuid.UUID | None = None
    # Procedures it is attached to, not detached from since, and not closed.
    holders: set[str] = field(default_factory=set)
    erased: bool = False
    # Entries naming it that the voucher knows the vault did not write (forged, or altered).
    forged: list[str] = field(default_factory=list)

    def retain_until(self, retention_days: int) -> datetime | None:
        """The end of its retention as the log has it (entries written before the log
        carried it: its end, attested, plus the service's retention)."""
        if self.collecte is None:
            return None
        if "retain_until" in self.collecte:
            return datetime.fromisoformat(str(self.collecte["retain_until"]))
        ended = datetime.fromisoformat(str(self.collecte["ended_at"]))
        return ended + timedelta(days=retention_days)


class Voucher(Protocol):
    async def vouched(
        self, rows: list[RowMapping]
    ) -> tuple[list[RowMapping], dict[uuid.UUID, str]]:
        """The rows it vouches for, and why, by entry id, each it knows the vault did not
        write (one it merely cannot vouch for yet is neither)."""
        ...


class Authenticated:
    """Entries the vault wrote, by their authenticator: the sequencer's rule (service.py,
    ``refusal``), which a database superuser cannot satisfy without the vault's entry key. An
    entry without one, written before authenticators existed, counts only once the log holds
    it as it is (its leaf hashes it), before the log's first authenticated entry: a row
    inserted by hand with an old ``txid`` is never sequenced (the sequencer's cursor is past
    it), and one logged after that entry (audit.authentication raised by hand while a
    sequencer still decided by that table alone) counts as forged. About 50 µs an entry, in
    a worker thread; only the entries of the recordings in question are read, and, once an
    instance and only for an entry in the log without an authenticator, the log's prefix of
    older entries (``first_authenticated``)."""

    def __init__(self, session: AsyncSession | AsyncConnection, writers: WriterKeys) -> None:
        self.session = session
        self.writers = writers
        self._since: int | None = None
        self._first: tuple[int | None] | None = None

    async def vouched(
        self, rows: list[RowMapping]
    ) -> tuple[list[RowMapping], dict[uuid.UUID, str]]:
        if not rows:
            return [], {}
        repository = AuditRepository(self.session)
        if self._since is None:
            self._since = await repository.since_txid()
        # Read only for an entry in the log without an authenticator: the others never need it.
        if self._first is None and any(
            row["authenticator"] is None and row["seq"] is not None for row in rows
        ):
            self._first = (await repository.first_authenticated(),)
        first = None if self._first is None else self._first[0]
        return await anyio.to_thread.run_sync(authenticated, rows, self.writers, self._since, first)


def authenticated(
    rows: Sequence[Mapping[Any, Any]],
    writers: WriterKeys,
    since_txid: int,
    first_authenticated: int | None,
) -> tuple[list[Any], dict[uuid.UUID, str]]:
    """The rows (entries with their ``txid_text``, ``leaf_hash`` and ``seq``) the vault wrote,
    and why each other is not its own, by entry id. CPU only: run in a worker thread."""
    kept: list[Any] = []
    forged: dict[uuid.UUID, str] = {}
    for row in rows:
        canonical = canonical_bytes(row)
        refused = refusal(row, canonical, writers, since_txid, row["seq"], first_authenticated)
        if refused is None and row["authenticator"] is None:
            leaf = row["leaf_hash"]
            if leaf is None or bytes(leaf) != merkle.leaf_hash(canonical):
                refused = Refusal.missing
        if row["service"] == "vault" and refused is None:
            kept.append(row)
        else:
            forged[row["entry_id"]] = (
                f"entry {row['entry_id']} ({row['action']}) was not written by the vault "
                f"({refused.value if refused else row['service']})"
            )
    return kept, forged


class Attestor:
    """Entries as the latest signed tree head attests them."""

    def __init__(self, session: AsyncSession, public_key: str) -> None:
        self.session = session
        self.public_key = public_key
        self.log = AuditLog(session)
        self._head: TreeHead | None = None

    def _signed(self, head: TreeHead) -> bool:
        return head.verifies(self.public_key)

    async def head(self) -> TreeHead:
        if self._head is not None:
            return self._head
        rows = list(reversed(await self._latest_two()))
        heads = [TreeHead.from_row(row) for row in rows]
        if not heads:
            raise Unattested("no signed tree head yet")
        for head in heads:
            if not self._signed(head):
                raise Unattested(f"tree head {head.tree_size}: its signature does not verify")
        # A head of the empty log (a vault that signed before anything was logged) is
        # consistent with every later head: there is nothing to prove from it.
        if len(heads) == 2 and heads[0].tree_size > 0:
            old, new, path = await self.log.consistency_proof(
                heads[0].tree_size, heads[1].tree_size
            )
            if not merkle.verify_consistency(
                old.tree_size, new.tree_size, old.root_hash, new.root_hash, path
            ):
                raise Unattested(
                    f"tree heads {old.tree_size} and {new.tree_size} do not agree: "
                    "the log's stored hashes were rewritten"
                )
        self._head = heads[-1]
        return self._head

    async def _latest_two(self) -> list[RowMapping]:
        from services.vault.audit.tables import tree_heads

        statement = select(tree_heads).order_by(tree_heads.c.tree_size.desc()).limit(2)
        return list((await self.session.execute(statement)).mappings())

    async def vouched(
        self, rows: list[RowMapping]
    ) -> tuple[list[RowMapping], dict[uuid.UUID, str]]:
        return [row for row in rows if await self.attests(row)], {}

    async def attests(self, entry: Mapping[Any, Any]) -> bool:
        """Whether ``entry`` (a row of audit.entries) is in the log, as it is, under the head."""
        head = await self.head()
        try:
            leaf, _, path = await self.log.inclusion_proof(entry["entry_id"], head.tree_size)
        except NotFound:
            return False  # not sequenced, or not under the head yet
        digest = merkle.leaf_hash(canonical_bytes(entry))
        return digest == bytes(leaf["leaf_hash"]) and merkle.verify_inclusion(
            digest, int(leaf["seq"]), head.tree_size, path, head.root_hash
        )


_ACTIONS = [AuditAction.collecte.value, AuditAction.modification.value,
            AuditAction.effacement.value]  # fmt: skip


def with_leaves() -> Select[Any]:
    """Entries with what ``Authenticated`` reads besides: their transaction, leaf and
    position."""
    return select(
        entries,
        literal_column("audit.entries.txid::text").label("txid_text"),
        leaves.c.leaf_hash,
        leaves.c.seq,
    ).outerjoin(leaves, leaves.c.entry_id == entries.c.entry_id)


async def _entries_of(
    session: AsyncSession | AsyncConnection, recording_ids: Sequence[uuid.UUID]
) -> list[RowMapping]:
    statement = with_leaves().where(
        entries.c.recording_ids.overlap(cast(list(recording_ids), ARRAY(Uuid))),
        entries.c.action.in_(_ACTIONS),
    )
    return list((await session.execute(statement)).mappings())


async def _closings(
    session: AsyncSession | AsyncConnection, procedures: Iterable[str]
) -> list[RowMapping]:
    wanted = sorted(set(procedures))
    if not wanted:
        return []
    statement = with_leaves().where(
        entries.c.action == AuditAction.modification.value,
        entries.c.details["event"].astext == "closed",
        entries.c.details["procedure"].astext.in_(wanted),
    )
    return list((await session.execute(statement)).mappings())


async def histories(
    session: AsyncSession | AsyncConnection,
    recording_ids: Sequence[uuid.UUID],
    voucher: Voucher | None = None,
) -> dict[uuid.UUID, History]:
    """The log's history of each recording; with ``voucher``, from the entries it vouches for
    only (another is as if absent: a hold it records stays, a release is ignored, a
    `collecte` entry changed attests nothing; each it knows forged is in ``forged``)."""
    found: dict[uuid.UUID, History] = {rid: History() for rid in recording_ids}
    if not recording_ids:
        return found

    async def kept(rows: list[RowMapping]) -> list[RowMapping]:
        """The rows vouched for; each known forged said in the ``forged`` of the recordings
        it names."""
        if voucher is None:
            return rows
        vouched, forged = await voucher.vouched(rows)
        for row in rows:
            if row["entry_id"] in forged:
                for recording_id in row["recording_ids"]:
                    if recording_id in found:
                        found[recording_id].forged.append(forged[row["entry_id"]])
        return vouched

    rows = await kept(await _entries_of(session, recording_ids))
    # How many times each recording was attached to and detached from each procedure. The
    # vault refuses to attach a recording twice or to detach one not attached, so the two
    # alternate and it is attached now when it was attached more often than detached: this
    # reads no order of the entries, and a detach the log cannot vouch for leaves it held.
    attached: dict[uuid.UUID, Counter[str]] = defaultdict(Counter)
    detached: dict[uuid.UUID, Counter[str]] = defaultdict(Counter)
    for row in rows:
        details = row["details"]
        for recording_id in row["recording_ids"]:
            history = found.get(recording_id)
            if history is None:
                continue
            if row["action"] == AuditAction.collecte.value:
                history.collecte, history.collecte_entry = details, row["entry_id"]
            elif row["action"] == AuditAction.effacement.value:
                history.erased |= row["outcome"] == Outcome.success.value
            elif details.get("event") == "attached":
                attached[recording_id][str(details["procedure"])] += 1
            elif details.get("event") == "detached":
                detached[recording_id][str(details["procedure"])] += 1
    closings = await kept(await _closings(session, (p for ps in attached.values() for p in ps)))
    closed = {str(row["details"]["procedure"]) for row in closings}
    for recording_id, procedures in attached.items():
        found[recording_id].holders = {
            procedure
            for procedure, times in procedures.items()
            if times > detached[recording_id][procedure] and procedure not in closed
        }
    return found


def _not_in_the_log_yet() -> list[ColumnElement[bool]]:
    return [
        ~select(leaves.c.seq).where(leaves.c.entry_id == entries.c.entry_id).exists(),
        ~select(refusals.c.entry_pk).where(refusals.c.entry_pk == entries.c.id).exists(),
    ]


async def awaiting_the_log(
    session: AsyncSession, recording_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of ``recording_ids`` whose history has an entry committed but neither in the log
    nor set aside yet (its own, or the closing of a procedure it was attached to). The
    sequencer takes only transactions older than every one still running, so another
    process's open transaction (a replica's, say) holds such entries back for a moment: the
    row is ahead of the log, which is no divergence. Decide about these at a later pass."""
    wanted = set(recording_ids)
    if not wanted:
        return set()
    named = entries.c.recording_ids.overlap(cast(list(wanted), ARRAY(Uuid)))
    waiting = {
        r
        for ids in await session.scalars(
            select(entries.c.recording_ids).where(
                named, entries.c.action.in_(_ACTIONS), *_not_in_the_log_yet()
            )
        )
        for r in ids
    }
    attached: dict[str, set[uuid.UUID]] = defaultdict(set)
    for ids, procedure in await session.execute(
        select(entries.c.recording_ids, entries.c.details["procedure"].astext).where(
            named,
            entries.c.action == AuditAction.modification.value,
            entries.c.details["event"].astext == "attached",
        )
    ):
        attached[procedure] |= set(ids)
    if attached:
        for procedure in await session.scalars(
            select(entries.c.details["procedure"].astext).where(
                entries.c.action == AuditAction.modification.value,
                entries.c.details["event"].astext == "closed",
                entries.c.details["procedure"].astext.in_(sorted(attached)),
                *_not_in_the_log_yet(),
            )
        ):
            waiting |= attached[procedure]
    return waiting & wanted


def recording_differences(
    recording: Recording, history: History, held_in_registry: bool
) -> list[str]:
    """How a recording's row differs from its history in the log (and each entry naming it
    that the vault did not write, which attests nothing)."""
    if history.collecte is None:
        return [*history.forged, "no collecte entry in the log"]
    found = [*history.forged, *attested.differences(recording, dict(history.collecte))]
    erased_row = recording.status == RecordingStatus.erased.value
    if erased_row != history.erased:
        found.append(
            f"status: row {recording.status!r}, log {'erased' if history.erased else 'kept'}"
        )
    if held_in_registry != bool(history.holders):
        found.append(f"held: row {held_in_registry}, log {sorted(history.holders) or 'not held'}")
    return found


# --- the whole registry, for `temoin audit verify --registry` -------------------------------

_HELD = text(
    """
    SELECT pr.recording_id FROM vault.procedure_recordings pr
      JOIN vault.procedures p ON p.id = pr.procedure_id
     WHERE p.closed_at IS NULL AND pr.recording_id = ANY(:ids)
    """
).bindparams(bindparam("ids", type_=ARRAY(Uuid)))

_RECORDINGS_GONE = text(
    """
    SELECT e.entry_id, e.recording_ids[1] AS recording_id
      FROM audit.entries e
     WHERE e.action = 'collecte'
       AND NOT EXISTS (SELECT 1 FROM vault.recordings r WHERE r.id = e.recording_ids[1])
    """
)
_HABILITATIONS = text(
    """
    SELECT h.id, h.agent_id, h.organisation_id, h.granted_at, h.withdrawn_at,
           g.entry_id AS granted_entry, g.occurred_at AS granted_logged,
           g.details->>'agent_id' AS granted_agent,
           w.entry_id AS withdrawn_entry, w.occurred_at AS withdrawn_logged
      FROM vault.habilitations h
      LEFT JOIN audit.entries g ON g.action = 'habilitation_granted'
           AND g.details->>'habilitation_id' = h.id::text
      LEFT JOIN audit.entries w ON w.action = 'habilitation_withdrawn'
           AND w.details->>'habilitation_id' = h.id::text
    """
)
_HABILITATIONS_GONE = text(
    """
    SELECT g.entry_id, g.details->>'habilitation_id' AS habilitation
      FROM audit.entries g
     WHERE g.action = 'habilitation_granted'
       AND NOT EXISTS (SELECT 1 FROM vault.habilitations h
                        WHERE h.id::text = g.details->>'habilitation_id')
    """
)
_CONSULTATIONS = text(
    """
    SELECT c.id, c.recording_id, c.subject, c.role, c.motif, e.entry_id, e.actor_subject,
           e.actor_role, e.motif AS logged_motif, e.recording_ids
      FROM vault.consultations c
      LEFT JOIN audit.entries e ON e.action = 'consultation' AND e.outcome = 'success'
           AND e.details->>'consultation' = c.id::text
    """
)
_CONSULTATIONS_GONE = text(
    """
    SELECT e.entry_id, e.details->>'consultation' AS consultation
      FROM audit.entries e
     WHERE e.action = 'consultation' AND e.outcome = 'success'
       AND e.details ? 'consultation'
       AND NOT EXISTS (SELECT 1 FROM vault.consultations c
                        WHERE c.id::text = e.details->>'consultation')
    """
)


def cast_rows(rows: Sequence[Any]) -> list[Recording]:
    """Rows of vault.recordings, read where the code reads a Recording's attributes."""
    return list(rows)


def far(row: datetime | None, logged: datetime | None) -> bool:
    """Whether a row's date is not the one its entry logged (within CLOCK_SLACK)."""
    return row is None or logged is None or abs(row - logged) > CLOCK_SLACK


async def verify_registry(
    connection: AsyncConnection, writers: WriterKeys, batch: int = 1000
) -> list[Finding]:
    """Every row that matters, compared with the log: with the entries the vault wrote only
    (``Authenticated``, as the extraction and the scrub decide), each other naming a
    recording reported as a difference of that recording."""
    # Imported here: the training copies' comparison builds on this module.
    from services.vault.derivatives.registry import derivative_findings

    findings: list[Finding] = []
    voucher = Authenticated(connection, writers)
    after = uuid.UUID(int=0)
    table = Recording.__table__
    while True:
        # Rows, not ORM objects (a connection, not a session): the same attribute names.
        page = cast_rows(
            (
                await connection.execute(
                    select(table).where(table.c.id > after).order_by(table.c.id).limit(batch)
                )
            ).all()
        )
        if not page:
            break
        after = page[-1].id
        ids = [recording.id for recording in page]
        logged = await histories(connection, ids, voucher)
        held = set((await connection.execute(_HELD, {"ids": ids})).scalars())
        for recording in page:
            history = logged[recording.id]
            for difference in recording_differences(recording, history, recording.id in held):
                entry = history.collecte_entry or "none"
                findings.append(
                    Finding(
                        "registry", f"recording {recording.id}", f"{difference} (entry {entry})"
                    )
                )
    for row in (await connection.execute(_RECORDINGS_GONE)).mappings():
        findings.append(
            Finding(
                "registry",
                f"recording {row['recording_id']}",
                f"collected in the log (entry {row['entry_id']}), its row is gone",
            )  # fmt: skip
        )
    for row in (await connection.execute(_HABILITATIONS)).mappings():
        where = f"habilitation {row['id']}"
        if row["granted_entry"] is None:
            findings.append(Finding("registry", where, "no habilitation_granted entry in the log"))
            continue
        entry = f"(entry {row['granted_entry']})"
        if row["granted_agent"] != str(row["agent_id"]):
            findings.append(Finding("registry", where, f"agent differs from the log {entry}"))
        if far(row["granted_at"], row["granted_logged"]):
            findings.append(Finding("registry", where, f"granted_at differs from the log {entry}"))
        if row["withdrawn_entry"] is not None and (
            far(row["withdrawn_at"], row["withdrawn_logged"])
        ):
            findings.append(
                Finding(
                    "registry",
                    where,
                    f"withdrawn in the log (entry {row['withdrawn_entry']}), not in the row",
                )  # fmt: skip
            )
        if row["withdrawn_entry"] is None and row["withdrawn_at"] is not None:
            findings.append(Finding("registry", where, "withdrawn in the row, not in the log"))
    for row in (await connection.execute(_HABILITATIONS_GONE)).mappings():
        findings.append(
            Finding(
                "registry",
                f"habilitation {row['habilitation']}",
                f"granted in the log (entry {row['entry_id']}), its row is gone",
            )  # fmt: skip
        )
    for row in (await connection.execute(_CONSULTATIONS)).mappings():
        where = f"consultation {row['id']}"
        if row["entry_id"] is None:
            findings.append(Finding("registry", where, "no consultation entry in the log"))
        elif (
            row["subject"] != row["actor_subject"]
            or row["motif"] != row["logged_motif"]
            or row["recording_id"] not in row["recording_ids"]
        ):
            findings.append(Finding("registry", where, f"differs from its entry {row['entry_id']}"))
    for row in (await connection.execute(_CONSULTATIONS_GONE)).mappings():
        findings.append(
            Finding(
                "registry",
                f"consultation {row['consultation']}",
                f"logged (entry {row['entry_id']}), its row is gone",
            )  # fmt: skip
        )
    return findings + await derivative_findings(connection)


__all__ = [
    "Attestor",
    "Authenticated",
    "History",
    "authenticated",
    "Unattested",
    "histories",
    "far",
    "recording_differences",
    "verify_registry",
    "with_leaves",
]
