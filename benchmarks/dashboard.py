"""`make bench-dashboard`: the dashboard's recordings pages against the vault API calls they
make, with 100,000 recordings in the organisation (issue 17).

One run starts its own stack in a temporary directory (PostgreSQL, SeaweedFS, the services,
the dashboard and the development OpenID provider), makes one organisation through the API
(its responsable, 40 wearers, 40 cameras, 3 docking stations, 60 procedures), then seeds
100,000 recordings straight into PostgreSQL with COPY, in the vault's own tables: 40 cameras
and their wearers, 3 stations, 80 places, 30 days of times, 2% qualified for a procedure, each
with its `collecte` audit entry (authenticated by the vault's development entry key, so that
the sequencer logs them as it logs real ones), plus consultations and qualifications in the
trail. The indexes and the row counts are the real ones; VACUUM ANALYZE as autovacuum would.

The seeded rows have no sealed object behind them: the pages measured read metadata only,
never an object. They were never sealed by the vault, so a check of the registry against the
store would flag every one of them: the fixity scrub (`temoin scrub`) would find each object
missing (their `checked_at` is set to now so that the vault's own scrub leaves them alone
during the run), and `temoin audit verify --registry` would find the qualified ones held by a
procedure in the log but with no legal hold. Their `collecte` entries do carry the rows'
facts, as the vault writes them. That is fine for a benchmark in its own throwaway directory
(under /tmp, removed at the end); never seed a real stack this way.

The responsable signs in at the dashboard through the provider, as a person does. Then, for
each case, 200 times (--requests) after 20 to warm up (--warmup), alternating so that both
sides meet the same moments of a busy machine: the page, fetched whole through the
dashboard; and the vault calls that page makes (`/v1/me` first, as every page does, then its
data), made one after another with a token of the same claims from the same issuer, over one
kept-alive connection; each call's median is printed too.
Targets: the page's median at most 2x the calls' median; the median page under 150 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import json
import os
import random
import re
import statistics
import time
import uuid
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
from nacl.signing import SigningKey
from rich.console import Console

from benchmarks.common import bench_stack
from services.config import DEV_AUDIT_ENTRY_KEYS
from services.vault.procedures.models import ProcedureRecording
from services.vault.recordings.attested import facts
from services.vault.recordings.models import Recording
from shared.audit import AuditAction, AuditEntry, AuditWriter, canonical_bytes, entries, entry_row
from shared.signatures import public_key_of
from temoin.dev_issuer import DevIssuer
from temoin.stackfile import StackFile

PARIS = ZoneInfo("Europe/Paris")
WEARERS = 40  # agents, one camera each
STATIONS = 3
PROCEDURES = 60
ATTACHED = 0.02  # share of recordings qualified for a procedure
CONSULTED = 0.10  # share consulted (one to three times)
DAYS = 30
STREETS = (
    "avenue Jean Jaurès", "rue de Lallier", "rue Paul Hochart", "avenue Flouquet",
    "rue Jean-Jacques Rousseau", "rue des Tournelles", "boulevard Stalingrad", "rue Bourgeois",
    "avenue Larroumès", "rue de Chevilly", "rue Henri Thirard", "allée des Roses",
    "rue du Docteur Roux", "place de l'Hôtel de Ville", "rue Jules Ferry", "avenue de la Paix",
)  # fmt: skip
PLACES = tuple(
    f"{n} {street}, 94240 L'Haÿ-les-Roses" for street in STREETS for n in (1, 7, 18, 42, 105)
)
SEARCH_PAGE = 25  # services/dashboard/recordings/endpoints.py PAGE_SIZE
TARGET_RATIO = 2.0
TARGET_MEDIAN_MS = 150.0


@dataclass
class Organisation:
    id: uuid.UUID
    responsable_agent: uuid.UUID
    wearers: list[uuid.UUID]
    cameras: list[tuple[uuid.UUID, str]]  # id, serial
    matricules: dict[uuid.UUID, str]
    stations: list[uuid.UUID]
    procedures: list[tuple[uuid.UUID, str, str]]  # id, type, reference


def make_organisation(vault_url: str, issuer: DevIssuer) -> Organisation:
    """Through the API, as a maire does: the directory and the procedures."""
    org = uuid.uuid4()
    maire = issuer.mint("bench-maire", ["maire"], organisation_id=org)
    headers = {"Authorization": f"Bearer {maire}"}
    with httpx.Client(base_url=f"{vault_url}/v1/organisations/{org}", headers=headers) as c:
        c.put(
            f"{vault_url}/v1/organisations/{org}",
            json={"name": "Police municipale de L'Haÿ-les-Roses", "departement": "94",
                  "communes": [{"insee_code": "94038", "name": "L'Haÿ-les-Roses"}]},
        ).raise_for_status()  # fmt: skip
        responsable = c.post(
            "/agents",
            json={"matricule": "R1", "first_name": "Rose", "last_name": "Responsable",
                  "subject": "bench-responsable", "roles": ["responsable"]},
        )  # fmt: skip
        responsable.raise_for_status()
        wearers, cameras, matricules = [], [], {}
        for n in range(WEARERS):
            agent = c.post(
                "/agents",
                json={"matricule": f"A{n:03d}", "first_name": "Agent", "last_name": f"N{n}",
                      "subject": f"bench-agent-{n}"},
            )  # fmt: skip
            agent.raise_for_status()
            agent_id = uuid.UUID(agent.json()["id"])
            serial = f"CAM-{n:03d}"
            camera = c.post("/cameras", json={"serial": serial, "model": "bench"})
            camera.raise_for_status()
            c.post(
                f"/cameras/{camera.json()['id']}/assignments",
                json={"agent_id": str(agent_id), "starts_at": "2020-01-01T00:00:00Z"},
            ).raise_for_status()
            wearers.append(agent_id)
            cameras.append((uuid.UUID(camera.json()["id"]), serial))
            matricules[agent_id] = f"A{n:03d}"
        stations = []
        for n in range(STATIONS):
            key = SigningKey.generate()
            station = c.post(
                "/stations", json={"name": f"Dock {n + 1}", "public_key": public_key_of(key)}
            )
            station.raise_for_status()
            stations.append(uuid.UUID(station.json()["id"]))
        responsable_token = issuer.mint("bench-responsable", ["responsable"], organisation_id=org)
        procedures = []
        for n in range(PROCEDURES):
            kind = ("judiciaire", "administrative", "disciplinaire")[n % 3]
            reference = f"PV-2026-{n:05d}"
            opened = c.post(
                "/procedures",
                json={"type": kind, "reference": reference},
                headers={"Authorization": f"Bearer {responsable_token}"},
            )
            opened.raise_for_status()
            procedures.append((uuid.UUID(opened.json()["id"]), kind, reference))
    return Organisation(
        org, uuid.UUID(responsable.json()["id"]), wearers, cameras, matricules, stations,
        procedures,
    )  # fmt: skip


@dataclass
class Seeded:
    recordings: list[uuid.UUID] = field(default_factory=list)
    attached: list[uuid.UUID] = field(default_factory=list)
    entries: int = 0
    # What a recording's page shows beside it: its wearer and its camera.
    wearer: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    camera: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)


def _columns(table: Any) -> list[str]:
    return [column.name for column in table.columns]


def _rows(table: Any, dicts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    names = _columns(table)
    return [tuple(row.get(name) for name in names) for row in dicts]


async def seed(database_url: str, org: Organisation, count: int, console: Console) -> Seeded:
    """``count`` recordings with their trail, in batches, by COPY."""
    rng = random.Random(17)
    writer = AuditWriter("vault", SigningKey(b64decode(DEV_AUDIT_ENTRY_KEYS["vault"])))
    entry_columns = [c for c in _columns(entries) if c not in ("id", "txid")]
    now = datetime.now(UTC).replace(microsecond=0)
    seeded = Seeded()
    connection = await asyncpg.connect(database_url)
    started = time.perf_counter()
    try:
        batch = 10_000
        for first in range(0, count, batch):
            recordings: list[dict[str, Any]] = []
            links: list[dict[str, Any]] = []
            trail: list[dict[str, Any]] = []
            for _ in range(min(batch, count - first)):
                camera_index = rng.randrange(WEARERS)
                camera_id, serial = org.cameras[camera_index]
                agent_id = org.wearers[camera_index]
                started_at = now - timedelta(seconds=rng.randrange(DAYS * 86400))
                ended_at = started_at + timedelta(seconds=rng.randrange(30, 1800))
                received_at = min(ended_at + timedelta(minutes=rng.randrange(10, 600)), now)
                recording_id = uuid.uuid4()
                place = rng.choice(PLACES)
                row: dict[str, Any] = {
                    "id": recording_id, "organisation_id": org.id, "camera_id": camera_id,
                    "agent_id": agent_id, "station_id": rng.choice(org.stations),
                    "started_at": started_at, "ended_at": ended_at, "clock_offset_ms": 0,
                    "latitude": 48.78 + rng.random() / 100, "longitude": 2.33 + rng.random() / 100,
                    "address": place, "pre_record_s": 30,
                    "intervention_ref": f"INT-{rng.randrange(10**6):06d}" if rng.random() < 0.3
                    else None,
                    "size": rng.randrange(20, 900) << 20,
                    "sha256": hashlib.sha256(recording_id.bytes).hexdigest(),
                    "content_type": "video/mp4", "received_at": received_at,
                    "object_key": f"recordings/{org.id}/{recording_id}.sealed",
                    "object_version": None, "chunk_size": 1 << 20, "sealed_size": 0,
                    "wrapped_key": b"\0" * 72, "kek_id": "bench",
                    "retain_until": started_at + timedelta(days=180),
                    "status": "sealed", "erased_at": None, "object_deleted_at": None,
                    "erasure_refused_at": None, "legal_hold": False,
                    "locked_until": started_at + timedelta(days=180),
                    "divergence_noted_at": None, "checked_at": now,
                    "scrub_claimed_until": None,
                }  # fmt: skip
                row["sealed_size"] = row["size"] + 4096
                recordings.append(row)
                seeded.recordings.append(recording_id)
                seeded.wearer[recording_id] = agent_id
                seeded.camera[recording_id] = camera_id
                recording = Recording(**row)
                trail.append(
                    {"entry": AuditEntry(
                        action=AuditAction.collecte, service="vault",
                        actor_subject=f"station:{row['station_id']}", actor_role="station",
                        organisation_id=org.id, recording_ids=[recording_id],
                        occurred_at=received_at,
                        details={"camera": serial, "agent": org.matricules[agent_id],
                                 **facts(recording)},
                    )}
                )  # fmt: skip
                if rng.random() < CONSULTED:
                    for n in range(rng.randrange(1, 4)):
                        trail.append(
                            {"entry": AuditEntry(
                                action=AuditAction.consultation, service="vault",
                                actor_subject="bench-responsable", actor_role="responsable",
                                organisation_id=org.id, recording_ids=[recording_id],
                                motif="Vérification d'une plainte",
                                occurred_at=min(received_at + timedelta(hours=n + 1), now),
                                details={"consultation": str(uuid.uuid4())},
                            )}
                        )  # fmt: skip
                if rng.random() < ATTACHED:
                    procedure_id, kind, reference = rng.choice(org.procedures)
                    links.append(
                        {"procedure_id": procedure_id, "recording_id": recording_id,
                         "qualification": "Élément de preuve", "attached_by": "bench-responsable",
                         "created_at": min(received_at + timedelta(days=1), now)}
                    )  # fmt: skip
                    seeded.attached.append(recording_id)
                    trail.append(
                        {"entry": AuditEntry(
                            action=AuditAction.modification, service="vault",
                            actor_subject="bench-responsable", actor_role="responsable",
                            organisation_id=org.id, recording_ids=[recording_id],
                            procedure_ref=reference,
                            occurred_at=min(received_at + timedelta(days=1), now),
                            details={"procedure": str(procedure_id), "type": kind,
                                     "event": "attached"},
                        )}
                    )  # fmt: skip
            await connection.copy_records_to_table(
                "recordings", schema_name="vault", columns=_columns(Recording.__table__),
                records=_rows(Recording.__table__, recordings),
            )  # fmt: skip
            await connection.copy_records_to_table(
                "procedure_recordings", schema_name="vault",
                columns=_columns(ProcedureRecording.__table__),
                records=_rows(ProcedureRecording.__table__, links),
            )  # fmt: skip
            trail.sort(key=lambda item: item["entry"].occurred_at)
            records = []
            for item in trail:
                entry_dict = entry_row(item["entry"], None)
                entry_dict["authenticator"] = writer.authenticate(canonical_bytes(entry_dict))
                entry_dict["details"] = json.dumps(entry_dict["details"], ensure_ascii=False)
                records.append(tuple(entry_dict[c] for c in entry_columns))
            await connection.copy_records_to_table(
                "entries", schema_name="audit", columns=entry_columns, records=records
            )
            seeded.entries += len(records)
        took = time.perf_counter() - started
        console.print(
            f"seeded {count:,} recordings, {len(seeded.attached):,} qualified, "
            f"{seeded.entries:,} audit entries in {took:.0f} s"
        )
    finally:
        await connection.close()
    return seeded


async def wait_sequenced(database_url: str, console: Console, timeout_s: float = 900) -> None:
    """Until the vault's sequencer has logged every entry (it runs every second or so): its
    work would otherwise share the machine with the measurements."""
    connection = await asyncpg.connect(database_url)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < timeout_s:
            pending = await connection.fetchval(
                "SELECT (SELECT count(*) FROM audit.entries) - (SELECT count(*) FROM audit.leaves)"
                " - (SELECT count(*) FROM audit.refusals)"
            )
            if pending == 0:
                break
            if pending < 0:
                raise RuntimeError("more leaves than entries: not a fresh database")
            await asyncio.sleep(2)
        else:
            raise RuntimeError(f"{pending} entries still not sequenced after {timeout_s:.0f} s")
        refused = await connection.fetchval("SELECT count(*) FROM audit.refusals")
        if refused:  # the seeded entries are authenticated as the vault's own
            raise RuntimeError(f"the sequencer refused {refused} seeded entries")
        console.print(f"sequenced by the vault in {time.perf_counter() - started:.0f} s")
        for table in ("vault.recordings", "vault.procedure_recordings", "audit.entries",
                      "audit.leaves"):  # fmt: skip
            await connection.execute(f"VACUUM ANALYZE {table}")
    finally:
        await connection.close()


def sign_in(dashboard_url: str, person_key: str) -> httpx.Client:
    """Through the provider's sign-in page, as a person does; the client holds the session."""
    client = httpx.Client(base_url=dashboard_url, follow_redirects=True, timeout=60)
    page = client.get("/connexion")
    page.raise_for_status()
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action, page.text[:500]
    form = {
        html.unescape(name): html.unescape(value)
        for name, value in re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">',
                                      page.text)
    }  # fmt: skip
    form["person"] = person_key
    target = httpx.URL(str(page.url)).join(html.unescape(action.group(1)))
    home = client.post(str(target), data=form)
    home.raise_for_status()
    assert str(home.url).rstrip("/") == dashboard_url, home.url
    return client


Call = tuple[str, str, dict[str, Any]]  # what it is (for the breakdown), path, parameters


@dataclass
class Case:
    name: str
    page: Callable[[int], str]  # the i-th request's page path
    calls: Callable[[int], list[Call]]  # the vault calls it makes


@dataclass
class Figures:
    page_ms: list[float] = field(default_factory=list)
    calls_ms: list[float] = field(default_factory=list)
    each_call_ms: dict[str, list[float]] = field(default_factory=dict)

    @staticmethod
    def p95(values: list[float]) -> float:
        return statistics.quantiles(values, n=20)[18]


def measure(
    case: Case, dashboard: httpx.Client, vault: httpx.Client, requests: int, warmup: int
) -> Figures:
    figures = Figures()
    for i in range(warmup + requests):
        path = case.page(i)
        t0 = time.perf_counter()
        page = dashboard.get(path)
        page_ms = (time.perf_counter() - t0) * 1000
        assert page.status_code == 200 and not page.history, (path, page.status_code, page.url)
        each: dict[str, float] = {}
        t0 = time.perf_counter()
        for label, call, params in case.calls(i):
            t1 = time.perf_counter()
            answer = vault.get(call, params=params)
            each[label] = (time.perf_counter() - t1) * 1000
            assert answer.status_code == 200, (call, answer.text[:300])
        calls_ms = (time.perf_counter() - t0) * 1000
        if i >= warmup:
            figures.page_ms.append(page_ms)
            figures.calls_ms.append(calls_ms)
            for label, ms in each.items():
                figures.each_call_ms.setdefault(label, []).append(ms)
    return figures


def _day(day: date, end: bool = False) -> str:
    """The vault's instant for a day typed in the form, as the dashboard computes it."""
    return datetime.combine(
        day + timedelta(days=1 if end else 0), clock(0), tzinfo=PARIS
    ).isoformat()


def cases(org: Organisation, seeded: Seeded, count: int) -> list[Case]:
    base = f"/v1/organisations/{org.id}"
    me: list[Call] = [("me", "/v1/me", {})]

    def search(**params: Any) -> list[Call]:
        return [*me, ("recordings", f"{base}/recordings", {"limit": SEARCH_PAGE, **params})]

    today = datetime.now(PARIS).date()
    week = (today - timedelta(days=14), today - timedelta(days=8))
    deep = count // SEARCH_PAGE // 2  # the middle of the list
    rng = random.Random(3)
    # A recording's page, for recordings with and without procedures, in turn.
    shown = [*rng.sample(seeded.attached, 25), *rng.sample(seeded.recordings, 25)]
    rng.shuffle(shown)

    def recording_calls(i: int) -> list[Call]:
        recording_id = shown[i % len(shown)]
        return [
            *me,
            ("recording", f"{base}/recordings/{recording_id}", {}),
            ("procedures", f"{base}/procedures", {"limit": 500}),
            ("history", f"{base}/audit/entries",
             {"recording_id": str(recording_id), "limit": 200}),
            # The page also shows the wearer and the camera.
            ("agent", f"{base}/agents/{seeded.wearer[recording_id]}", {}),
            ("camera", f"{base}/cameras/{seeded.camera[recording_id]}", {}),
        ]  # fmt: skip

    return [
        Case(
            "/enregistrements (1re page)", lambda i: "/enregistrements", lambda i: search(offset=0)
        ),
        Case(
            "/enregistrements?lieu=Jaurès",
            lambda i: "/enregistrements?lieu=Jaur%C3%A8s",
            lambda i: search(offset=0, place="Jaurès"),
        ),
        Case(
            "/enregistrements?du=…&au=… (7 jours)",
            lambda i: f"/enregistrements?du={week[0]}&au={week[1]}",
            lambda i: search(
                offset=0, started_from=_day(week[0]), started_until=_day(week[1], True)
            ),
        ),
        Case(
            f"/enregistrements?page={deep}",
            lambda i: f"/enregistrements?page={deep}",
            lambda i: search(offset=(deep - 1) * SEARCH_PAGE),
        ),
        Case(
            "/enregistrements/{id}",
            lambda i: f"/enregistrements/{shown[i % len(shown)]}",
            recording_calls,
        ),
    ]


def main(count: int, requests: int, warmup: int) -> None:
    console = Console(width=100)  # the table's width, also when the output is a file
    with bench_stack(console, "temoin-bench-dashboard-", dashboard=True) as stack:
        stack_file = StackFile.load(stack.root / "var")
        assert stack_file is not None
        database_url = stack_file.vault_environment["DATABASE_URL"]
        issuer = DevIssuer(stack.root / "var" / "dev-issuer", issuer=stack.url("issuer"))
        org = make_organisation(stack.url("vault"), issuer)
        seeded = asyncio.run(seed(database_url, org, count, console))
        asyncio.run(wait_sequenced(database_url, console))
        token = issuer.mint("bench-responsable", ["responsable"], organisation_id=org.id)
        vault = httpx.Client(
            base_url=stack.url("vault"), timeout=60,
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        dashboard = sign_in(stack.url("dashboard"), f"agent:{org.responsable_agent}")
        try:
            results = []
            for case in cases(org, seeded, count):
                results.append((case, measure(case, dashboard, vault, requests, warmup)))
                console.print(f"measured {case.name}")
        finally:
            vault.close()
            dashboard.close()
        report(console, results, count, requests, warmup)


def report(
    console: Console, results: list[tuple[Case, Figures]], count: int, requests: int, warmup: int
) -> None:
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    console.print(
        f"\n{count:,} recordings, {requests} requests per case after {warmup} to warm up, "
        f"load average {load}.\nPage: through the dashboard. API: the vault calls it makes, "
        "one after the other. Times in ms."
    )
    console.print(
        f"  {'page':<38} {'median':>7} {'p95':>6} | {'API median':>10} {'p95':>6} | "
        f"{'ratio':>5}  <= {TARGET_RATIO:g}  < {TARGET_MEDIAN_MS:g} ms"
    )
    for case, figures in results:
        page = statistics.median(figures.page_ms)
        calls = statistics.median(figures.calls_ms)
        ratio = page / calls
        console.print(
            f"  {case.name:<38} {page:7.1f} {Figures.p95(figures.page_ms):6.1f} | "
            f"{calls:10.1f} {Figures.p95(figures.calls_ms):6.1f} | {ratio:5.2f}  "
            f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}  "
            f"{'PASS' if page < TARGET_MEDIAN_MS else 'FAIL':>8}"
        )
        breakdown = ", ".join(
            f"{label} {statistics.median(ms):.1f}" for label, ms in figures.each_call_ms.items()
        )
        console.print(f"    API calls' medians: {breakdown}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recordings", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    arguments = parser.parse_args()
    main(arguments.recordings, arguments.requests, arguments.warmup)
