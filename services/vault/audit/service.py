"""The audit log: sequencing entries into the Merkle tree, signing chained checkpoints, proofs,
witnesses' cosignatures.

Writers only insert entries (``shared.audit.append``), each authenticated by its service's
entry key. The sequencer then gives each entry of a finished transaction whose authenticator
verifies the next position (``seq``) in the log, hashes it as an RFC 9162 leaf and stores every
perfect subtree it completes; an entry no known writer authenticated is set aside in
``audit.refusals``, counted and logged, and never enters the log. Positions never change and
have no gaps.

Heads are C2SP checkpoints, each naming the head before it (shared/witness.py). The vault
remembers the last head it signed: one deleted from the database is put back, and the vault
refuses to sign a tree that no longer extends it (docs/audit.md).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import anyio
from nacl.signing import SigningKey
from prometheus_client import Counter, Gauge
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.audit.repository import AuditRepository
from shared import audit, merkle
from shared.audit import AuditAction, AuditEntry, Refusal, WriterKeys, canonical_bytes
from shared.db import try_job_lock, utc_now
from shared.errors import Conflict, NotFound, UnprocessableEntity
from shared.notes import (
    ED25519,
    EMPTY_ROOT,
    Note,
    NoteError,
    NoteSigner,
    Signature,
    VerifierKey,
)
from shared.signatures import b64encode, public_key_of
from shared.witness import LogHead, head_problems

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sqlalchemy import RowMapping

    from services.vault.settings import VaultSettings

ZERO_TXID = "0"
# A cosignature dated further ahead than this is refused (the witness's clock is wrong).
COSIGNATURE_CLOCK_SKEW = timedelta(minutes=5)

_logger = logging.getLogger("temoin.vault.audit")

ENTRIES_REFUSED = Counter(
    "temoin_audit_entries_refused_total",
    "Audit entries the sequencer set aside: no valid authenticator from a known writer",
    ["reason"],
)
HEADS_RESTORED = Counter(
    "temoin_audit_heads_restored_total",
    "Tree heads this vault signed that had disappeared from the database, put back",
)
SIGNING_REFUSED = Counter(
    "temoin_audit_signing_refused_total",
    "Times the vault refused to sign a tree that does not extend its last signed head",
)
COSIGNED_AT = Gauge(
    "temoin_audit_cosigned_timestamp_seconds",
    "Time (POSIX) of each witness's latest cosignature of the log (alert on its age)",
    ["witness"],
)


@dataclass(frozen=True)
class TreeHead:
    tree_size: int
    root_hash: bytes
    signed_at: str
    key_id: str
    signature: bytes
    previous_size: int | None = None
    previous_root: bytes | None = None
    checkpoint: str | None = None  # the signed note; None for heads older than migration 0010

    @classmethod
    def from_row(cls, row: Any) -> TreeHead:
        return cls(
            tree_size=row["tree_size"],
            root_hash=bytes(row["root_hash"]),
            signed_at=_iso(row["signed_at"]),
            key_id=row["key_id"],
            signature=bytes(row["signature"]),
            previous_size=row["previous_size"],
            previous_root=None if row["previous_root"] is None else bytes(row["previous_root"]),
            checkpoint=row["checkpoint"],
        )

    def row(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "signed_at": datetime.fromisoformat(self.signed_at.replace("Z", "+00:00")),
            "key_id": self.key_id,
            "signature": self.signature,
            "previous_size": self.previous_size,
            "previous_root": self.previous_root,
            "checkpoint": self.checkpoint,
        }

    def verifies(self, public_key: str) -> bool:
        return not head_problems(
            {
                "tree_size": self.tree_size,
                "root_hash": self.root_hash.hex(),
                "signed_at": self.signed_at,
                "signature": b64encode(self.signature),
                "checkpoint": self.checkpoint,
            },
            public_key,
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass
class HeadMemory:
    """The last head this vault process signed or found signed: what it chains the next head
    to, whatever the database says after. Shared by the background job and the API."""

    head: TreeHead | None = None
    # The position of the log's first authenticated entry, once known (service.py,
    # ``before_authenticators``).
    first_authenticated: int | None = None

    def remember(self, head: TreeHead) -> None:
        if self.head is None or head.tree_size >= self.head.tree_size:
            self.head = head


@dataclass(frozen=True)
class LogKeys:
    """What the vault's log needs besides the database: its head key and origin, the writers'
    public keys, its witnesses' keys, and the memory of its last head."""

    signing_key: SigningKey
    origin: str
    writers: WriterKeys
    witnesses: tuple[VerifierKey, ...] = ()
    memory: HeadMemory = field(default_factory=HeadMemory)

    @classmethod
    def from_settings(cls, settings: VaultSettings) -> LogKeys:
        return cls(
            signing_key=settings.audit_key(),
            origin=settings.audit_origin,
            writers=settings.writer_keys(),
            witnesses=settings.witness_keys(),
        )

    @property
    def public_key(self) -> str:
        return public_key_of(self.signing_key)

    @property
    def log_key(self) -> VerifierKey:
        return VerifierKey(self.origin, ED25519, bytes(self.signing_key.verify_key))


def before_authenticators(seq: int | None, first_authenticated: int | None) -> bool:
    """Whether an entry without an authenticator at position ``seq`` of the log (None: not in
    the log yet, so after every entry in it) was logged before authenticators existed: no
    authenticated entry precedes it. The one rule for the sequencer, the registry's checks
    (registry.py, ``Authenticated``) and ``temoin audit verify`` (verify.py). It decides by
    position, a fact of the log itself: audit.authentication is a row a database superuser
    can raise, the log's order is not rewritten without the signed heads showing it."""
    return first_authenticated is None or (seq is not None and seq < first_authenticated)


def refusal(
    row: Mapping[Any, Any],
    canonical: bytes,
    writers: WriterKeys,
    since_txid: int,
    seq: int | None,
    first_authenticated: int | None,
) -> Refusal | None:
    """Why the sequencer sets the entry ``row`` aside (its ``txid_text`` read too), or None:
    authenticated by a known writer, or written before authenticators existed: no
    authenticator, in a transaction older than migration 0010's (``since_txid``) and at a
    position ``seq`` before the first authenticated entry's (``before_authenticators``).
    ``since_txid`` alone could be widened by whoever can write audit.authentication; the
    position cannot: once the log holds one authenticated entry, no entry without one is
    ever logged as legitimate, whatever that table says. The registry's checks count an
    entry by this same rule (registry.py, ``Authenticated``)."""
    refused = writers.refusal(row, canonical)
    if (
        refused is Refusal.missing
        and int(row["txid_text"]) < since_txid
        and before_authenticators(seq, first_authenticated)
    ):
        return None
    return refused


def _check_batch(
    rows: Sequence[RowMapping],
    writers: WriterKeys,
    since_txid: int,
    next_seq: int,
    first_authenticated: int | None,
) -> tuple[list[tuple[bytes, Refusal | None]], int | None]:
    """Each entry's leaf hash and why it is refused (None: authenticated, or written before
    authenticators existed), and the first authenticated position once these are logged
    from ``next_seq`` on. CPU only: run in a worker thread, off the event loop."""
    checked = []
    seq = next_seq
    for row in rows:
        canonical = canonical_bytes(row)
        refused = refusal(row, canonical, writers, since_txid, seq, first_authenticated)
        checked.append((merkle.leaf_hash(canonical), refused))
        if refused is None:
            if first_authenticated is None and row["authenticator"] is not None:
                first_authenticated = seq
            seq += 1
    return checked, first_authenticated


class AuditLog:
    def __init__(self, session: AsyncSession, keys: LogKeys | None = None) -> None:
        self.session = session
        self.repository = AuditRepository(session)
        self.keys = keys

    def _keys(self) -> LogKeys:
        if self.keys is None:
            raise RuntimeError("this log has no keys: it can only be read")
        return self.keys

    async def sequence(self, batch: int = 1000) -> int:
        """Sequence the entries of finished transactions (or set them aside); return how many
        were looked at."""
        keys = self._keys()
        await self.repository.lock_sequencer()
        last = await self.repository.last_leaf()
        next_seq = 0 if last is None else int(last["seq"]) + 1
        cursor = (ZERO_TXID, -1) if last is None else (str(last["txid"]), int(last["entry_pk"]))
        refused = await self.repository.last_refusal()
        if refused is not None and (int(refused["txid"]), int(refused["entry_pk"])) > (
            int(cursor[0]),
            cursor[1],
        ):
            cursor = (str(refused["txid"]), int(refused["entry_pk"]))
        rows = await self.repository.unsequenced(cursor[0], cursor[1], batch)
        if not rows:
            return 0
        since = await self.repository.since_txid()
        # Once the log holds an authenticated entry it always does (a purge keeps the latest
        # entries): remembered, the log's prefix of older entries is read once a process.
        first = keys.memory.first_authenticated
        if first is None:
            first = await self.repository.first_authenticated()
        checked, first = await anyio.to_thread.run_sync(
            _check_batch, rows, keys.writers, since, next_seq, first
        )
        keys.memory.first_authenticated = first
        # The new leaves' left siblings are the maximal perfect subtrees of [0, next_seq).
        known = await self.repository.node_hashes(merkle.perfect_nodes(0, next_seq))
        now = utc_now()
        new_leaves: list[dict[str, Any]] = []
        new_nodes: list[dict[str, Any]] = []
        refusals: list[dict[str, Any]] = []
        for row, (leaf, refusal) in zip(rows, checked, strict=True):
            if refusal is not None:
                refusals.append(
                    {
                        "entry_pk": row["id"],
                        "entry_id": row["entry_id"],
                        "txid": row["txid_text"],
                        "reason": refusal.value,
                        "refused_at": now,
                    }
                )
                ENTRIES_REFUSED.labels(refusal.value).inc()
                continue
            seq = next_seq + len(new_leaves)
            known[(0, seq)] = leaf
            new_leaves.append(
                {
                    "seq": seq,
                    "entry_id": row["entry_id"],
                    "entry_pk": row["id"],
                    "txid": row["txid_text"],
                    "leaf_hash": leaf,
                    "sequenced_at": now,
                }
            )
            for level, index in merkle.parents_completed_by(seq):
                digest = merkle.node_hash(
                    known[(level - 1, 2 * index)], known[(level - 1, 2 * index + 1)]
                )
                known[(level, index)] = digest
                new_nodes.append({"level": level, "idx": index, "hash": digest})
        await self.repository.add_leaves(new_leaves)
        await self.repository.add_nodes(new_nodes)
        if refusals:
            await self.repository.add_refusals(refusals)
            _logger.warning(
                "%d audit entries set aside, not logged: no valid authenticator from a known "
                "writer (%s); first: %s",
                len(refusals),
                ", ".join(sorted({r["reason"] for r in refusals})),
                ", ".join(str(r["entry_id"]) for r in refusals[:5]),
            )
        return len(rows)

    async def sequence_all(self, batch: int = 1000) -> int:
        total = 0
        while added := await self.sequence(batch):
            total += added
        return total

    async def root(self, tree_size: int) -> bytes:
        nodes = await self.repository.node_hashes(merkle.perfect_nodes(0, tree_size))
        return merkle.range_hash(0, tree_size, nodes)

    async def _latest_head(self) -> TreeHead | None:
        row = await self.repository.latest_head()
        return None if row is None else TreeHead.from_row(row)

    async def guard_heads(self) -> None:
        """Put back the last head this vault signed if it is gone from the database (deleted
        with the entries it covered, say): the loss is logged and counted, and the restored
        head shows it to `temoin audit verify`. On a first run, remember the latest head."""
        keys = self._keys()
        latest = await self._latest_head()
        remembered = keys.memory.head
        if remembered is None:
            if latest is not None and latest.verifies(keys.public_key):
                keys.memory.remember(latest)
            return
        if latest is not None and (
            latest.tree_size > remembered.tree_size
            or (latest.tree_size, latest.root_hash) == (remembered.tree_size, remembered.root_hash)
        ):
            if latest.tree_size > remembered.tree_size and latest.verifies(keys.public_key):
                keys.memory.remember(latest)  # another vault process signed on
            return
        HEADS_RESTORED.inc()
        _logger.error(
            "the tree head of size %d this vault signed is gone from the database (its latest "
            "is %s): put back. The log was tampered with: run `temoin audit verify`",
            remembered.tree_size,
            "none" if latest is None else latest.tree_size,
        )
        await self.repository.restore_head(remembered.row())

    async def sign_head(self, *, now: datetime | None = None) -> TreeHead:
        """Sign the current tree as a checkpoint chained to the previous head (once per size:
        signing twice returns the first head). Refuses (Conflict) a tree that does not extend
        the last signed head: a log must never sign two inconsistent checkpoints."""
        keys = self._keys()
        await self.repository.lock_sequencer()  # one signer at a time: one chain
        await self.guard_heads()
        size = await self.repository.tree_size()
        existing = await self.repository.head(size)
        if existing is not None:
            head = TreeHead.from_row(existing)
            await self._check_extends(head, size, keys)
            keys.memory.remember(head)
            return head
        previous = await self._latest_head()
        if previous is not None:
            await self._check_extends(previous, size, keys)
        root = await self.root(size)
        signed_at = int((now or utc_now()).timestamp())
        statement = (
            LogHead.first(keys.origin, size, root, signed_at)
            if previous is None
            else LogHead(keys.origin, size, root, signed_at, previous.tree_size, previous.root_hash)
        )
        text_ = statement.checkpoint().text()
        signature = NoteSigner(keys.origin, keys.signing_key).sign(text_)
        head = TreeHead(
            tree_size=size,
            root_hash=root,
            signed_at=_iso(statement.signed_at_datetime),
            key_id=signature.key_hash.hex(),
            signature=signature.signature,
            previous_size=statement.previous_size,
            previous_root=statement.previous_root,
            checkpoint=str(Note(text_, (signature,))),
        )
        await self.repository.add_head(head.row())

        # Remembered once durable: a head rolled back was never signed as far as anyone knows.
        @event.listens_for(self.session.sync_session, "after_commit", once=True)
        def _remember(_: Any) -> None:
            keys.memory.remember(head)

        return head

    async def _check_extends(self, previous: TreeHead, size: int, keys: LogKeys) -> None:
        problem = None
        if not previous.verifies(keys.public_key):
            problem = f"the latest head ({previous.tree_size}) does not verify with the log's key"
        elif previous.tree_size > size:
            problem = f"the log has {size} entries, its head {previous.tree_size} had more"
        elif previous.tree_size and await self.root(previous.tree_size) != previous.root_hash:
            problem = f"the log's first {previous.tree_size} entries no longer match their head"
        if problem is not None:
            SIGNING_REFUSED.inc()
            raise Conflict(f"refusing to sign the log: {problem}; run `temoin audit verify`")

    async def signed_head(self, tree_size: int | None) -> TreeHead:
        row = (
            await self.repository.latest_head()
            if tree_size is None
            else await self.repository.head(tree_size)
        )
        if row is None:
            raise NotFound("no signed tree head of that size")
        return TreeHead.from_row(row)

    async def inclusion_proof(
        self, entry_id: uuid.UUID, tree_size: int | None
    ) -> tuple[Any, TreeHead, list[bytes]]:
        """The entry, the signed head it is proved against, and the audit path."""
        leaf = await self.repository.leaf_of(entry_id)
        if leaf is None:
            raise NotFound("no sequenced entry with that id")
        head = await self.signed_head(tree_size)
        if leaf["seq"] >= head.tree_size:
            raise NotFound("the entry is not in that tree head yet: ask for a later head")
        ranges = merkle.inclusion_ranges(leaf["seq"], head.tree_size)
        nodes = await self.repository.node_hashes(merkle.nodes_for(ranges))
        return leaf, head, [merkle.range_hash(a, b, nodes) for a, b in ranges]

    async def consistency_proof(
        self, first: int, second: int
    ) -> tuple[TreeHead, TreeHead, list[bytes]]:
        if not 0 < first <= second:
            raise UnprocessableEntity("need 0 < first <= second", field="query.first")
        old = await self.signed_head(first)
        new = await self.signed_head(second)
        ranges = merkle.consistency_ranges(first, second)
        nodes = await self.repository.node_hashes(merkle.nodes_for(ranges))
        return old, new, [merkle.range_hash(a, b, nodes) for a, b in ranges]

    # --- witnesses ----------------------------------------------------------------------

    async def checkpoint(self, tree_size: int | None) -> str:
        """A signed checkpoint with the latest cosignature of each witness that cosigned it."""
        keys = self._keys()
        head = await self.signed_head(tree_size)
        if head.checkpoint is None:
            raise NotFound("that head predates checkpoints: ask for a later one")
        note = Note.parse(head.checkpoint)
        rows = await self.repository.cosignatures_of(head.tree_size)
        latest: dict[tuple[str, bytes], Signature] = {}
        for row in rows:  # oldest first: the latest of each witness stays
            signature = Signature(row["witness"], bytes(row["key_hash"]), bytes(row["signature"]))
            if any(signature.is_by(key) for key in keys.witnesses):
                latest[(signature.name, signature.key_hash)] = signature
        return str(note.with_signatures(*latest.values()))

    async def add_cosignature(self, tree_size: int, line: str) -> tuple[VerifierKey, int]:
        """Keep a witness's cosignature of the checkpoint of ``tree_size``: it must come from
        a configured witness key and verify over that checkpoint (422 otherwise)."""
        keys = self._keys()
        head = await self.signed_head(tree_size)
        if head.checkpoint is None:
            raise NotFound("that head predates checkpoints: cosign a later one")
        note = Note.parse(head.checkpoint)
        try:
            signature = Signature.parse_line(line)
            timestamp = signature.timestamp
        except NoteError as exc:
            raise UnprocessableEntity(str(exc), field="body.cosignature") from exc
        witness = next((key for key in keys.witnesses if signature.is_by(key)), None)
        if witness is None:
            raise UnprocessableEntity(
                f"{signature.name} is not a witness of this log (VAULT_AUDIT_WITNESSES)",
                field="body.cosignature",
            )
        if not witness.verify(note.text, signature.signature):
            raise UnprocessableEntity(
                "the cosignature does not verify over this checkpoint", field="body.cosignature"
            )
        cosigned_at = datetime.fromtimestamp(timestamp, UTC)
        if cosigned_at > utc_now() + COSIGNATURE_CLOCK_SKEW:
            raise UnprocessableEntity(
                "the cosignature is dated in the future: check the witness's clock",
                field="body.cosignature",
            )
        await self.repository.add_cosignature(
            {
                "tree_size": tree_size,
                "witness": witness.name,
                "key_hash": witness.key_hash,
                "cosigned_at": cosigned_at,
                "signature": signature.signature,
                "checkpoint": head.checkpoint,
                "received_at": utc_now(),
            }
        )
        _cosigned(witness.name, timestamp)
        return witness, timestamp

    async def witnesses(self) -> list[dict[str, Any]]:
        """Each configured witness and the latest tree it cosigned (size, time)."""
        keys = self._keys()
        latest = {
            (row["witness"], bytes(row["key_hash"])): row
            for row in await self.repository.latest_cosignatures()
        }
        status = []
        for key in keys.witnesses:
            row = latest.get((key.name, key.key_hash))
            if row is not None:
                _cosigned(key.name, int(row["cosigned_at"].timestamp()))
            status.append({"key": key, "row": row})
        return status


_latest_cosigned: dict[str, int] = {}


def _cosigned(witness: str, timestamp: int) -> None:
    if timestamp > _latest_cosigned.get(witness, 0):
        _latest_cosigned[witness] = timestamp
        COSIGNED_AT.labels(witness).set(timestamp)


def three_years_before(moment: datetime) -> datetime:
    """R241-14 keeps entries three years: the same calendar day, three years earlier (the 28th
    of February for a 29th), as PostgreSQL's ``interval '3 years'`` counts."""
    try:
        return moment.replace(year=moment.year - 3)
    except ValueError:
        return moment.replace(year=moment.year - 3, day=28)


async def purge_expired(session: AsyncSession, keys: LogKeys, *, actor: str) -> int:
    """R241-14: entries are kept three years, then purged, leaving the log verifiable.

    Only the entries go: their leaves (hashes) stay, so every tree head still verifies. Only
    positions that a head signed before the cut-off covers are purged (they were written
    before it, whatever date they claim). The purge is itself an entry, authenticated like any
    other, recording the position below which entries may be missing, the cut-off and how many
    went; the verifier takes that watermark only from such entries, and checks them.

    One process at a time: vault replicas started together purge at the same moment; the
    others skip it rather than wait on the first one's rows (which would leave them nothing
    to purge: tests/test_replica_jobs.py)."""
    if not await try_job_lock(session, "vault:audit-purge"):
        return 0
    now, cutoff = (await session.execute(text("SELECT now(), now() - interval '3 years'"))).one()
    log = AuditLog(session, keys)
    below_seq = 0
    for row in await log.repository.heads_signed_before(cutoff):
        head = TreeHead.from_row(row)
        if head.verifies(keys.public_key):
            below_seq = head.tree_size
            break
    if not below_seq:
        return 0
    purged = int(
        (
            await session.execute(
                text("SELECT audit.purge_below(:below, :cutoff)"),
                {"below": below_seq, "cutoff": cutoff},
            )
        ).scalar_one()
    )
    if purged:
        await audit.append(
            session,
            AuditEntry(
                action=AuditAction.audit_purge,
                service="vault",
                actor_subject=actor,
                organisation_id=None,
                occurred_at=now,
                details={
                    "below_seq": below_seq,
                    "cutoff": _iso(cutoff),
                    "purged": purged,
                },
            ),
        )
    return purged


__all__ = [
    "EMPTY_ROOT",
    "AuditLog",
    "HeadMemory",
    "LogKeys",
    "TreeHead",
    "purge_expired",
    "three_years_before",
]
