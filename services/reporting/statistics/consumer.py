"""Advances the statistics from the audit feed (shared/audit.py, `read_feed`), a batch at a
time. Each batch and the checkpoint move together in one transaction, and events at or before
the checkpoint are skipped: after a crash it resumes exactly where it stopped, and feeding it
the whole log again changes nothing."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.reporting.statistics.models import (
    CameraDay,
    Checkpoint,
    DailyCount,
    DelayBucket,
    HabilitationPeriod,
    ProcedureUse,
    RecordingDay,
    RecordingUse,
)
from shared.audit import FeedEvent, read_feed
from shared.db import session_scope
from shared.web import job_failed

CHECKPOINT = "audit-feed"
DELAY_STEP = 1.1
# A clock a century off is not a delay: such clips share the last bucket, whose bound still
# fits the column's integer.
DELAY_MAX_MINUTES = 100 * 366 * 24 * 60
_logger = logging.getLogger("temoin.reporting.consumer")


def delay_bucket(minutes: float) -> int:
    """The bucket of a delay: its lower bound in minutes, on a scale of steps of 10% from a
    minute to a century (under 200 buckets, so a year of days holds a few dozen thousand rows
    at most, whatever the number of clips, and the median is within 10% for any delay)."""
    if minutes < 1:
        return 0
    minutes = min(minutes, DELAY_MAX_MINUTES)
    return max(1, round(DELAY_STEP ** math.floor(math.log(minutes, DELAY_STEP))))


def _day(value: str) -> date:
    return datetime.fromisoformat(value).date()


class Consumer:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def checkpoint(self, *, lock: bool = False) -> int:
        statement = select(Checkpoint.last_seq).where(Checkpoint.name == CHECKPOINT)
        if lock:  # replicas take turns
            statement = statement.with_for_update()
        value = await self.session.scalar(statement)
        if value is None:
            await self.session.execute(
                insert(Checkpoint)
                .values(name=CHECKPOINT, last_seq=-1)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            value = await self.session.scalar(statement)
        return int(value if value is not None else -1)

    async def consume(self, limit: int = 5000) -> int:
        """Apply the next batch of the feed; how many events it held."""
        after = await self.checkpoint(lock=True)
        events = await read_feed(self.session, after_seq=after, limit=limit)
        await self.apply(events, after)
        return len(events)

    async def apply(self, events: Sequence[FeedEvent], after: int | None = None) -> None:
        """Fold events into the statistics (those at or before the checkpoint are skipped)."""
        if after is None:
            after = await self.checkpoint(lock=True)
        events = [e for e in events if e.seq > after]
        if not events:
            return
        counts: Counter[tuple[uuid.UUID, date, str]] = Counter()
        delays: Counter[tuple[uuid.UUID, date, int]] = Counter()
        cameras: set[tuple[uuid.UUID, date, str]] = set()
        days: dict[uuid.UUID, tuple[uuid.UUID, date]] = {}
        extractions: list[FeedEvent] = []
        for event in events:
            org = event.organisation_id
            if org is None or event.outcome != "success":
                continue
            details = event.details
            if event.action == "collecte":
                day = _day(details["started_at"])
                counts[(org, day, "recordings")] += 1
                cameras.add((org, day, str(details["camera"])))
                ended = datetime.fromisoformat(details["ended_at"])
                minutes = (event.occurred_at - ended).total_seconds() / 60
                delays[(org, day, delay_bucket(minutes))] += 1
                for recording_id in event.recording_ids:
                    days[recording_id] = (org, day)
            elif event.action == "consultation":
                counts[(org, event.occurred_at.date(), "consultations")] += 1
            elif event.action == "extraction":
                counts[(org, event.occurred_at.date(), "extractions")] += 1
                extractions.append(event)
            elif event.action == "effacement":
                counts[(org, event.occurred_at.date(), "erasures")] += len(event.recording_ids)
            elif event.action == "habilitation_granted":
                await self.session.execute(
                    insert(HabilitationPeriod)
                    .values(
                        habilitation_id=uuid.UUID(details["habilitation_id"]),
                        organisation_id=org,
                        agent_id=uuid.UUID(details["agent_id"]),
                        granted_at=event.occurred_at,
                        withdrawn_at=None,
                    )
                    .on_conflict_do_nothing(index_elements=["habilitation_id"])
                )
            elif event.action == "habilitation_withdrawn":
                await self.session.execute(
                    update(HabilitationPeriod)
                    .where(
                        HabilitationPeriod.habilitation_id == uuid.UUID(details["habilitation_id"])
                    )
                    .values(withdrawn_at=event.occurred_at)
                )
        await self._add_counts(DailyCount, counts, "metric")
        await self._add_counts(DelayBucket, delays, "minutes")
        if cameras:
            await self.session.execute(
                insert(CameraDay)
                .values([{"organisation_id": o, "day": d, "camera": c} for o, d, c in cameras])
                .on_conflict_do_nothing()
            )
        if days:
            await self.session.execute(
                insert(RecordingDay)
                .values(
                    [
                        {"recording_id": r, "organisation_id": o, "day": d}
                        for r, (o, d) in days.items()
                    ]
                )
                .on_conflict_do_nothing()
            )
        if extractions:
            await self._extractions(extractions)
        await self.session.execute(
            update(Checkpoint)
            .where(Checkpoint.name == CHECKPOINT)
            .values(last_seq=max(e.seq for e in events))
        )

    async def _add_counts(
        self,
        model: type[DailyCount] | type[DelayBucket],
        counts: Mapping[tuple[uuid.UUID, date, Any], int],
        key: str,
    ) -> None:
        if not counts:
            return
        rows = [
            {"organisation_id": o, "day": d, key: k, "count": n} for (o, d, k), n in counts.items()
        ]
        statement = insert(model).values(rows)
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["organisation_id", "day", key],
                set_={"count": model.count + statement.excluded["count"]},
            )
        )

    async def _extractions(self, events: list[FeedEvent]) -> None:
        """Uses count in the period their recordings were made, each recording once per
        procedure type: a daily counter moves only when a use is new."""
        wanted = {r for event in events for r in event.recording_ids}
        made = {
            row.recording_id: row
            for row in await self.session.scalars(
                select(RecordingDay).where(RecordingDay.recording_id.in_(wanted))
            )
        }
        uses: dict[tuple[uuid.UUID, str], dict[str, Any]] = {}
        procedures: dict[tuple[uuid.UUID, date], dict[str, Any]] = {}
        for event in events:
            kind = str(event.details.get("type", ""))
            procedure = event.details.get("procedure")
            for recording_id in event.recording_ids:
                day = made.get(recording_id)
                if day is None:
                    continue  # its collecte predates the log (none in practice)
                uses[(recording_id, kind)] = {
                    "organisation_id": day.organisation_id,
                    "recording_id": recording_id,
                    "type": kind,
                    "day": day.day,
                }
                if procedure is not None:
                    procedures[(uuid.UUID(str(procedure)), day.day)] = {
                        "organisation_id": day.organisation_id,
                        "procedure_id": uuid.UUID(str(procedure)),
                        "day": day.day,
                        "type": kind,
                    }
        if uses:
            new = await self.session.execute(
                insert(RecordingUse)
                .values(list(uses.values()))
                .on_conflict_do_nothing()
                .returning(RecordingUse.organisation_id, RecordingUse.day, RecordingUse.type)
            )
            counts: Counter[tuple[uuid.UUID, date, str]] = Counter(
                (org, day, f"used_{kind}") for org, day, kind in new.all()
            )
            await self._add_counts(DailyCount, counts, "metric")
        if procedures:
            await self.session.execute(
                insert(ProcedureUse).values(list(procedures.values())).on_conflict_do_nothing()
            )


async def consume_all(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Apply batches until the feed is exhausted: how many events. Several reporting replicas
    may run it at once: each batch is applied under the checkpoint's row lock, so replicas take
    turns and each starts where the one before stopped."""
    total = 0
    while True:
        async with session_scope(sessionmaker) as session:
            applied = await Consumer(session).consume()
        if applied == 0:
            return total
        total += applied


async def follow_feed(sessionmaker: async_sessionmaker[AsyncSession], every_s: float = 2.0) -> None:
    """The reporting service's background task."""
    while True:
        try:
            await consume_all(sessionmaker)
        except Exception as exc:  # the loop must survive a database outage
            job_failed(_logger, "consuming the audit feed", exc)
        await asyncio.sleep(every_s)
