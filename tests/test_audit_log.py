"""The audit trail as a verifiable log, on a fresh database per test (entries are committed
for real: the sequencer only takes finished transactions)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from nacl.signing import SigningKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.vault.audit.service import AuditLog
from services.vault.audit.verify import verify_log
from shared import audit, merkle
from shared.audit import AuditAction, AuditEntry, canonical_bytes, entries
from shared.db import utc_now
from shared.signatures import b64encode, public_key_of, tree_head_message, verify

KEY = SigningKey(b"k" * 32)
PUBLIC = public_key_of(KEY)
ORG = uuid.UUID(int=7)


def _entry(i: int, **changes: object) -> AuditEntry:
    values: dict[str, object] = {
        "action": AuditAction.consultation,
        "service": "vault",
        "actor_subject": f"agent-{i % 3}",
        "actor_role": "habilite",
        "organisation_id": ORG,
        "motif": f"vérification {i}",
        "recording_ids": [uuid.UUID(int=i % 5)],
        "details": {"n": i},
    }
    values.update(changes)
    return AuditEntry(**values)  # type: ignore[arg-type]


async def _append(engine: AsyncEngine, *batch: AuditEntry) -> None:
    async with AsyncSession(engine) as session, session.begin():
        for entry in batch:
            await audit.append(session, entry)


async def _log_step(engine: AsyncEngine, sign: bool = True) -> None:
    async with AsyncSession(engine) as session, session.begin():
        log = AuditLog(session, KEY)
        await log.sequence_all()
        if sign:
            await log.sign_head()


async def _verify(engine: AsyncEngine, **kwargs: object):  # type: ignore[no-untyped-def]
    async with engine.connect() as connection:
        return await verify_log(connection, PUBLIC, **kwargs)  # type: ignore[arg-type]


async def test_concurrent_writers_get_one_gapless_order(fresh_engine: AsyncEngine) -> None:
    async def writer(w: int) -> None:
        for i in range(25):
            await _append(fresh_engine, _entry(w * 100 + i))

    await asyncio.gather(*(writer(w) for w in range(8)))
    await _log_step(fresh_engine)
    async with fresh_engine.connect() as connection:
        seqs = (await connection.execute(text("SELECT seq FROM audit.leaves ORDER BY seq"))).all()
        assert [s for (s,) in seqs] == list(range(200))
    report = await _verify(fresh_engine)
    assert report.ok, report.findings
    assert (report.tree_size, report.entries_checked, report.heads_checked) == (200, 200, 1)


async def test_a_late_commit_is_logged_after_the_others(fresh_engine: AsyncEngine) -> None:
    maker = async_sessionmaker(fresh_engine)
    async with maker() as slow:
        await slow.begin()
        await audit.append(slow, _entry(0, motif="slow transaction"))  # not committed yet
        await _append(fresh_engine, _entry(1), _entry(2))
        await _log_step(fresh_engine)
        async with fresh_engine.connect() as connection:
            # Entries of transactions started after the slow one wait for it: never skipped.
            size = (await connection.execute(text("SELECT count(*) FROM audit.leaves"))).scalar()
            assert size == 0
        await slow.commit()
    await _log_step(fresh_engine)
    async with fresh_engine.connect() as connection:
        motifs = (
            await connection.execute(
                text(
                    "SELECT e.motif FROM audit.leaves l JOIN audit.entries e USING (entry_id) "
                    "ORDER BY l.seq"
                )
            )
        ).all()
    assert [m for (m,) in motifs] == ["slow transaction", "vérification 1", "vérification 2"]
    assert (await _verify(fresh_engine)).ok


async def test_inclusion_and_consistency_proofs_verify(fresh_engine: AsyncEngine) -> None:
    await _append(fresh_engine, *(_entry(i) for i in range(13)))
    await _log_step(fresh_engine)
    await _append(fresh_engine, *(_entry(i) for i in range(13, 40)))
    await _log_step(fresh_engine)
    async with AsyncSession(fresh_engine) as session:
        log = AuditLog(session, KEY)
        for tree_size in (13, 40):
            head = await log.signed_head(tree_size)
            message = tree_head_message(head.tree_size, head.root_hash, head.signed_at)
            assert verify(PUBLIC, message, b64encode(head.signature))
        async with fresh_engine.connect() as connection:
            rows = (await connection.execute(entries.select().order_by(entries.c.id))).mappings()
            some = list(rows)[::7]
        for row in some:
            leaf, head, path = await log.inclusion_proof(row["entry_id"], None)
            leaf_hash = merkle.leaf_hash(canonical_bytes(row))
            assert merkle.verify_inclusion(
                leaf_hash, leaf["seq"], head.tree_size, path, head.root_hash
            )
            assert not merkle.verify_inclusion(
                merkle.leaf_hash(b"forged"), leaf["seq"], head.tree_size, path, head.root_hash
            )
        old, new, proof = await log.consistency_proof(13, 40)
        assert merkle.verify_consistency(13, 40, old.root_hash, new.root_hash, proof)
        assert not merkle.verify_consistency(13, 40, bytes(32), new.root_hash, proof)


async def test_the_service_role_can_only_read_and_append(fresh_engine: AsyncEngine) -> None:
    await _append(fresh_engine, _entry(0))
    await _log_step(fresh_engine)
    for sql in (
        "UPDATE audit.entries SET motif = 'rewritten'",
        "DELETE FROM audit.entries",
        "UPDATE audit.leaves SET seq = seq + 1",
        "DELETE FROM audit.tree_heads",
        "TRUNCATE audit.entries",
        "ALTER TABLE audit.entries DISABLE TRIGGER ALL",
    ):
        async with fresh_engine.connect() as connection:
            with pytest.raises(DBAPIError, match="permission denied|must be owner"):
                await connection.execute(text(sql))


async def test_even_the_owner_cannot_edit_entries_while_triggers_stand(
    admin_engine: AsyncEngine,
) -> None:
    await _append(admin_engine, _entry(0))
    async with admin_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            await connection.execute(text("UPDATE audit.entries SET motif = 'x'"))


# --- tampering with raw SQL, as someone with the database's owner password could ----------


async def _seeded(fresh_engine: AsyncEngine) -> None:
    await _append(fresh_engine, *(_entry(i) for i in range(20)))
    await _log_step(fresh_engine)
    await _append(fresh_engine, *(_entry(i) for i in range(20, 37)))
    await _log_step(fresh_engine)
    assert (await _verify(fresh_engine)).ok


async def _tamper(admin: AsyncEngine, *statements: str) -> None:
    async with admin.begin() as connection:
        for table in ("entries", "leaves", "nodes", "tree_heads"):
            await connection.execute(text(f"ALTER TABLE audit.{table} DISABLE TRIGGER ALL"))
        for sql in statements:
            await connection.execute(text(sql))
        for table in ("entries", "leaves", "nodes", "tree_heads"):
            await connection.execute(text(f"ALTER TABLE audit.{table} ENABLE TRIGGER ALL"))


def _seq_of(position: int) -> str:
    return f"(SELECT entry_id FROM audit.leaves WHERE seq = {position})"


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        pytest.param(
            [f"UPDATE audit.entries SET motif = 'autre motif' WHERE entry_id = {_seq_of(5)}"],
            {("modified", "seq 5")},
            id="edit",
        ),
        pytest.param(
            [f"DELETE FROM audit.entries WHERE entry_id = {_seq_of(11)}"],
            {("deleted", "seq 11")},
            id="delete-entry",
        ),
        pytest.param(
            [
                "UPDATE audit.leaves SET seq = -1 WHERE seq = 3",
                "UPDATE audit.leaves SET seq = 3 WHERE seq = 4",
                "UPDATE audit.leaves SET seq = 4 WHERE seq = -1",
            ],
            {("order", "seq 4"), ("node", "level 1 #1")},
            id="reorder",
        ),
        pytest.param(
            [
                "DELETE FROM audit.entries WHERE entry_id IN "
                "(SELECT entry_id FROM audit.leaves WHERE seq >= 30)",
                "DELETE FROM audit.leaves WHERE seq >= 30",
                "DELETE FROM audit.nodes WHERE ((idx + 1) << level) > 30",
            ],
            {("truncated", "tree head 37")},
            id="delete-the-end",
        ),
        pytest.param(
            ["UPDATE audit.tree_heads SET signed_at = signed_at - interval '1 day'"],
            {("signature", "tree head 20"), ("signature", "tree head 37")},
            id="forge-head",
        ),
        pytest.param(
            [
                "UPDATE audit.leaves SET leaf_hash = decode(repeat('00', 32), 'hex') WHERE seq = 8",
            ],
            {("modified", "seq 8")},
            id="edit-leaf",
        ),
    ],
)
async def test_verify_detects_and_locates_tampering(
    fresh_engine: AsyncEngine,
    admin_engine: AsyncEngine,
    statements: list[str],
    expected: set[tuple[str, str]],
) -> None:
    await _seeded(fresh_engine)
    await _tamper(admin_engine, *statements)
    report = await _verify(fresh_engine)
    found = {(f.kind, f.where) for f in report.findings}
    assert expected <= found, report.findings


async def test_verify_detects_inserted_entries(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine
) -> None:
    await _seeded(fresh_engine)
    # A backdated entry slipped into the table: the sequencer logs it at the end, and its date
    # gives it away...
    backdated = _entry(99, occurred_at=utc_now() - timedelta(days=2), motif="antidaté")
    await _append(admin_engine, backdated)
    await _log_step(fresh_engine)
    report = await _verify(fresh_engine)
    assert ("backdated", "seq 37") in {(f.kind, f.where) for f in report.findings}
    # ...and an entry inserted with the sequencer stopped never gets into the log at all.
    hidden = _entry(100, occurred_at=utc_now() - timedelta(hours=1))
    await _append(admin_engine, hidden)
    report = await _verify(fresh_engine)
    assert ("unsequenced", f"entry {hidden.entry_id}") in {
        (f.kind, f.where) for f in report.findings
    }


async def test_purge_after_three_years_keeps_the_log_verifiable(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine
) -> None:
    old = utc_now() - timedelta(days=3 * 366 + 2)
    await _append(
        fresh_engine, *(_entry(i, occurred_at=old + timedelta(seconds=i)) for i in range(6))
    )
    await _append(fresh_engine, *(_entry(i) for i in range(6, 10)))
    await _log_step(fresh_engine)
    async with fresh_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="three years"):
            await connection.execute(text("SELECT audit.purge_before(now() - interval '1 year')"))
    async with AsyncSession(fresh_engine) as session, session.begin():
        from services.vault.audit.service import purge_expired

        purged = await purge_expired(session, actor="temoin-erase")
    assert purged == 6
    await _log_step(fresh_engine)
    report = await _verify(fresh_engine)
    assert report.ok, report.findings
    assert (report.purged, report.entries_checked, report.tree_size) == (6, 5, 11)
    # Deleting a recent entry still shows, purge or not.
    await _tamper(admin_engine, f"DELETE FROM audit.entries WHERE entry_id = {_seq_of(8)}")
    report = await _verify(fresh_engine)
    assert ("deleted", "seq 8") in {(f.kind, f.where) for f in report.findings}


async def test_the_feed_resumes_from_a_checkpoint_and_never_repeats(
    fresh_engine: AsyncEngine,
) -> None:
    await _append(fresh_engine, *(_entry(i) for i in range(25)))
    await _log_step(fresh_engine, sign=False)
    seen: list[int] = []
    checkpoint = -1
    async with AsyncSession(fresh_engine) as session:
        first = await audit.read_feed(session, after_seq=checkpoint, limit=10)
        seen += [event.seq for event in first]
        checkpoint = first[-1].seq
        # A consumer that crashed after its checkpoint reads the same next page again.
        again = await audit.read_feed(session, after_seq=checkpoint, limit=10)
        assert again == await audit.read_feed(session, after_seq=checkpoint, limit=10)
    await _append(fresh_engine, *(_entry(i) for i in range(25, 30)))
    await _log_step(fresh_engine, sign=False)
    async with AsyncSession(fresh_engine) as session:
        while page := await audit.read_feed(session, after_seq=checkpoint, limit=10):
            seen += [event.seq for event in page]
            checkpoint = page[-1].seq
    assert seen == list(range(30))
    async with AsyncSession(fresh_engine) as session:
        events = await audit.read_feed(session, after_seq=-1, limit=100)
    assert [e.details["n"] for e in events] == list(range(30))
    assert len({e.entry_id for e in events}) == 30
