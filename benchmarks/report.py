"""`make bench-report`: report time against the size of the registry.

Synthetic events (about five per recording: collecte, two consultations, an extraction for a
procedure, an erasure) are folded into the statistics by the reporting consumer itself, for
100k recordings and then for 1M, in one organisation over one year with 40 cameras; at each
size the yearly report is computed several times and its median time printed.
Target: ten times the data takes at most 1.5 times as long.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta

from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from benchmarks.common import postgres, rate
from services.reporting.statistics.consumer import Consumer
from services.reporting.statistics.report import OrganisationInfo, build_report
from shared.audit import FeedEvent
from shared.db import create_engine, create_sessionmaker, session_scope

YEAR = 2025
CAMERAS = 40
BATCH = 5000
REPORT_RUNS = 7


class Generator:
    """Events for recordings of one organisation, spread over a year, in log order."""

    def __init__(self, organisation_id: uuid.UUID) -> None:
        self.org = organisation_id
        self.seq = -1
        self.rng = random.Random(7)
        self.procedures = [(uuid.uuid4(), kind) for kind in ("judiciaire", "administrative")
                           for _ in range(50)]  # fmt: skip

    def _event(
        self, action: str, when: datetime, recording: uuid.UUID, **details: object
    ) -> FeedEvent:
        self.seq += 1
        return FeedEvent(
            seq=self.seq, entry_id=uuid.uuid4(), occurred_at=when, action=action,
            outcome="success", organisation_id=self.org, actor_subject="bench",
            actor_role="habilite", recording_ids=[recording], procedure_ref=None,
            details=dict(details),
        )  # fmt: skip

    def recording(self) -> list[FeedEvent]:
        started = datetime(YEAR, 1, 1, tzinfo=UTC) + timedelta(
            seconds=self.rng.randrange(365 * 86400 - 3600)
        )
        ended = started + timedelta(minutes=self.rng.randrange(1, 20))
        received = ended + timedelta(minutes=self.rng.randrange(5, 600))
        recording = uuid.uuid4()
        procedure, kind = self.rng.choice(self.procedures)
        return [
            self._event("collecte", received, recording,
                        camera=f"CAM-{self.rng.randrange(CAMERAS)}",
                        started_at=started.isoformat(), ended_at=ended.isoformat()),
            self._event("consultation", received + timedelta(hours=1), recording),
            self._event("consultation", received + timedelta(hours=2), recording),
            self._event("extraction", received + timedelta(hours=3), recording,
                        procedure=str(procedure), type=kind),
            self._event("effacement", ended + timedelta(days=30), recording),
        ]  # fmt: skip


async def fold(
    sessionmaker: async_sessionmaker[AsyncSession], generator: Generator, recordings: int
) -> float:
    """Fold the events of ``recordings`` more recordings; seconds taken."""
    started = time.perf_counter()
    pending: list[FeedEvent] = []
    for _ in range(recordings):
        pending += generator.recording()
        if len(pending) >= BATCH:
            async with session_scope(sessionmaker) as session:
                await Consumer(session).apply(pending)
            pending = []
    if pending:
        async with session_scope(sessionmaker) as session:
            await Consumer(session).apply(pending)
    return time.perf_counter() - started


async def report_time(
    sessionmaker: async_sessionmaker[AsyncSession], org: OrganisationInfo
) -> tuple[float, int]:
    times = []
    recordings = 0
    for _ in range(REPORT_RUNS):
        async with session_scope(sessionmaker) as session:
            started = time.perf_counter()
            report = await build_report(session, org, date(YEAR, 1, 1), date(YEAR, 12, 31))
            times.append(time.perf_counter() - started)
            recordings = report.recordings
    return statistics.median(times), recordings


async def measure(url: str, small: int, large: int) -> None:
    console = Console()
    engine = create_engine(url, application_name="temoin-bench-report")
    sessionmaker = create_sessionmaker(engine)
    org = OrganisationInfo(id=uuid.uuid4(), name="Bench", departement="94")
    generator = Generator(org.id)
    try:
        took = await fold(sessionmaker, generator, small)
        console.print(f"folded {small * 5:,} events in {took:.0f} s ({rate(small * 5, took)})")
        small_time, counted = await report_time(sessionmaker, org)
        assert counted == small, counted
        took = await fold(sessionmaker, generator, large - small)
        console.print(
            f"folded {(large - small) * 5:,} more events in {took:.0f} s "
            f"({rate((large - small) * 5, took)})"
        )
        large_time, counted = await report_time(sessionmaker, org)
        assert counted == large, counted
    finally:
        await engine.dispose()
    console.print(f"\nyearly report, median of {REPORT_RUNS}:")
    console.print(f"  {small:>9,} recordings: {small_time * 1000:7.1f} ms")
    console.print(f"  {large:>9,} recordings: {large_time * 1000:7.1f} ms")
    console.print(f"  ratio {large_time / small_time:.2f} for {large / small:.0f}x the data"
                  "   target: <= 1.5")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    arguments = parser.parse_args()
    with postgres() as database_url:  # migrated before the event loop starts
        asyncio.run(measure(database_url, arguments.small, arguments.large))
