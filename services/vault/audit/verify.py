"""`temoin audit verify`: recompute the whole log from the entries and check it.

What it finds, and where (each finding names the log position and the entry):
- an entry edited after it was logged: its recomputed leaf hash differs from the stored one;
- an entry deleted: a leaf whose entry is gone (legitimate only below the purge watermark);
- leaves reordered, removed or inserted: positions out of the sequencer's order, gaps, or
  stored subtree hashes that no longer match;
- a log cut short or rewritten: a signed tree head larger than the log, or whose root differs;
- a forged head: a signature that does not verify with the log's public key;
- an entry slipped in behind the sequencer: unsequenced long after it claims to have happened,
  or sequenced far behind entries that happened later (backdated).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.vault.audit.tables import nodes, tree_heads
from shared import merkle
from shared.audit import AuditAction, canonical_bytes, entries
from shared.db import utc_now
from shared.signatures import b64encode, tree_head_message, verify

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
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


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


async def purge_watermark(connection: AsyncConnection) -> int:
    """Positions below this may have lost their entry to the three-year purge. It is read from
    the purge entries themselves, which are in the log like any other."""
    below = (
        await connection.execute(
            select(func.max(entries.c.details["below_seq"].as_integer())).where(
                entries.c.action == AuditAction.audit_purge.value
            )
        )
    ).scalar_one()
    return int(below or 0)


async def verify_log(
    connection: AsyncConnection, public_key: str, *, now: datetime | None = None
) -> Report:
    report = Report()
    findings = report.findings
    watermark = await purge_watermark(connection)
    recomputed: list[bytes] = []
    previous_order: tuple[int, int] | None = None
    latest_occurred: datetime | None = None

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
                report.purged += 1
            else:
                findings.append(
                    Finding("deleted", f"seq {seq}", f"entry {row['leaf_entry_id']} is gone")
                )
            recomputed.append(stored)
            continue
        report.entries_checked += 1
        leaf = merkle.leaf_hash(canonical_bytes(row))
        if leaf != stored:
            findings.append(
                Finding("modified", f"seq {seq}", f"entry {row['entry_id']} differs from its leaf")
            )
        occurred: datetime = row["occurred_at"]
        if latest_occurred is not None and occurred < latest_occurred - BACKDATE_TOLERANCE:
            findings.append(
                Finding("backdated", f"seq {seq}", f"entry {row['entry_id']} dated {occurred}")
            )
        latest_occurred = max(latest_occurred or occurred, occurred)
        recomputed.append(leaf)
    report.tree_size = len(recomputed)
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

    heads = await connection.execute(select(tree_heads).order_by(tree_heads.c.tree_size))
    for head in heads.mappings():
        report.heads_checked += 1
        size, root = head["tree_size"], bytes(head["root_hash"])
        signed_at = head["signed_at"].isoformat(timespec="microseconds").replace("+00:00", "Z")
        where = f"tree head {size}"
        signature = b64encode(bytes(head["signature"]))
        if not verify(public_key, tree_head_message(size, root, signed_at), signature):
            findings.append(Finding("signature", where, "does not verify with the log's key"))
        if size > report.tree_size:
            findings.append(
                Finding("truncated", where, f"the log has only {report.tree_size} leaves")
            )
        elif merkle.range_hash(0, size, levels) != root:
            findings.append(Finding("root", where, "the recomputed root differs"))

    cutoff = (now or utc_now()) - SEQUENCING_DELAY
    stray = await connection.execute(
        text(
            "SELECT e.entry_id, e.occurred_at FROM audit.entries e "
            "WHERE e.occurred_at < :cutoff AND NOT EXISTS "
            "(SELECT 1 FROM audit.leaves l WHERE l.entry_id = e.entry_id)"
        ),
        {"cutoff": cutoff},
    )
    for entry_id, occurred in stray:
        findings.append(
            Finding("unsequenced", f"entry {entry_id}", f"dated {occurred}, never logged")
        )
    return report
