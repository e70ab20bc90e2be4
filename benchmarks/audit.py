"""`make bench-audit`: the audit trail's speed, on a real PostgreSQL of this machine.

1. Sustained appends with 8 concurrent writers, one entry per transaction (as an action and its
   entry commit together), with the sequencer running; beside it, the peer: plain single-row
   INSERT + COMMIT into a table of the same shape, same 8 writers, no trigger, no log.
2. Inclusion-proof time (median of 200 random entries) at 10k entries and at 1M entries.
3. Time to verify the whole log of 1M entries (`temoin audit verify`).
Targets on this machine: >= 2,000 appends/s; proof at 1M <= 2x proof at 10k.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import random
import statistics
import time
import uuid
from typing import Any

from nacl.signing import SigningKey
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from benchmarks.common import postgres, rate
from services.vault.audit.service import AuditLog, LogKeys
from services.vault.audit.verify import VerifyKeys, verify_log
from shared import audit
from shared.audit import AuditAction, AuditEntry, AuditWriter, WriterKeys, canonical_bytes
from shared.db import create_engine, utc_now
from shared.signatures import public_key_of

KEY = SigningKey(b"b" * 32)
# Entries are authenticated by their writer (the vault here), as in production.
WRITER = AuditWriter("vault", SigningKey(b"w" * 32))
LOG_KEYS = LogKeys(
    signing_key=KEY, origin="bench.invalid/audit", writers=WriterKeys([WRITER.verifier])
)
PEER_INSERT = text("INSERT INTO public.peer (motif, n) VALUES (:m, :n)")
WRITERS = 8


def _entry(i: int) -> AuditEntry:
    return AuditEntry(
        action=AuditAction.consultation,
        service="vault",
        actor_subject=f"agent-{i % 40}",
        actor_role="habilite",
        organisation_id=uuid.UUID(int=i % 30 + 1),
        motif="constatation d'une infraction",
        recording_ids=[uuid.UUID(int=i)],
        details={"n": i},
    )


PROCESSES = 2  # writers run in the services' processes: ingest and vault both append
SEQUENCE_EVERY_S = 1.0  # the vault's default (VAULT_AUDIT_SEQUENCE_INTERVAL_S)


def _writer_process(url: str, first: int, seconds: float, kind: str, queue: Any) -> None:
    """One process with WRITERS // PROCESSES writers, one row per transaction."""

    async def run() -> None:
        writers = WRITERS // PROCESSES
        engine = create_engine(
            url, application_name="bench", pool_size=writers + 1, role="temoin_service"
        )
        deadline = time.monotonic() + seconds
        counts = [0] * writers

        async def writer(w: int) -> None:
            i = first + w
            while time.monotonic() < deadline:
                async with AsyncSession(engine) as session, session.begin():
                    if kind == "append":
                        await audit.append(session, _entry(i), writer=WRITER)
                    else:
                        await session.execute(
                            PEER_INSERT, {"m": "constatation d'une infraction", "n": i}
                        )
                counts[w] += 1
                i += WRITERS

        await asyncio.gather(*(writer(w) for w in range(writers)))
        await engine.dispose()
        queue.put(sum(counts))

    asyncio.run(run())


def _writers(url: str, seconds: float, kind: str) -> int:
    queue: Any = multiprocessing.Queue()
    processes = [
        multiprocessing.Process(
            target=_writer_process, args=(url, p * WRITERS // PROCESSES, seconds, kind, queue)
        )
        for p in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    total = sum(int(queue.get(timeout=seconds + 60)) for _ in processes)
    for process in processes:
        process.join(30)
    return total


async def _sequencer(engine: AsyncEngine, stop: asyncio.Event) -> None:
    while not stop.is_set():
        async with AsyncSession(engine) as session, session.begin():
            await AuditLog(session, LOG_KEYS).sequence_all()
        await asyncio.sleep(SEQUENCE_EVERY_S)


_COLUMNS = (
    "entry_id",
    "occurred_at",
    "service",
    "action",
    "outcome",
    "organisation_id",
    "actor_subject",
    "actor_role",
    "motif",
    "recording_ids",
    "details",
    "authenticator",
)


def _signed_rows(first: int, count: int) -> list[tuple[Any, ...]]:
    """Synthetic entries, each authenticated as the vault authenticates its own."""
    now = utc_now()
    rows = []
    for g in range(first, first + count):
        row = {
            "entry_id": uuid.uuid4(),
            "occurred_at": now,
            "service": "vault",
            "action": "consultation",
            "outcome": "success",
            "organisation_id": uuid.UUID(int=g % 30 + 1),
            "actor_subject": f"agent-{g % 40}",
            "actor_role": "habilite",
            "motif": "constatation d'une infraction",
            "destinataires": [],
            "recording_ids": [uuid.uuid4()],
            "procedure_ref": None,
            "request_id": None,
            "details": {"n": g},
        }
        row["authenticator"] = WRITER.authenticate(canonical_bytes(row))
        row["details"] = json.dumps(row["details"])
        rows.append(tuple(row[name] for name in _COLUMNS))
    return rows


async def _bulk_entries(engine: AsyncEngine, count: int) -> None:
    """Synthetic entries straight into the table with COPY (the append path is measured in
    part 1), signed in worker processes."""
    chunk = 20_000
    with concurrent.futures.ProcessPoolExecutor(PROCESSES) as pool:
        batches = pool.map(
            _signed_rows,
            range(0, count, chunk),
            [min(chunk, count - f) for f in range(0, count, chunk)],
        )
        async with engine.begin() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            for rows in batches:
                await raw.copy_records_to_table(
                    "entries", schema_name="audit", columns=_COLUMNS, records=rows
                )


async def _grow_to(engine: AsyncEngine, size: int) -> None:
    async with AsyncSession(engine) as session:
        current = await AuditLog(session).repository.tree_size()
    await _bulk_entries(engine, size - current)
    while True:
        async with AsyncSession(engine) as session, session.begin():
            added = await AuditLog(session, LOG_KEYS).sequence(batch=20_000)
        if not added:
            break
    async with AsyncSession(engine) as session, session.begin():
        await AuditLog(session, LOG_KEYS).sign_head()


async def _proof_median_ms(engine: AsyncEngine, samples: int = 200) -> float:
    async with AsyncSession(engine) as session:
        size = await AuditLog(session).repository.tree_size()
        ids = [
            row[0]
            for row in (
                await session.execute(
                    text("SELECT entry_id FROM audit.leaves WHERE seq = ANY(:seqs)"),
                    {"seqs": random.sample(range(size), samples)},
                )
            ).all()
        ]
        log = AuditLog(session)
        await log.inclusion_proof(ids[0], None)  # warm up
        timings = []
        for entry_id in ids:
            started = time.perf_counter()
            await log.inclusion_proof(entry_id, None)
            timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


async def run(url: str, entries: int, seconds: float) -> None:
    engine = create_engine(
        url, application_name="bench", pool_size=WRITERS + 2, role="temoin_service"
    )
    admin = create_engine(url, application_name="bench-admin")
    async with admin.begin() as connection:
        await connection.execute(
            text("CREATE TABLE public.peer (id bigserial PRIMARY KEY, motif text, n bigint)")
        )
        await connection.execute(
            text("GRANT ALL ON public.peer, public.peer_id_seq TO temoin_service")
        )

    print(
        f"1. {WRITERS} concurrent writers in {PROCESSES} processes, one entry per "
        f"transaction, {seconds:.0f} s each"
    )
    stop = asyncio.Event()
    sequencer = asyncio.create_task(_sequencer(engine, stop))
    appended = await asyncio.to_thread(_writers, url, seconds, "append")
    stop.set()
    await sequencer
    peer = await asyncio.to_thread(_writers, url, seconds, "peer")
    print(f"   audit appends (sequencer running): {rate(appended, seconds)}")
    print(f"   peer, plain INSERT + COMMIT:        {rate(peer, seconds)}")
    print(f"   ratio appends/peer: {appended / peer:.2f}   target: >= 2,000 appends/s")

    print("2. inclusion proofs (median of 200 random entries)")
    await _grow_to(engine, 10_000)
    small = await _proof_median_ms(engine)
    print(f"   at 10,000 entries:  {small:.2f} ms")
    started = time.perf_counter()
    await _grow_to(engine, entries)
    grown = time.perf_counter() - started
    large = await _proof_median_ms(engine)
    print(f"   at {entries:,} entries: {large:.2f} ms  (log grown and sequenced in {grown:.0f} s)")
    print(f"   ratio: {large / small:.2f}   target: <= 2.0")

    print(f"3. verify the whole log of {entries:,} entries")
    started = time.perf_counter()
    async with admin.connect() as connection:
        report = await verify_log(
            connection,
            VerifyKeys(public_key=public_key_of(KEY), writers=LOG_KEYS.writers),
        )
    took = time.perf_counter() - started
    print(
        f"   {report.tree_size:,} leaves, {report.heads_checked} heads, "
        f"{len(report.findings)} findings: {took:.1f} s ({rate(report.tree_size, took)})"
    )
    await engine.dispose()
    await admin.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    arguments = parser.parse_args()
    with postgres() as database_url:
        asyncio.run(run(database_url, arguments.entries, arguments.seconds))
