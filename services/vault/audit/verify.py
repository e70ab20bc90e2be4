"""`temoin audit verify`: recompute the whole log from the entries and check it.

What it finds, and where (each finding names the log position, the entry or the head):
- an entry edited after it was logged: its recomputed leaf hash differs from the stored one;
- an entry no known writer wrote: its authenticator is missing or does not verify with the
  writers' public keys, whether the sequencer set it aside or it was slipped into the log;
- an entry deleted: a leaf whose entry is gone, legitimate only below the watermark of an
  authenticated, plausible purge (three years, under a head signed before its cut-off);
- leaves reordered, removed or inserted: positions out of the sequencer's order, gaps, or
  stored subtree hashes that no longer match;
- a log cut short or rewritten: a signed head larger than the log, or whose root differs;
- heads deleted: each checkpoint names the head before it, so a missing one is a gap in the
  chain from the latest head back to the first, and the log is still checked against the root
  the next head recorded for it;
- a forged head: a signature that does not verify with the log's public key;
- what witnesses saw: a cosigned checkpoint the log no longer matches, or that is gone from
  the vault's heads, even if every head of the vault's was deleted;
- an entry slipped in behind the sequencer: unsequenced long after it claims to have happened,
  or sequenced far behind entries that happened later (backdated).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.vault.audit.service import before_authenticators, three_years_before
from services.vault.audit.tables import cosignatures, nodes, tree_heads
from shared import merkle
from shared.audit import AuditAction, Refusal, WriterKeys, canonical_bytes
from shared.db import utc_now
from shared.notes import Note, NoteError, VerifierKey
from shared.signatures import b64encode, tree_head_message, verify
from shared.witness import LogHead, open_head

BACKDATE_TOLERANCE = timedelta(minutes=5)
SEQUENCING_DELAY = timedelta(minutes=10)

_LEAVES_WITH_ENTRIES = text(
    """
    SELECT l.seq, l.leaf_hash, l.entry_id AS leaf_entry_id, l.txid AS leaf_txid,
           l.entry_pk, e.*
      FROM audit.leaves l
      LEFT JOIN audit.entries e ON e.entry_id = l.entry_id
     ORDER BY l.seq
    """
)
_PURGES = text(
    """
    SELECT l.seq, e.*
      FROM audit.entries e JOIN audit.leaves l ON l.entry_id = e.entry_id
     WHERE e.action = :action
     ORDER BY l.seq
    """
)
_UNSEQUENCED = text(
    """
    SELECT e.*, e.txid::text AS txid_text
      FROM audit.entries e
     WHERE NOT EXISTS (SELECT 1 FROM audit.leaves l WHERE l.entry_id = e.entry_id)
     ORDER BY e.txid, e.id
    """
)


@dataclass(frozen=True)
class Finding:
    kind: str
    where: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.where}: {self.detail}"


@dataclass
class Report:
    tree_size: int = 0
    entries_checked: int = 0
    purged: int = 0
    heads_checked: int = 0
    cosignatures_checked: int = 0
    unauthenticated_legacy: int = 0  # entries logged before authenticators existed
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass(frozen=True)
class VerifyKeys:
    """What the verifier trusts: the log's head key, the writers' keys, the witnesses'."""

    public_key: str  # base64 Ed25519: the vault's head key (VAULT_AUDIT_SIGNING_KEY's half)
    writers: WriterKeys
    witnesses: tuple[VerifierKey, ...] = ()
    origin: str | None = None  # when given, checkpoints must carry it


class _Levels:
    """Perfect-subtree hashes recomputed from the leaves, addressed as the merkle module does."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.levels = [leaves]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    def __getitem__(self, node: merkle.Node) -> bytes:
        level, index = node
        return self.levels[level][index]

    def items(self) -> Iterator[tuple[merkle.Node, bytes]]:
        for level, hashes in enumerate(self.levels[1:], start=1):
            for index, digest in enumerate(hashes):
                yield (level, index), digest


@dataclass(frozen=True)
class _Head:
    """A stored head whose signature was checked."""

    size: int
    root: bytes
    signed_at: datetime
    checkpoint: LogHead | None  # None: a head older than checkpoints (not chained)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _checked_head(row: Mapping[Any, Any], keys: VerifyKeys) -> tuple[_Head | None, str | None]:
    """The head of ``row`` if its signature verifies (and says what the row says)."""
    size, root = int(row["tree_size"]), bytes(row["root_hash"])
    if row["checkpoint"] is None:
        message = tree_head_message(size, root, _iso(row["signed_at"]))
        if not verify(keys.public_key, message, b64encode(bytes(row["signature"]))):
            return None, "does not verify with the log's key"
        return _Head(size, root, row["signed_at"], None), None
    try:
        head = open_head(str(row["checkpoint"]), keys.public_key)
    except NoteError as exc:
        return None, f"its checkpoint does not verify with the log's key ({exc})"
    if (head.size, head.root) != (size, root) or (
        head.previous_size,
        head.previous_root,
        head.signed_at_datetime,
    ) != (row["previous_size"], _bytes(row["previous_root"]), row["signed_at"]):
        return None, "the row says something else than its signed checkpoint"
    if keys.origin is not None and head.origin != keys.origin:
        return None, f"its checkpoint is of another log ({head.origin})"
    return _Head(size, root, head.signed_at_datetime, head), None


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


@dataclass(frozen=True)
class _Purge:
    below_seq: int
    purged: int


def _purge_of(
    row: Mapping[Any, Any],
    keys: VerifyKeys,
    signed_times: list[tuple[int, datetime]],
    now: datetime,
) -> tuple[_Purge | None, str | None]:
    """An authenticated, plausible purge entry's watermark, or why it is not one."""
    if row["service"] != "vault" or keys.writers.refusal(row, canonical_bytes(row)) is not None:
        return None, None  # not the vault's: reported as unauthenticated, never a watermark
    details = row["details"]
    try:
        below_seq, purged = int(details["below_seq"]), int(details["purged"])
        cutoff = datetime.fromisoformat(str(details["cutoff"]).replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None, "it does not say below which position, before when, and how many"
    occurred: datetime = row["occurred_at"]
    if cutoff > three_years_before(occurred):
        return None, f"its cut-off {cutoff:%Y-%m-%d} is less than three years before its date"
    if occurred > now + BACKDATE_TOLERANCE:
        return None, f"it is dated in the future ({occurred:%Y-%m-%d %H:%M})"
    if below_seq > int(row["seq"]):
        return None, f"it claims positions after its own (below {below_seq})"
    if not any(size >= below_seq and signed <= cutoff for size, signed in signed_times):
        return None, f"no head signed or cosigned before its cut-off covers position {below_seq}"
    return _Purge(below_seq, purged), None


async def verify_log(
    connection: AsyncConnection, keys: VerifyKeys, *, now: datetime | None = None
) -> Report:
    now = now or utc_now()
    report = Report()
    findings = report.findings

    heads: dict[int, _Head] = {}
    for row in (
        await connection.execute(select(tree_heads).order_by(tree_heads.c.tree_size))
    ).mappings():
        report.heads_checked += 1
        head, problem = _checked_head(row, keys)
        if head is None:
            findings.append(Finding("signature", f"tree head {row['tree_size']}", str(problem)))
        else:
            heads[head.size] = head
    witnessed = await _cosigned(connection, keys, report)
    signed_times = [(h.size, h.signed_at) for h in heads.values()] + [
        (w.head.size, w.cosigned_at) for w in witnessed
    ]

    watermark = purged_total = 0
    for row in (
        await connection.execute(_PURGES, {"action": AuditAction.audit_purge.value})
    ).mappings():
        purge, problem = _purge_of(row, keys, signed_times, now)
        if problem is not None:
            findings.append(Finding("purge", f"seq {row['seq']}", f"not plausible: {problem}"))
        if purge is not None:
            watermark = max(watermark, purge.below_seq)
            purged_total += purge.purged

    recomputed: list[bytes] = []
    previous_order: tuple[int, int] | None = None
    latest_occurred: datetime | None = None
    missing_below_watermark = 0
    authenticators = _Authenticators(keys.writers)
    result = await connection.stream(_LEAVES_WITH_ENTRIES)
    async for row in result.mappings():
        seq = row["seq"]
        if seq != len(recomputed):
            findings.append(
                Finding("gap", f"seq {len(recomputed)}", f"next leaf in the log is seq {seq}")
            )
        stored = bytes(row["leaf_hash"])
        order = (int(row["leaf_txid"]), int(row["entry_pk"]))
        if previous_order is not None and order <= previous_order:
            findings.append(
                Finding("order", f"seq {seq}", "leaf out of the sequencer's order (reordered?)")
            )
        previous_order = order
        if row["entry_id"] is None:
            if seq < watermark:
                missing_below_watermark += 1
            else:
                findings.append(
                    Finding("deleted", f"seq {seq}", f"entry {row['leaf_entry_id']} is gone")
                )
            recomputed.append(stored)
            continue
        report.entries_checked += 1
        canonical = canonical_bytes(row)
        leaf = merkle.leaf_hash(canonical)
        if leaf != stored:
            findings.append(
                Finding("modified", f"seq {seq}", f"entry {row['entry_id']} differs from its leaf")
            )
        await authenticators.add(seq, row, canonical)
        occurred: datetime = row["occurred_at"]
        if latest_occurred is not None and occurred < latest_occurred - BACKDATE_TOLERANCE:
            findings.append(
                Finding("backdated", f"seq {seq}", f"entry {row['entry_id']} dated {occurred}")
            )
        latest_occurred = max(latest_occurred or occurred, occurred)
        recomputed.append(leaf)
    first_authenticated, refused = await authenticators.results()
    for seq, entry_id, service, refusal in refused:
        if refusal is Refusal.missing and before_authenticators(seq, first_authenticated):
            report.unauthenticated_legacy += 1  # logged before authenticators existed
        else:
            findings.append(
                Finding(
                    "unauthenticated",
                    f"seq {seq}",
                    f"entry {entry_id} ({service}): {_REFUSALS[refusal]}",
                )
            )
    report.tree_size = len(recomputed)
    report.purged = min(missing_below_watermark, purged_total)
    if missing_below_watermark > purged_total:
        findings.append(
            Finding(
                "deleted",
                f"below seq {watermark}",
                f"{missing_below_watermark} entries are gone, the purges account for "
                f"{purged_total}",
            )
        )
    levels = _Levels(recomputed)

    stored_nodes = await connection.stream(
        select(nodes.c.level, nodes.c.idx, nodes.c.hash).order_by(nodes.c.level, nodes.c.idx)
    )
    expected = dict(levels.items())
    async for level, index, digest in stored_nodes:
        want = expected.pop((level, index), None)
        span = f"leaves {index << level}..{((index + 1) << level) - 1}"
        if want is None:
            findings.append(Finding("extra node", f"level {level} #{index}", span))
        elif bytes(digest) != want:
            findings.append(Finding("node", f"level {level} #{index}", f"{span} differ"))
    for level, index in sorted(expected):
        findings.append(Finding("missing node", f"level {level} #{index}", "not stored"))

    def matches(where: str, size: int, root: bytes) -> None:
        """The log against a tree head it once had (a head, a chain link, a cosignature)."""
        if size > report.tree_size:
            findings.append(
                Finding("truncated", where, f"the log has only {report.tree_size} leaves")
            )
        elif merkle.range_hash(0, size, levels) != root:
            findings.append(Finding("root", where, "the recomputed root differs"))

    for head in heads.values():
        matches(f"tree head {head.size}", head.size, head.root)
    findings += _chain(heads, matches)
    for seen in witnessed:
        where = f"cosigned head {seen.head.size}"
        matches(where, seen.head.size, seen.head.root)
        if seen.head.size not in heads:
            findings.append(
                Finding("witnessed", where, f"{seen.witness} cosigned it; the vault's head is gone")
            )

    cutoff = now - SEQUENCING_DELAY
    async for row in (await connection.stream(_UNSEQUENCED)).mappings():
        verdict = keys.writers.refusal(row, canonical_bytes(row))
        where = f"entry {row['entry_id']}"
        # Not in the log: it would come after every entry in it.
        legacy = verdict is Refusal.missing and before_authenticators(None, first_authenticated)
        if verdict is not None and not legacy:
            findings.append(
                Finding(
                    "unauthenticated",
                    where,
                    f"({row['service']}, dated {row['occurred_at']}) never logged: "
                    f"{_REFUSALS[verdict]}",
                )
            )
        elif row["occurred_at"] < cutoff:
            findings.append(
                Finding("unsequenced", where, f"dated {row['occurred_at']}, never logged")
            )
    return report


_Pending = tuple[int, Any, str, "bytes | None", bytes]
_Refused = tuple[int, Any, str, Refusal]


class _Authenticators:
    """Every logged entry's authenticator, checked in worker threads while the log streams in
    (libsodium lets go of the GIL: the checks use the second core). A few chunks in flight at
    most, so that memory stays bounded whatever the log's size."""

    CHUNK = 4096
    IN_FLIGHT = 4

    def __init__(self, writers: WriterKeys) -> None:
        self.writers = writers
        self.pending: list[_Pending] = []
        self.in_flight: list[asyncio.Future[tuple[int | None, list[_Refused]]]] = []
        self.first_authenticated: int | None = None
        self.refused: list[_Refused] = []
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)

    async def add(self, seq: int, row: Mapping[Any, Any], canonical: bytes) -> None:
        authenticator = row["authenticator"]
        self.pending.append(
            (
                seq,
                row["entry_id"],
                row["service"],
                None if authenticator is None else bytes(authenticator),
                canonical,
            )
        )
        if len(self.pending) >= self.CHUNK:
            await self._submit()

    async def _submit(self) -> None:
        chunk, self.pending = self.pending, []
        if len(self.in_flight) >= self.IN_FLIGHT:
            self._collect(await self.in_flight.pop(0))
        loop = asyncio.get_running_loop()
        self.in_flight.append(loop.run_in_executor(self.pool, self._check, chunk))

    def _check(self, chunk: list[_Pending]) -> tuple[int | None, list[_Refused]]:
        first: int | None = None
        refused: list[_Refused] = []
        for seq, entry_id, service, authenticator, canonical in chunk:
            refusal = self.writers.refusal(
                {"service": service, "authenticator": authenticator}, canonical
            )
            if refusal is not None:
                refused.append((seq, entry_id, service, refusal))
            elif first is None:
                first = seq
        return first, refused

    def _collect(self, result: tuple[int | None, list[_Refused]]) -> None:
        first, refused = result
        if first is not None and self.first_authenticated is None:
            self.first_authenticated = first  # chunks are collected in log order
        self.refused += refused

    async def results(self) -> tuple[int | None, list[_Refused]]:
        """The first authenticated position, and every entry refused, in log order."""
        try:
            if self.pending:
                await self._submit()
            while self.in_flight:
                self._collect(await self.in_flight.pop(0))
            return self.first_authenticated, self.refused
        finally:
            self.pool.shutdown()


_REFUSALS = {
    Refusal.missing: "no authenticator (not written by a Témoin service)",
    Refusal.unknown_writer: "authenticated by no known key of that service",
    Refusal.invalid: "its authenticator does not verify (entry or authenticator altered)",
    None: "",
}


def _chain(heads: dict[int, _Head], matches: Any) -> list[Finding]:
    """Each checkpoint names the head before it: from the latest, the chain must reach the
    first head (previous size 0) or a head older than checkpoints, with no head missing and
    none left off it."""
    findings: list[Finding] = []
    chained = sorted((h for h in heads.values() if h.checkpoint is not None), key=lambda h: -h.size)
    if not chained:
        return findings
    expected: int | None = None  # the size the chain names next
    named_by: int | None = None
    for head in chained:
        if expected is not None and expected in heads and heads[expected].checkpoint is None:
            break  # the chain reached the heads signed before checkpoints existed
        if expected is not None and head.size > expected:
            findings.append(
                Finding(
                    "chain",
                    f"tree head {head.size}",
                    f"left off the chain (head {named_by} names {expected} before it)",
                )
            )
            continue
        if expected is not None and head.size < expected:
            findings.append(_gap(expected, named_by, head.size))
        assert head.checkpoint is not None
        expected, named_by = head.checkpoint.previous_size, head.size
        if expected and expected not in heads:
            # The head is gone: the log must still match the root its successor recorded.
            matches(
                f"tree head {expected} (named by {head.size})",
                expected,
                head.checkpoint.previous_root,
            )
    legacy = [size for size, h in heads.items() if h.checkpoint is None]
    if expected and expected not in heads:
        below = max((s for s in legacy if s < expected), default=0)
        findings.append(_gap(expected, named_by, below))
    return findings


def _gap(expected: int, named_by: int | None, below: int) -> Finding:
    return Finding(
        "chain",
        f"tree head {expected}",
        f"gone: head {named_by} names it as the one before it "
        f"(the chain resumes at {below or 'nothing'})",
    )


@dataclass(frozen=True)
class _Witnessed:
    witness: str
    cosigned_at: datetime
    head: LogHead


async def _cosigned(
    connection: AsyncConnection, keys: VerifyKeys, report: Report
) -> list[_Witnessed]:
    """The checkpoints the configured witnesses cosigned, each cosignature and the vault's
    signature checked (findings for those that fail)."""
    found: list[_Witnessed] = []
    rows = await connection.execute(select(cosignatures).order_by(cosignatures.c.id))
    for row in rows.mappings():
        witness = next(
            (
                key
                for key in keys.witnesses
                if (key.name, key.key_hash) == (row["witness"], bytes(row["key_hash"]))
            ),
            None,
        )
        if witness is None:
            continue  # not a witness this verifier trusts
        report.cosignatures_checked += 1
        where = f"cosigned head {row['tree_size']}"
        try:
            note = Note.parse(str(row["checkpoint"]))
            head = open_head(str(row["checkpoint"]), keys.public_key)
        except NoteError as exc:
            report.findings.append(Finding("witnessed", where, f"not the log's checkpoint: {exc}"))
            continue
        signature = bytes(row["signature"])
        if (
            head.size != row["tree_size"]
            or not witness.verify(note.text, signature)
            or datetime.fromtimestamp(int.from_bytes(signature[:8]), UTC) != row["cosigned_at"]
        ):
            report.findings.append(
                Finding("witnessed", where, f"the cosignature of {witness.name} does not verify")
            )
            continue
        found.append(_Witnessed(witness.name, row["cosigned_at"], head))
    return found
