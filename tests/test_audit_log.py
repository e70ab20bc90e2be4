"""The audit trail as a verifiable log, on a fresh database per test (entries are committed
for real: the sequencer only takes finished transactions). Tampering is done with raw SQL as
the database's superuser, triggers dropped, as an attacker with that password could."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from nacl.signing import SigningKey
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.vault.audit.service import AuditLog, LogKeys, purge_expired
from services.vault.audit.verify import Report, VerifyKeys, verify_log
from shared import audit, merkle
from shared.audit import (
    AuditAction,
    AuditEntry,
    AuditWriter,
    WriterKeys,
    canonical_bytes,
    entries,
    entry_row,
    writer_info,
)
from shared.db import utc_now
from shared.errors import Conflict
from shared.notes import COSIGNATURE_V1, NoteSigner
from shared.signatures import public_key_of
from shared.witness import open_head

KEY = SigningKey(b"k" * 32)
PUBLIC = public_key_of(KEY)
ORIGIN = "test.invalid/audit"
VAULT = AuditWriter("vault", SigningKey(b"v" * 32))
INGEST = AuditWriter("ingest", SigningKey(b"i" * 32))
THIEF = AuditWriter("vault", SigningKey(b"t" * 32))  # a key nobody configured
WITNESS = NoteSigner("dpo.test.invalid/witness", SigningKey(b"d" * 32), COSIGNATURE_V1)
WRITERS = WriterKeys([VAULT.verifier, INGEST.verifier])
VERIFY = VerifyKeys(
    public_key=PUBLIC, writers=WRITERS, witnesses=(WITNESS.verifier,), origin=ORIGIN
)
ORG = uuid.UUID(int=7)


@pytest.fixture
def keys() -> LogKeys:
    """One vault process's keys and memory: each test starts a new one."""
    return LogKeys(signing_key=KEY, origin=ORIGIN, writers=WRITERS, witnesses=(WITNESS.verifier,))


def _entry(i: int, **changes: object) -> AuditEntry:
    values: dict[str, object] = {
        "action": AuditAction.consultation,
        "service": "vault",
        "actor_subject": f"agent-{i % 3}",
        "actor_role": "habilite",
        "organisation_id": ORG,
        "motif": f"vérification {i}",
        "recording_ids": [uuid.UUID(int=i % 5)],
        "details": {"n": i, "ratio": i / 8, "list": [i, "é"]},
    }
    values.update(changes)
    return AuditEntry(**values)  # type: ignore[arg-type]


async def _append(engine: AsyncEngine, *batch: AuditEntry, writer: AuditWriter = VAULT) -> None:
    async with AsyncSession(engine, info=writer_info(writer)) as session, session.begin():
        for entry in batch:
            await audit.append(session, entry)


async def _log_step(engine: AsyncEngine, keys: LogKeys, sign: bool = True, **kw: Any) -> None:
    async with AsyncSession(engine) as session, session.begin():
        log = AuditLog(session, keys)
        await log.sequence_all()
        await log.guard_heads()
    if sign:
        async with AsyncSession(engine) as session, session.begin():
            await AuditLog(session, keys).sign_head(**kw)


async def _verify(engine: AsyncEngine, **kwargs: Any) -> Report:
    async with engine.connect() as connection:
        return await verify_log(connection, VERIFY, **kwargs)


def _found(report: Report) -> set[tuple[str, str]]:
    return {(f.kind, f.where) for f in report.findings}


async def test_concurrent_writers_get_one_gapless_order(
    fresh_engine: AsyncEngine, keys: LogKeys
) -> None:
    async def writer(w: int) -> None:
        author = (VAULT, INGEST)[w % 2]  # two services write at once
        for i in range(25):
            await _append(fresh_engine, _entry(w * 100 + i, service=author.name), writer=author)

    await asyncio.gather(
        *(writer(w) for w in range(8)),
    )
    await _log_step(fresh_engine, keys)
    async with fresh_engine.connect() as connection:
        seqs = (await connection.execute(text("SELECT seq FROM audit.leaves ORDER BY seq"))).all()
        assert [s for (s,) in seqs] == list(range(200))
    report = await _verify(fresh_engine)
    assert report.ok, report.findings
    assert (report.tree_size, report.entries_checked, report.heads_checked) == (200, 200, 1)


async def test_a_service_appends_only_as_itself(fresh_engine: AsyncEngine) -> None:
    async with AsyncSession(fresh_engine, info=writer_info(INGEST)) as session:
        with pytest.raises(ValueError, match="ingest service cannot write entries of vault"):
            await audit.append(session, _entry(0))
    async with AsyncSession(fresh_engine) as session:
        with pytest.raises(RuntimeError, match="no audit writer"):
            await audit.append(session, _entry(0))


async def test_a_late_commit_is_logged_after_the_others(
    fresh_engine: AsyncEngine, keys: LogKeys
) -> None:
    maker = async_sessionmaker(fresh_engine, info=writer_info(VAULT))
    async with maker() as slow:
        await slow.begin()
        await audit.append(slow, _entry(0, motif="slow transaction"))  # not committed yet
        await _append(fresh_engine, _entry(1), _entry(2))
        await _log_step(fresh_engine, keys)
        async with fresh_engine.connect() as connection:
            # Entries of transactions started after the slow one wait for it: never skipped.
            size = (await connection.execute(text("SELECT count(*) FROM audit.leaves"))).scalar()
            assert size == 0
        await slow.commit()
    await _log_step(fresh_engine, keys)
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


async def test_heads_are_chained_checkpoints_and_proofs_verify(
    fresh_engine: AsyncEngine, keys: LogKeys
) -> None:
    await _append(fresh_engine, *(_entry(i) for i in range(13)))
    await _log_step(fresh_engine, keys)
    await _append(fresh_engine, *(_entry(i) for i in range(13, 40)))
    await _log_step(fresh_engine, keys)
    async with AsyncSession(fresh_engine) as session:
        log = AuditLog(session, keys)
        first, second = await log.signed_head(13), await log.signed_head(40)
        assert first.checkpoint is not None and second.checkpoint is not None
        opened = open_head(first.checkpoint, PUBLIC)
        assert (opened.origin, opened.size, opened.previous_size) == (ORIGIN, 13, 0)
        assert opened.previous_root == merkle.EMPTY_ROOT
        chained = open_head(second.checkpoint, PUBLIC)
        assert (chained.previous_size, chained.previous_root) == (13, first.root_hash)
        assert second.checkpoint.startswith(f"{ORIGIN}\n40\n")
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


async def test_the_service_role_can_only_read_and_append(
    fresh_engine: AsyncEngine, keys: LogKeys
) -> None:
    await _append(fresh_engine, _entry(0))
    await _log_step(fresh_engine, keys)
    for sql in (
        "UPDATE audit.entries SET motif = 'rewritten'",
        "DELETE FROM audit.entries",
        "UPDATE audit.leaves SET seq = seq + 1",
        "DELETE FROM audit.tree_heads",
        "DELETE FROM audit.cosignatures",
        "DELETE FROM audit.refusals",
        "UPDATE audit.authentication SET since_txid = '0'",
        "TRUNCATE audit.entries",
        "ALTER TABLE audit.entries DISABLE TRIGGER ALL",
        "SELECT audit.purge_before(now() - interval '4 years')",
    ):
        async with fresh_engine.connect() as connection:
            with pytest.raises(DBAPIError, match="permission denied|must be owner|append-only"):
                await connection.execute(text(sql))


async def test_even_the_owner_cannot_edit_entries_while_triggers_stand(
    admin_engine: AsyncEngine,
) -> None:
    await _append(admin_engine, _entry(0))
    async with admin_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="append-only"):
            await connection.execute(text("UPDATE audit.entries SET motif = 'x'"))


# --- tampering with raw SQL, as someone with the database's owner password could ----------

TABLES = (
    "entries",
    "leaves",
    "nodes",
    "tree_heads",
    "cosignatures",
    "refusals",
    "authentication",
)


async def _seeded(fresh_engine: AsyncEngine, keys: LogKeys) -> None:
    """37 entries under heads 20 and 37, head 37 cosigned by the witness."""
    await _append(fresh_engine, *(_entry(i) for i in range(20)))
    await _log_step(fresh_engine, keys)
    await _append(fresh_engine, *(_entry(i) for i in range(20, 37)))
    await _log_step(fresh_engine, keys)
    await _cosign(fresh_engine, keys, 37)
    report = await _verify(fresh_engine)
    assert report.ok and report.cosignatures_checked == 1, report.findings


async def _cosign(engine: AsyncEngine, keys: LogKeys, size: int) -> None:
    async with AsyncSession(engine) as session, session.begin():
        log = AuditLog(session, keys)
        head = await log.signed_head(size)
        assert head.checkpoint is not None
        text_ = head.checkpoint[: head.checkpoint.rindex("\n\n") + 1]
        line = WITNESS.sign(text_, timestamp=int(utc_now().timestamp())).line()
        await log.add_cosignature(size, line.rstrip("\n"))


async def _tamper(admin: AsyncEngine, *statements: str, **params: Any) -> None:
    async with admin.begin() as connection:
        for table in TABLES:
            await connection.execute(text(f"ALTER TABLE audit.{table} DISABLE TRIGGER ALL"))
        for sql in statements:
            await connection.execute(text(sql), params)
        for table in TABLES:
            await connection.execute(text(f"ALTER TABLE audit.{table} ENABLE TRIGGER ALL"))


def _seq_of(position: int) -> str:
    return f"(SELECT entry_id FROM audit.leaves WHERE seq = {position})"


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        pytest.param(
            [f"UPDATE audit.entries SET motif = 'autre motif' WHERE entry_id = {_seq_of(5)}"],
            {("modified", "seq 5"), ("unauthenticated", "seq 5")},
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
            {("truncated", "tree head 37"), ("truncated", "cosigned head 37")},
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
        pytest.param(
            ["DELETE FROM audit.tree_heads WHERE tree_size = 20"],
            {("chain", "tree head 20")},
            id="delete-a-head",
        ),
        pytest.param(
            ["UPDATE audit.entries SET authenticator = NULL WHERE entry_id = " + _seq_of(2)],
            {("unauthenticated", "seq 2")},
            id="strip-authenticator",
        ),
        pytest.param(
            [
                "UPDATE audit.entries SET authenticator = (SELECT authenticator FROM "
                f"audit.entries WHERE entry_id = {_seq_of(3)}) WHERE entry_id = {_seq_of(4)}"
            ],
            {("unauthenticated", "seq 4")},
            id="replay-authenticator",
        ),
    ],
)
async def test_verify_detects_and_locates_tampering(
    fresh_engine: AsyncEngine,
    admin_engine: AsyncEngine,
    keys: LogKeys,
    statements: list[str],
    expected: set[tuple[str, str]],
) -> None:
    await _seeded(fresh_engine, keys)
    await _tamper(admin_engine, *statements)
    report = await _verify(fresh_engine)
    assert expected <= _found(report), report.findings


async def _forge(admin: AsyncEngine, entry: AuditEntry, authenticator: bytes | None) -> None:
    """An entry inserted by hand, with the authenticator given (or none)."""
    row = {**entry_row(entry, None), "authenticator": authenticator}
    async with admin.begin() as connection:
        await connection.execute(entries.insert(), row)


def _refused_count(reason: str) -> float:
    value = REGISTRY.get_sample_value("temoin_audit_entries_refused_total", {"reason": reason})
    return value or 0.0


@pytest.mark.parametrize(
    ("forgery", "reason"),
    [
        pytest.param(lambda e: None, "missing", id="no-authenticator"),
        pytest.param(
            lambda e: THIEF.authenticate(canonical_bytes(_row(e))),
            "unknown_writer",
            id="unknown-key",
        ),
        pytest.param(
            lambda e: INGEST.authenticate(b"another entry"), "invalid", id="signed-something-else"
        ),
        pytest.param(
            lambda e: VAULT.authenticate(canonical_bytes(_row(e))),
            "unknown_writer",
            id="vault-key-for-an-ingest-entry",
        ),
    ],
)
async def test_entries_no_writer_authenticated_are_set_aside_and_reported(
    fresh_engine: AsyncEngine,
    admin_engine: AsyncEngine,
    keys: LogKeys,
    forgery: Any,
    reason: str,
) -> None:
    await _seeded(fresh_engine, keys)
    before = _refused_count(reason)
    forged = _entry(99, service="ingest", motif="inséré en SQL", occurred_at=utc_now())
    await _forge(admin_engine, forged, forgery(forged))
    await _append(fresh_engine, _entry(100, motif="après"))  # not held back by the forgery
    await _log_step(fresh_engine, keys)
    async with fresh_engine.connect() as connection:
        logged = {
            row[0]
            for row in await connection.execute(
                text("SELECT e.motif FROM audit.leaves JOIN audit.entries e USING (entry_id)")
            )
        }
        refusal = (await connection.execute(text("SELECT reason FROM audit.refusals"))).scalar_one()
    assert "inséré en SQL" not in logged and "après" in logged
    assert refusal == reason
    assert _refused_count(reason) == before + 1
    await _log_step(fresh_engine, keys)  # looked at once: never counted again
    assert _refused_count(reason) == before + 1
    assert _found(await _verify(fresh_engine)) == {("unauthenticated", f"entry {forged.entry_id}")}


def _row(entry: AuditEntry) -> dict[str, Any]:
    return entry_row(entry, None)


async def _slip_into_log(admin: AsyncEngine, forged: AuditEntry) -> None:
    """A forged entry given position 37 with its leaf and the subtree it completes."""
    leaf = merkle.leaf_hash(canonical_bytes(_row(forged)))
    async with admin.connect() as connection:
        left = (
            await connection.execute(text("SELECT leaf_hash FROM audit.leaves WHERE seq = 36"))
        ).scalar_one()
    await _tamper(
        admin,
        "INSERT INTO audit.leaves (seq, entry_id, entry_pk, txid, leaf_hash, sequenced_at) "
        "SELECT 37, entry_id, id, txid::text, :leaf, now() FROM audit.entries "
        "WHERE entry_id = :entry",
        "INSERT INTO audit.nodes (level, idx, hash) VALUES (1, 18, :node)",
        leaf=leaf,
        entry=forged.entry_id,
        node=merkle.node_hash(bytes(left), leaf),
    )


async def test_an_entry_slipped_into_the_log_itself_is_reported(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine, keys: LogKeys
) -> None:
    """Past the sequencer: entry, leaf and subtrees inserted by hand, then a head signed."""
    await _seeded(fresh_engine, keys)
    forged = _entry(99, motif="inséré dans l'arbre")
    await _forge(admin_engine, forged, None)
    await _slip_into_log(admin_engine, forged)
    await _log_step(fresh_engine, keys)
    assert ("unauthenticated", "seq 37") in _found(await _verify(fresh_engine))


async def test_a_backdated_entry_from_a_writer_key_thief_is_reported(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine, keys: LogKeys
) -> None:
    """A stolen entry key signs entries the sequencer takes; their date gives them away."""
    await _seeded(fresh_engine, keys)
    backdated = _entry(99, occurred_at=utc_now() - timedelta(days=2), motif="antidaté")
    async with AsyncSession(admin_engine) as session, session.begin():
        await audit.append(session, backdated, writer=VAULT)
    await _log_step(fresh_engine, keys)
    assert ("backdated", "seq 37") in _found(await _verify(fresh_engine))
    # ...and an entry inserted with the sequencer stopped never gets into the log at all.
    hidden = _entry(100, occurred_at=utc_now() - timedelta(hours=1))
    async with AsyncSession(admin_engine) as session, session.begin():
        await audit.append(session, hidden, writer=VAULT)
    assert ("unsequenced", f"entry {hidden.entry_id}") in _found(await _verify(fresh_engine))


async def test_a_truncated_log_and_its_deleted_heads_are_found(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine, keys: LogKeys
) -> None:
    """The end of the log cut, with the heads that covered it: the witness's cosignature shows
    it at once; the vault puts back the head it signed last, and refuses to sign on."""
    await _seeded(fresh_engine, keys)
    truncate = (
        "DELETE FROM audit.entries WHERE entry_id IN "
        "(SELECT entry_id FROM audit.leaves WHERE seq >= 30)",
        "DELETE FROM audit.leaves WHERE seq >= 30",
        "DELETE FROM audit.nodes WHERE ((idx + 1) << level) > 30",
        "DELETE FROM audit.tree_heads WHERE tree_size > 30",
    )
    await _tamper(admin_engine, *truncate)
    found = _found(await _verify(fresh_engine))
    assert {("truncated", "cosigned head 37"), ("witnessed", "cosigned head 37")} <= found
    # The cosignatures deleted too: the vault's memory is what is left.
    await _tamper(admin_engine, "DELETE FROM audit.cosignatures")
    assert (await _verify(fresh_engine)).ok  # nothing in the database tells, yet
    with pytest.raises(Conflict, match="its head 37 had more"):
        await _log_step(fresh_engine, keys)  # the vault's next pass
    assert ("truncated", "tree head 37") in _found(await _verify(fresh_engine))
    await _append(fresh_engine, *(_entry(i) for i in range(40, 50)))  # past 37 again
    with pytest.raises(Conflict, match="no longer match"):
        await _log_step(fresh_engine, keys)
    assert ("root", "tree head 37") in _found(await _verify(fresh_engine))


async def test_a_rewritten_entry_with_its_leaf_subtrees_and_heads_is_found(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine, keys: LogKeys
) -> None:
    """An entry rewritten, its leaf and every subtree above recomputed, the heads that covered
    it deleted: its authenticator no longer verifies, the witness's cosigned head differs, and
    the vault puts back its last head."""
    await _seeded(fresh_engine, keys)
    async with fresh_engine.connect() as connection:
        leaves = [
            bytes(h)
            for (h,) in await connection.execute(
                text("SELECT leaf_hash FROM audit.leaves ORDER BY seq")
            )
        ]
        row = (
            (
                await connection.execute(
                    text(f"SELECT * FROM audit.entries WHERE entry_id = {_seq_of(5)}")
                )
            )
            .mappings()
            .one()
        )
    leaves[5] = merkle.leaf_hash(canonical_bytes({**row, "motif": "un autre motif"}))
    statements = [
        f"UPDATE audit.entries SET motif = 'un autre motif' WHERE entry_id = {_seq_of(5)}",
        f"UPDATE audit.leaves SET leaf_hash = decode('{leaves[5].hex()}', 'hex') WHERE seq = 5",
        "DELETE FROM audit.tree_heads",
    ]
    level = 1
    while (1 << level) <= len(leaves):  # every stored subtree above leaf 5, recomputed
        index = 5 >> level
        if (index + 1) << level <= len(leaves):
            digest = merkle.root_of(leaves[index << level : (index + 1) << level])
            statements.append(
                f"UPDATE audit.nodes SET hash = decode('{digest.hex()}', 'hex') "
                f"WHERE level = {level} AND idx = {index}"
            )
        level += 1
    await _tamper(admin_engine, *statements)
    found = _found(await _verify(fresh_engine))
    assert not {kind for kind, _ in found} & {"modified", "node"}  # the tree itself agrees
    assert {
        ("unauthenticated", "seq 5"),
        ("root", "cosigned head 37"),
        ("witnessed", "cosigned head 37"),
    } <= found
    await _tamper(admin_engine, "DELETE FROM audit.cosignatures")
    with pytest.raises(Conflict, match="no longer match"):
        await _log_step(fresh_engine, keys)
    assert ("root", "tree head 37") in _found(await _verify(fresh_engine))


async def test_a_deleted_head_between_others_breaks_the_chain(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine, keys: LogKeys
) -> None:
    """Heads 20, 37, 45: 37 deleted is a gap in the chain from 45 back to 20, found by the
    chain alone, and by the witness who cosigned it."""
    await _seeded(fresh_engine, keys)
    await _append(fresh_engine, *(_entry(i) for i in range(37, 45)))
    await _log_step(fresh_engine, keys)
    await _tamper(admin_engine, "DELETE FROM audit.tree_heads WHERE tree_size = 37")
    found = _found(await _verify(fresh_engine))
    assert found == {("chain", "tree head 37"), ("witnessed", "cosigned head 37")}


async def test_a_forged_purge_is_ignored_and_the_deleted_entry_reported(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine, keys: LogKeys
) -> None:
    await _seeded(fresh_engine, keys)
    forged = _entry(
        99,
        action=AuditAction.audit_purge,
        organisation_id=None,
        details={"below_seq": 1000, "purged": 1, "cutoff": "2000-01-01T00:00:00.000000Z"},
    )
    await _tamper(admin_engine, f"DELETE FROM audit.entries WHERE entry_id = {_seq_of(8)}")
    await _forge(admin_engine, forged, None)
    await _log_step(fresh_engine, keys)
    found = _found(await _verify(fresh_engine))
    assert {("deleted", "seq 8"), ("unauthenticated", f"entry {forged.entry_id}")} <= found
    # Even slipped into the log past the sequencer, it is no watermark.
    await _slip_into_log(admin_engine, forged)
    found = _found(await _verify(fresh_engine))
    assert {("deleted", "seq 8"), ("unauthenticated", "seq 37")} <= found


@pytest.mark.parametrize(
    ("details", "dated", "problem"),
    [
        pytest.param(
            {"below_seq": 30, "purged": 1, "cutoff": "cutoff:1y"}, 0, "less than three", id="1y"
        ),
        pytest.param(
            {"below_seq": 30, "purged": 1, "cutoff": "cutoff:4y"},
            0,
            "no head signed or cosigned before",
            id="no-old-head",
        ),
        pytest.param(
            {"below_seq": 99, "purged": 1, "cutoff": "cutoff:4y"},
            0,
            "positions after its own",
            id="beyond-itself",
        ),
        pytest.param(
            {"below_seq": 30, "purged": 1, "cutoff": "cutoff:4y"},
            5 * 365,
            "dated in the future",
            id="future",
        ),
        pytest.param({"below_seq": 30}, 0, "does not say", id="incomplete"),
    ],
)
async def test_an_implausible_purge_signed_by_the_vault_is_no_watermark(
    fresh_engine: AsyncEngine,
    admin_engine: AsyncEngine,
    keys: LogKeys,
    details: dict[str, Any],
    dated: int,
    problem: str,
) -> None:
    """Even with the vault's entry key (a bug, or its thief), a purge must be plausible."""
    await _seeded(fresh_engine, keys)
    occurred = utc_now() + timedelta(days=dated)
    years = {"cutoff:1y": 1, "cutoff:4y": 4}
    if "cutoff" in details:
        cutoff = occurred - timedelta(days=365 * years[details["cutoff"]])
        details = {**details, "cutoff": cutoff.isoformat().replace("+00:00", "Z")}
    purge = _entry(
        99,
        action=AuditAction.audit_purge,
        organisation_id=None,
        details=details,
        occurred_at=occurred,
    )
    await _tamper(admin_engine, f"DELETE FROM audit.entries WHERE entry_id = {_seq_of(8)}")
    await _append(fresh_engine, purge)
    await _log_step(fresh_engine, keys, sign=False)
    report = await _verify(fresh_engine)
    assert ("deleted", "seq 8") in _found(report)
    purge_findings = [f for f in report.findings if f.kind == "purge"]
    assert purge_findings and problem in purge_findings[0].detail, report.findings


async def test_purge_after_three_years_keeps_the_log_verifiable(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine, keys: LogKeys
) -> None:
    old = utc_now() - timedelta(days=3 * 366 + 2)
    await _append(
        fresh_engine, *(_entry(i, occurred_at=old + timedelta(seconds=i)) for i in range(6))
    )
    # The head that covered them then, three years ago.
    await _log_step(fresh_engine, keys, now=old + timedelta(hours=1))
    await _append(fresh_engine, *(_entry(i) for i in range(6, 10)))
    await _log_step(fresh_engine, keys)
    async with fresh_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="three years"):
            await connection.execute(text("SELECT audit.purge_below(6, now() - interval '1 year')"))
    async with fresh_engine.connect() as connection:
        with pytest.raises(DBAPIError, match="no tree head signed before"):
            await connection.execute(
                text("SELECT audit.purge_below(10, now() - interval '3 years')")
            )
    async with AsyncSession(fresh_engine, info=writer_info(VAULT)) as session, session.begin():
        purged = await purge_expired(session, keys, actor="temoin-erase")
    assert purged == 6
    await _log_step(fresh_engine, keys)
    report = await _verify(fresh_engine)
    assert report.ok, report.findings
    assert (report.purged, report.entries_checked, report.tree_size) == (6, 5, 11)
    # Deleting a recent entry still shows, purge or not.
    await _tamper(admin_engine, f"DELETE FROM audit.entries WHERE entry_id = {_seq_of(8)}")
    report = await _verify(fresh_engine)
    assert ("deleted", "seq 8") in _found(report)


async def test_entries_from_before_authenticators_are_logged_as_they_are(
    fresh_engine: AsyncEngine, admin_engine: AsyncEngine, keys: LogKeys
) -> None:
    """Entries written before migration 0010 (none had an authenticator) are still logged,
    and only as the log's first; an unauthenticated entry after an authenticated one is a
    finding whatever the boundary says."""
    for i in range(3):
        await _forge(admin_engine, _entry(i, motif="avant 0010"), None)
    await _tamper(admin_engine, "UPDATE audit.authentication SET since_txid = pg_current_xact_id()")
    await _append(fresh_engine, _entry(3))
    await _log_step(fresh_engine, keys)
    report = await _verify(fresh_engine)
    assert report.ok and report.unauthenticated_legacy == 3, report.findings
    assert report.entries_checked == 4
    # The boundary raised by hand (audit.authentication is append-only: a higher row added),
    # for a sequencer that remembers nothing yet (a new process): the log holds an
    # authenticated entry, so the forgery is set aside, never logged as old.
    await _tamper(admin_engine, "INSERT INTO audit.authentication VALUES ('18446744073709551615')")
    forged = _entry(4, motif="après")
    await _forge(admin_engine, forged, None)
    await _log_step(fresh_engine, LogKeys(signing_key=KEY, origin=ORIGIN, writers=WRITERS))
    async with fresh_engine.connect() as connection:
        size = (await connection.execute(text("SELECT count(*) FROM audit.leaves"))).scalar()
        refusal = (await connection.execute(text("SELECT reason FROM audit.refusals"))).scalar()
    assert (size, refusal) == (4, "missing")
    assert _found(await _verify(fresh_engine)) == {("unauthenticated", f"entry {forged.entry_id}")}


async def test_cosignatures_from_configured_witnesses_only(
    fresh_engine: AsyncEngine, keys: LogKeys
) -> None:
    await _append(fresh_engine, *(_entry(i) for i in range(5)))
    await _log_step(fresh_engine, keys)
    async with AsyncSession(fresh_engine) as session, session.begin():
        log = AuditLog(session, keys)
        head = await log.signed_head(5)
        assert head.checkpoint is not None
        body = head.checkpoint[: head.checkpoint.rindex("\n\n") + 1]
        now = int(utc_now().timestamp())
        stranger = NoteSigner("other.invalid/w", SigningKey(b"s" * 32), COSIGNATURE_V1)
        for line, message in (
            (stranger.sign(body, timestamp=now).line(), "not a witness of this log"),
            (WITNESS.sign(body + "x\n", timestamp=now).line(), "does not verify"),
            (WITNESS.sign(body, timestamp=now + 3600).line(), "in the future"),
            ("— dpo.test.invalid/witness AAAA", "too short"),
        ):
            with pytest.raises(Exception, match=message):
                await log.add_cosignature(5, line.rstrip("\n"))
        line = WITNESS.sign(body, timestamp=now).line()
        await log.add_cosignature(5, line.rstrip("\n"))
        await log.add_cosignature(5, line.rstrip("\n"))  # sent twice, kept once
        assert (await log.checkpoint(5)).endswith(line)
        (status,) = await log.witnesses()
        assert status["row"]["tree_size"] == 5
    value = REGISTRY.get_sample_value(
        "temoin_audit_cosigned_timestamp_seconds", {"witness": WITNESS.name}
    )
    assert value is not None and value >= now


async def test_the_feed_resumes_from_a_checkpoint_and_never_repeats(
    fresh_engine: AsyncEngine, keys: LogKeys
) -> None:
    await _append(fresh_engine, *(_entry(i) for i in range(25)))
    await _log_step(fresh_engine, keys, sign=False)
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
    await _log_step(fresh_engine, keys, sign=False)
    async with AsyncSession(fresh_engine) as session:
        while page := await audit.read_feed(session, after_seq=checkpoint, limit=10):
            seen += [event.seq for event in page]
            checkpoint = page[-1].seq
    assert seen == list(range(30))
    async with AsyncSession(fresh_engine) as session:
        events = await audit.read_feed(session, after_seq=-1, limit=100)
    assert [e.details["n"] for e in events] == list(range(30))
    assert len({e.entry_id for e in events}) == 30


async def test_a_head_of_the_empty_log_before_the_latest_attests_it(
    fresh_engine: AsyncEngine, keys: LogKeys
) -> None:
    """A vault may sign the empty log (at its first start); the next head then has nothing to
    be consistent with, and the erasure job's attestor must not ask for a proof from size 0."""
    from services.vault.audit.registry import Attestor

    await _log_step(fresh_engine, keys)  # the empty log, signed
    await _append(fresh_engine, *(_entry(i) for i in range(3)))
    await _log_step(fresh_engine, keys)
    async with AsyncSession(fresh_engine) as session:
        assert (await Attestor(session, PUBLIC).head()).tree_size == 3


async def test_a_recordings_history_is_its_entries_read_through_the_gin_index(
    fresh_engine: AsyncEngine,
) -> None:
    """A recording's history (its page, the extraction's proofs): every entry of the
    organisation that names it, alone or among others, and no other; read through the GIN
    index on recording_ids (`@>`), never by reading every entry (`= ANY` cannot use it)."""
    from services.vault.audit.repository import AuditRepository, EntrySelection

    wanted, other = uuid.uuid4(), uuid.uuid4()
    await _append(
        fresh_engine,
        _entry(1, recording_ids=[wanted]),
        _entry(2, recording_ids=[other, wanted]),
        _entry(3, recording_ids=[other]),
        _entry(4, recording_ids=[]),
        _entry(5, recording_ids=[wanted], organisation_id=uuid.uuid4()),
    )
    async with AsyncSession(fresh_engine) as session:
        rows, total = await AuditRepository(session).search(
            EntrySelection(organisation_id=ORG, recording_id=wanted), limit=10, offset=0
        )
        assert total == 2
        assert sorted(row["details"]["n"] for row in rows) == [1, 2]
        # With sequential scans priced out, a condition the index can answer is read from it.
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        statement = select(audit.entries.c.id).where(audit.naming(wanted))
        sql = statement.compile(
            dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
        )
        plan = "\n".join(await session.scalars(text(f"EXPLAIN {sql}")))
        assert "ix_audit_entries_recording_ids" in plan, plan
