"""`make bench-scale`: many docking stations uploading at once, against one process of each
service and against two behind HAProxy, beside the store's own ceiling (issue 19).

Its own servers in a temporary directory (embedded PostgreSQL and SeaweedFS, as the other
benchmarks; never ./var). For K docking stations (8 and 32 by default), each uploading its
clips one after the other, all stations at once, with tus as `temoin dock upload` does
(creation, then one PATCH of the whole clip):

- **1 replica**: one vault, one ingest, one reporting process (`ReplicaStack` with one of
  each: HAProxy is in front too, so that both shapes pay the same hop);
- **raw PUT**: the ceiling, K concurrent S3 clients putting clips of the same sizes straight
  into the same store (multipart, parts of the vault's size, 5 MiB, each sent as it was filled
  with an unsigned payload and its CRC32C, as the vault sends its parts: no hashing, sealing,
  locking or database);
- **2 replicas**: two processes of each service behind HAProxy, round robin per request.

The ceiling is measured between the two, so that the store's slowing as it fills weighs on
both about alike. The three are run twice, each time with servers of their own, on two
layouts of the machine's cores (``Cores``):

- **shared**: every process on every core, the store included: the ceiling then has the
  cores to itself, while in Témoin's rows the store gets what the services leave it, so the
  ratio is the inverse of the path's CPU per GiB over the raw PUT's;
- **store apart**: the store (every SeaweedFS process) on half the cores, everything else
  (services, HAProxy, PostgreSQL, the docks or the raw PUT's clients) on the other half, as
  production's store nodes are machines of their own: the store has the same CPU on every
  side, and the ratio says whether the services keep it busy.

Clip sizes are random between 50 and 200 MiB from a fixed seed; the bytes
are generated as they are sent (a 64 MiB random block, each 1 MiB piece stamped with the clip
and its offset so that every clip is unique), never a whole clip in memory nor on disk; their
SHA-256 is computed beforehand, outside the measurement, as a dock reads its file first.

Per row: aggregate MB/s (bytes of clips with a receipt / time from the first byte to the last
receipt), p50 and p99 seconds from the last byte of a PATCH sent to its receipt (for the raw
PUT: from its last part stored to the object assembled), errors (an
upload with no receipt), lost clips (a receipt whose signature, recording in the registry or
sealed object in the store does not check, all checked at the end), and the CPU seconds per
GiB of each kind of process, their total and that total over the raw PUT's. Targets: 0 errors
and 0 lost (at K = 32, and here at every K); with 2 replicas, aggregate >= 0.8x the raw PUT
ceiling of the same K and layout, judged with the store apart (the shared layout's ratio is
printed beside it: docs/scaling.md, "The store on cores of its own").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import asyncpg
import httpx
import psutil
from minio.datatypes import Part
from nacl.signing import SigningKey
from rich.console import Console
from rich.table import Table

from services.config import ServiceSettings, env_name
from services.ingest.settings import IngestSettings
from services.reporting.settings import ReportingSettings
from services.vault.recordings.models import RecordingStatus
from services.vault.settings import VaultSettings
from shared.clips import ClipMetadata
from shared.receipts import receipt_is_valid
from shared.signatures import public_key_of
from shared.storage import ObjectStore
from temoin.dev_issuer import DevIssuer
from temoin.station import StationKeyFile, upload_token
from tests.fixtures.live import service_env
from tests.fixtures.replicas import PRODUCTION_CHECK, TEST_CHECK, ReplicaStack
from tests.fixtures.servers import Servers, started_servers

MIB = 1 << 20
GIB = 1 << 30
PIECE = MIB  # what one read of a dock's file gives, and what is sent at a time
BLOCK = 64 * MIB
# The vault's part size: the same requests to the store on both sides. Measured on 1 December
# (docs/scaling.md): 16 MiB parts, the ceiling until then, gave 3-22% less throughput.
RAW_PART = VaultSettings.model_fields["part_size"].default
RATIO_TARGET = 0.8
SEED = 19


# --- the clips: sizes from a seed, bytes made as they are sent --------------------------------


@dataclass(frozen=True)
class Clip:
    name: str  # unique in the run; stamped into every piece
    size: int
    sha256: str = ""


class Bytes:
    """Every clip's bytes, from one random block: piece i of a clip is 1 MiB of the block,
    starting at an offset that depends on the clip and on i, its first 32 bytes replaced by
    the clip's name and i (so no two clips, nor two pieces, are alike)."""

    def __init__(self, seed: int) -> None:
        self.block = random.Random(seed).randbytes(BLOCK + PIECE)

    def pieces(self, clip: Clip) -> Iterator[bytes]:
        stamp = hashlib.sha256(clip.name.encode()).digest()[:24]
        start = int.from_bytes(stamp[:4], "big")
        for index, offset in enumerate(range(0, clip.size, PIECE)):
            length = min(PIECE, clip.size - offset)
            at = (start + index * 4099 * 16) % BLOCK
            piece = stamp + index.to_bytes(8, "big") + self.block[at + 32 : at + PIECE]
            yield piece[:length]

    def hashed(self, clip: Clip) -> Clip:
        digest = hashlib.sha256()
        for piece in self.pieces(clip):
            digest.update(piece)
        return Clip(clip.name, clip.size, digest.hexdigest())


def plan(
    label: str, stations: int, per_station: int, sizes: tuple[int, int], rng: random.Random
) -> list[list[Clip]]:
    """Each station's clips, sizes in [min, max] bytes."""
    return [
        [Clip(f"{label}-s{s}-c{c}", rng.randint(*sizes)) for c in range(per_station)]
        for s in range(stations)
    ]


# --- where the processes run ------------------------------------------------------------------


@dataclass(frozen=True)
class Cores:
    """The CPUs the store's processes run on, and those of every other process."""

    name: str
    store: frozenset[int]
    rest: frozenset[int]


SHARED, APART = "shared", "store apart"
LAYOUTS = (SHARED, APART)  # in the order they are run and tabled
CHOICES = {"both": LAYOUTS, "shared": (SHARED,), "store": (APART,)}  # --cores


def layouts(cpus: set[int], which: str) -> list[Cores]:
    """The layouts ``which`` (a key of CHOICES) names, that these CPUs allow: the store apart
    gets the first half of them, and needs two at least."""
    every = frozenset(cpus)
    ordered = sorted(every)
    half = len(ordered) // 2
    found = {SHARED: Cores(SHARED, every, every)}
    if half:
        found[APART] = Cores(APART, frozenset(ordered[:half]), frozenset(ordered[half:]))
    return [found[name] for name in CHOICES[which] if name in found]


def store_processes() -> list[psutil.Process]:
    """The store's processes (SeaweedFS), which started_servers ran as this one's children."""
    return [p for p in psutil.Process().children() if p.name() == "weed"]


def pin(process: psutil.Process, cpus: frozenset[int]) -> None:
    """Every thread of ``process`` on ``cpus``; the threads and processes it starts later
    inherit it (sched_setaffinity(2) applies to one thread)."""
    for thread in process.threads():
        try:
            os.sched_setaffinity(thread.id, cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass


# --- what one measurement gives ---------------------------------------------------------------


@dataclass
class Outcome:
    clip: Clip
    station: int
    last_byte: float = 0.0  # perf_counter when the last piece had been handed to the socket
    done: float = 0.0
    receipt: dict[str, Any] | None = None
    error: str = ""


@dataclass
class Measure:
    label: str
    stations: int
    outcomes: list[Outcome]
    seconds: float
    cpu_s: dict[str, float]
    load: tuple[float, float]  # 1-minute load average before and after
    cores: str = SHARED  # Cores.name
    lost: list[str] = field(default_factory=list)
    peak_rss: dict[str, int] = field(default_factory=dict)  # one replica's, by service

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.receipt is not None and not o.error]

    @property
    def moved(self) -> int:
        return sum(o.clip.size for o in self.ok)

    @property
    def mb_s(self) -> float:
        return self.moved / 1e6 / self.seconds

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]

    def tail(self, q: float) -> float | None:
        """Seconds from the last byte to the receipt, quantile q (nearest rank)."""
        waits = sorted(o.done - o.last_byte for o in self.ok)
        if not waits:
            return None
        return waits[min(len(waits) - 1, max(0, round(q * len(waits)) - 1))]


# --- CPU of every process, by kind ------------------------------------------------------------


def _kind(process: psutil.Process, roots: dict[int, str]) -> str | None:
    try:
        for ancestor in [process, *process.parents()]:
            if ancestor.pid in roots:
                return roots[ancestor.pid]
    except psutil.Error:
        return None
    return None


class CpuMeter:
    """CPU seconds per kind of process (vault, ingest, reporting, haproxy, s3, postgres,
    client) over a measurement, children included (PostgreSQL's backends, weed's parts)."""

    def __init__(self, roots: dict[int, str]) -> None:
        self.roots = roots

    def sample(self) -> dict[int, tuple[str, float]]:
        found: dict[int, tuple[str, float]] = {}
        for process in psutil.process_iter():
            kind = _kind(process, self.roots)
            if kind is None:
                continue
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            found[process.pid] = (kind, times.user + times.system)
        return found

    @staticmethod
    def delta(
        before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
    ) -> dict[str, float]:
        spent: dict[str, float] = {}
        for pid, (kind, seconds) in after.items():
            start = before.get(pid, (kind, 0.0))[1]
            spent[kind] = spent.get(kind, 0.0) + max(0.0, seconds - start)
        return spent


class Sampler:
    """Polls something every 250 ms in a thread of its own while a measurement runs (``with``),
    keeping the largest value of each key in ``peak``."""

    def __init__(self) -> None:
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def _keep(self, key: str, value: int) -> None:
        self.peak[key] = max(self.peak.get(key, 0), value)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class PeakRss(Sampler):
    """The largest resident memory of any one process of each service (a replica, children
    included)."""

    def __init__(self, roots: dict[int, str], kinds: tuple[str, ...] = ("vault", "ingest")):
        super().__init__()
        self.watched = {pid: kind for pid, kind in roots.items() if kind in kinds}

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for pid, kind in self.watched.items():
                try:
                    process = psutil.Process(pid)
                    rss = sum(p.memory_info().rss for p in [process, *process.children(True)])
                except psutil.Error:
                    continue
                self._keep(kind, rss)


class OpenTransactions(Sampler):
    """The most connections each service (by its application_name, all replicas together) had
    inside a transaction at once, from pg_stat_activity: the uploads in flight, when a request
    held its session for the whole upload; now, creations and completions at the same moment
    (docs/architecture.md, "Uploads hold no connection while bytes stream")."""

    QUERY = (
        "SELECT application_name, count(*) FROM pg_stat_activity WHERE application_name"
        " LIKE 'temoin-%' AND state IN ('active', 'idle in transaction') GROUP BY 1"
    )

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database_url = database_url

    def _run(self) -> None:
        asyncio.run(self._poll())

    async def _poll(self) -> None:
        connection = await asyncpg.connect(self.database_url)
        try:
            while not self._stop.is_set():
                for name, count in await connection.fetch(self.QUERY):
                    self._keep(name.removeprefix("temoin-"), count)
                await asyncio.sleep(0.25)
        finally:
            await connection.close()


# --- the docks: register them, then upload -----------------------------------------------------


@dataclass(frozen=True)
class Dock:
    station: StationKeyFile
    camera: str


def register(vault_url: str, issuer: DevIssuer, label: str, insee: str, count: int) -> list[Dock]:
    """An organisation (serving commune ``insee``, which no other one may) with ``count``
    docking stations and as many cameras (one per dock), all worn by one agent, through the
    vault's API (as benchmarks/ingest.py does)."""
    org = uuid.uuid4()
    token = issuer.mint(f"bench-maire-{label}", ["maire"], organisation_id=org)
    headers = {"Authorization": f"Bearer {token}"}
    docks = []
    with httpx.Client(
        base_url=f"{vault_url}/v1/organisations/{org}", headers=headers, timeout=60
    ) as c:
        c.put(
            f"{vault_url}/v1/organisations/{org}",
            json={"name": f"Bench {label}", "departement": "94",
                  "communes": [{"insee_code": insee, "name": "Bench"}]},
        ).raise_for_status()  # fmt: skip
        agent = c.post(
            "/agents",
            json={"matricule": "B1", "first_name": "B", "last_name": "B",
                  "subject": f"bench-responsable-{label}", "roles": ["responsable"]},
        )  # fmt: skip
        agent.raise_for_status()
        for n in range(count):
            serial = f"SCALE-{label}-{n}".upper()
            camera = c.post("/cameras", json={"serial": serial, "model": "bench"})
            camera.raise_for_status()
            c.post(
                f"/cameras/{camera.json()['id']}/assignments",
                json={"agent_id": agent.json()["id"], "starts_at": "2020-01-01T00:00:00Z"},
            ).raise_for_status()
            key = SigningKey.generate()
            station = c.post(
                "/stations", json={"name": f"dock {n}", "public_key": public_key_of(key)}
            )
            station.raise_for_status()
            docks.append(Dock(StationKeyFile(uuid.UUID(station.json()["id"]), org, key), serial))
    return docks


def _metadata(camera: str, clip: Clip, index: int) -> str:
    """tus's Upload-Metadata: the clip's 30 minutes, each clip of a camera its own."""
    ended = datetime.now(UTC) - timedelta(minutes=1 + 31 * index)
    metadata = ClipMetadata.model_validate(
        {"camera_serial": camera, "started_at": ended - timedelta(minutes=30), "ended_at": ended,
         "clock_offset_ms": 0, "place": {"address": "benchmark"}, "size": clip.size,
         "sha256": clip.sha256}
    )  # fmt: skip
    encoded = base64.b64encode(metadata.model_dump_json().encode()).decode()
    return f"metadata {encoded},filetype {base64.b64encode(b'video/mp4').decode()}"


def _sent(pieces: Iterator[bytes], outcome: Outcome) -> Iterator[bytes]:
    """The pieces, noting when the last one was taken: httpx asks for the next piece only
    once it has written the one before to the socket."""
    yield from pieces
    outcome.last_byte = time.perf_counter()


def upload(ingest_url: str, dock: Dock, clips: list[Clip], data: Bytes) -> list[Outcome]:
    """One dock's clips, one after the other, with tus (as temoin dock upload: creation, then
    one PATCH of the whole clip). No retry: a failure is counted as an error."""
    outcomes = []
    with httpx.Client(base_url=ingest_url, timeout=httpx.Timeout(300.0)) as client:
        for index, clip in enumerate(clips):
            outcome = Outcome(clip, 0)
            outcomes.append(outcome)
            try:
                headers = {
                    "Authorization": f"Bearer {upload_token(client, dock.station)}",
                    "Tus-Resumable": "1.0.0",
                }
                created = client.post(
                    "/v1/uploads",
                    headers={**headers, "Upload-Length": str(clip.size),
                             "Upload-Metadata": _metadata(dock.camera, clip, index)},
                )  # fmt: skip
                if created.status_code != 201:
                    raise RuntimeError(f"creation {created.status_code} {created.text[:200]}")
                response = client.patch(
                    created.headers["Location"],
                    content=_sent(data.pieces(clip), outcome),
                    headers={**headers, "Upload-Offset": "0", "Content-Length": str(clip.size),
                             "Content-Type": "application/offset+octet-stream"},
                )  # fmt: skip
                outcome.done = time.perf_counter()
                receipt = response.headers.get("Temoin-Receipt")
                if response.status_code != 204 or receipt is None:
                    raise RuntimeError(f"PATCH {response.status_code} {response.text[:200]}")
                outcome.receipt = json.loads(base64.urlsafe_b64decode(receipt))
            except Exception as exc:  # noqa: BLE001 - every failure is a figure here
                outcome.error = f"{type(exc).__name__}: {exc}"[:300]
    return outcomes


def raw_put(store: ObjectStore, clips: list[Clip], data: Bytes) -> list[Outcome]:
    """One S3 client's clips, one after the other: multipart, RAW_PART parts, each sent with
    its CRC32C and an unsigned payload (as the vault sends its parts), nothing else."""
    client, outcomes = store.client, []
    for clip in clips:
        outcome = Outcome(clip, 0)
        outcomes.append(outcome)
        key = f"raw/{clip.name}"
        try:
            upload_id = client._create_multipart_upload(store.bucket, key, {})
            parts: list[Part] = []
            buffer = bytearray()
            pieces = _sent(data.pieces(clip), outcome)
            for piece in pieces:
                buffer += piece
                if len(buffer) >= RAW_PART:
                    parts.append(_part(store, key, upload_id, len(parts) + 1, buffer))
                    buffer = bytearray()
            if buffer:
                parts.append(_part(store, key, upload_id, len(parts) + 1, buffer))
            outcome.last_byte = time.perf_counter()
            client._complete_multipart_upload(store.bucket, key, upload_id, parts)
            outcome.done = time.perf_counter()
            outcome.receipt = {"key": key}
        except Exception as exc:  # noqa: BLE001
            outcome.error = f"{type(exc).__name__}: {exc}"[:300]
    return outcomes


def _part(store: ObjectStore, key: str, upload_id: str, number: int, data: bytearray) -> Part:
    # Sent as the vault sends its parts, as it is (no copy).
    return Part(number, store.send_part(key, upload_id, number, data))


def concurrently(work: Sequence[Callable[[], list[Outcome]]]) -> tuple[list[Outcome], float]:
    """Every station's work at once (a thread each); all outcomes, and the seconds from the
    start to the last one done."""
    started = time.perf_counter()
    with ThreadPoolExecutor(len(work)) as pool:
        results = list(pool.map(lambda job: job(), work))
    outcomes = []
    for station, found in enumerate(results):
        for outcome in found:
            outcome.station = station
            outcomes.append(outcome)
    ends = [o.done for o in outcomes if o.done] or [time.perf_counter()]
    return outcomes, max(ends) - started


# --- the end check: every receipt against the registry and the store --------------------------


async def lost_clips(
    database_url: str, store: ObjectStore, public_key: str, outcomes: list[Outcome]
) -> list[str]:
    """The clips given a receipt that is not true: a signature that does not verify, or no
    sealed recording of that size and SHA-256 in the registry, or its sealed object (that
    version) absent or of another size in the store."""
    lost = []
    connection = await asyncpg.connect(database_url)
    try:
        for outcome in outcomes:
            receipt = outcome.receipt
            if receipt is None:
                continue
            clip = outcome.clip
            if not receipt_is_valid(receipt, public_key) or receipt["sha256"] != clip.sha256:
                lost.append(f"{clip.name}: the receipt does not verify")
                continue
            row = await connection.fetchrow(
                "SELECT size, sha256, object_key, object_version, sealed_size, status"
                " FROM vault.recordings WHERE id = $1",
                uuid.UUID(receipt["recording_id"]),
            )
            if row is None or (row["sha256"], row["size"], row["status"]) != (
                clip.sha256,
                clip.size,
                RecordingStatus.sealed.value,
            ):
                lost.append(f"{clip.name}: not in the registry as received and sealed")
                continue
            try:
                found = store.client.stat_object(
                    store.bucket, row["object_key"], version_id=row["object_version"]
                )
            except Exception as exc:  # noqa: BLE001
                lost.append(f"{clip.name}: object missing ({type(exc).__name__})")
                continue
            if found.size != row["sealed_size"]:
                lost.append(f"{clip.name}: object of {found.size} bytes, not {row['sealed_size']}")
    finally:
        await connection.close()
    return lost


# --- the run -----------------------------------------------------------------------------------


SETTINGS: dict[str, type[ServiceSettings]] = {
    "vault": VaultSettings, "ingest": IngestSettings, "reporting": ReportingSettings,
}  # fmt: skip
WHERE = ("_PORT", "_HOST", "_VAULT_URL")  # where each process listens and finds the vault


def as_deployed() -> dict[str, dict[str, str]]:
    """The settings the test processes shorten (tests/fixtures/live.py: service_env: the
    upload pass every second, the reporting feed every 300 ms...), back at their defaults, so
    that the background work measured is what a deployment does."""
    found: dict[str, dict[str, str]] = {}
    for service, settings in SETTINGS.items():
        fields = {env_name(settings, name): info for name, info in settings.model_fields.items()}
        found[service] = {
            variable: str(fields[variable].default)
            for variable in service_env(service, {}, 0)
            if variable in fields and not variable.endswith(WHERE)
            and isinstance(fields[variable].default, int | float | str)
        }  # fmt: skip
    return found


def _postmaster(data_dir: Path) -> int:
    pid_file = data_dir / "postmaster.pid"
    for candidate in (pid_file, *data_dir.glob("*/postmaster.pid")):
        if candidate.exists():
            return int(candidate.read_text().split()[0])
    raise RuntimeError(f"no postmaster.pid under {data_dir}")


@dataclass
class Run:
    root: Path
    servers: Servers
    data: Bytes
    console: Console
    stations: list[int]
    per_station: dict[int, int]
    sizes: tuple[int, int]
    check: str  # HAProxy's health check of the replicas
    cores: Cores
    measures: list[Measure] = field(default_factory=list)

    def place(self) -> None:
        """The store's processes on their cores (the others inherited this process's)."""
        for process in store_processes():
            pin(process, self.cores.store)

    def clips(self, label: str, k: int) -> list[list[Clip]]:
        # The same sizes for every side of one K (a generator seeded by K), other bytes.
        rng = random.Random(SEED * 1000 + k)
        planned = plan(label, k, self.per_station[k], self.sizes, rng)
        flat = [clip for station in planned for clip in station]
        with ThreadPoolExecutor(2) as pool:  # hashlib lets go of the GIL: both cores
            hashed = iter(list(pool.map(self.data.hashed, flat)))
        return [[next(hashed) for _ in station] for station in planned]

    def meter(self, roots: dict[int, str]) -> CpuMeter:
        return CpuMeter(
            {**roots, **{p.pid: "s3" for p in store_processes()},
             _postmaster(self.root / "postgres"): "postgres", os.getpid(): "client"}
        )  # fmt: skip

    def measure(
        self,
        label: str,
        k: int,
        meter: CpuMeter,
        work: Callable[[int, list[Clip]], list[Outcome]],
        check: Callable[[list[Outcome]], list[str]],
    ) -> Measure:
        clips = self.clips(label, k)
        total = sum(c.size for station in clips for c in station)
        self.console.print(
            f"  {label}, K = {k}, cores {self.cores.name}: {sum(map(len, clips))} clips,"
            f" {total / GIB:.2f} GiB…"
        )
        os.sync()  # the previous measurement's writes are not this one's
        load_before = os.getloadavg()[0]
        before = meter.sample()
        with (
            PeakRss(meter.roots) as memory,
            OpenTransactions(self.servers.database_url) as transactions,
        ):
            outcomes, seconds = concurrently(
                [functools.partial(work, s, c) for s, c in enumerate(clips)]
            )
        spent = CpuMeter.delta(before, meter.sample())
        measure = Measure(
            label, k, outcomes, seconds, spent, (load_before, os.getloadavg()[0]), self.cores.name
        )
        measure.peak_rss = memory.peak
        measure.lost = check(outcomes)
        for outcome in measure.errors[:3]:
            self.console.print(f"    error: {outcome.clip.name}: {outcome.error}")
        if transactions.peak:
            held = ", ".join(f"{name} {n}" for name, n in sorted(transactions.peak.items()))
            self.console.print(
                f"    PostgreSQL connections in a transaction at most (all replicas): {held}"
            )
        for line in measure.lost[:3]:
            self.console.print(f"    lost: {line}")
        self.console.print(
            f"    {measure.mb_s:.1f} MB/s, {len(measure.ok)}/{len(outcomes)} receipts,"
            f" {len(measure.errors)} errors, {len(measure.lost)} lost, {seconds:.1f} s"
        )
        self.measures.append(measure)
        return measure

    def services(self, replicas: int) -> None:
        label = f"{replicas} replica" + ("s" if replicas > 1 else "")
        self.console.print(f"[bold]{label}[/] of each service behind HAProxy: starting…")
        directory = self.root / f"replicas-{replicas}"
        with ReplicaStack.started(
            self.servers.env(), directory, replicas, check=self.check, overrides=as_deployed()
        ) as stack:
            roots = {p.process.pid: p.name for p in stack.processes() if p.process is not None}
            if stack.haproxy is not None:
                roots[stack.haproxy.pid] = "haproxy"
            meter = self.meter(roots)
            ingest = stack.url("ingest")
            docks = register(
                stack.url("vault"),
                self.servers.issuer,
                f"r{replicas}",
                f"9400{replicas}",
                max(self.stations),
            )
            public_key = str(httpx.get(f"{ingest}/v1/receipts/public-key").json()["public_key"])
            store = ObjectStore(self.servers.storage)

            def check(outcomes: list[Outcome]) -> list[str]:
                return asyncio.run(
                    lost_clips(self.servers.database_url, store, public_key, outcomes)
                )

            for k in self.stations:
                seen = len(stack.served())
                self.measure(
                    label, k, meter,
                    lambda s, clips: upload(ingest, docks[s], clips, self.data), check,
                )  # fmt: skip
                failed = [s for s in stack.served()[seen:] if s.status >= 500]
                if failed:
                    nobody = sum(s.server == "<NOSRV>" for s in failed)
                    self.console.print(
                        f"    HAProxy answered {len(failed)} requests >= 500, {nobody} of them"
                        " with no replica up (its checks had taken them out)"
                    )

    def ceiling(self) -> None:
        self.console.print("[bold]raw PUT[/], the store's ceiling…")
        meter = self.meter({})

        def check(outcomes: list[Outcome]) -> list[str]:
            store = ObjectStore(self.servers.storage)
            lost = []
            for o in outcomes:
                if o.receipt is not None:
                    size = store.client.stat_object(store.bucket, o.receipt["key"]).size
                    if size != o.clip.size:
                        lost.append(f"{o.clip.name}: {size} bytes stored")
            return lost

        for k in self.stations:
            # One client (its own connections) per station, as K separate uploaders.
            stores = [ObjectStore(self.servers.storage) for _ in range(k)]

            def put(
                station: int, clips: list[Clip], stores: list[ObjectStore] = stores
            ) -> list[Outcome]:
                return raw_put(stores[station], clips, self.data)

            self.measure("raw PUT", k, meter, put, check)


# --- the table ---------------------------------------------------------------------------------

KINDS = ("vault", "ingest", "haproxy", "s3", "postgres", "client")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _order(m: Measure) -> tuple[int, int, int]:
    return LAYOUTS.index(m.cores), m.stations, ("raw PUT", "1 replica", "2 replicas").index(m.label)


def _raw(
    measures: list[Measure], value: Callable[[Measure], float]
) -> dict[tuple[str, int], float]:
    """The raw PUT's ``value`` for each layout and K."""
    return {(m.cores, m.stations): value(m) for m in measures if m.label == "raw PUT"}


def table(measures: list[Measure]) -> tuple[Table, bool]:
    """One row per measurement, the ceiling of the same layout and K beside it; PASS/FAIL per
    row. The ratio target is judged with the store apart, where the store has the same CPU
    on every side; with all cores shared it is printed, and follows the CPU table."""
    ceilings = _raw(measures, lambda m: m.mb_s)
    out = Table(title="bench-scale", show_lines=False)
    for column in ("cores", "K", "side", "clips", "GiB", "MB/s", "ceiling", "x ceiling",
                   "p50 s", "p99 s", "errors", "lost", "load 1 min", "target",
                   "verdict"):  # fmt: skip
        out.add_column(column, justify="left" if column in ("side", "target") else "right")
    everything = True
    for m in sorted(measures, key=_order):
        ceiling = ceilings.get((m.cores, m.stations))
        ratio = m.mb_s / ceiling if ceiling else None
        if m.label == "raw PUT":
            target, passed = "(ceiling)", not m.errors and not m.lost
        else:
            target = "0 errors, 0 lost"
            passed = not m.errors and not m.lost
            if m.label.startswith("2") and m.cores == APART:
                target += f", >= {RATIO_TARGET}x"
                passed = passed and ratio is not None and ratio >= RATIO_TARGET
        everything = everything and passed
        out.add_row(
            m.cores, str(m.stations), m.label, str(len(m.outcomes)), f"{m.moved / GIB:.2f}",
            f"{m.mb_s:.1f}", f"{ceiling:.1f}" if ceiling else "-",
            f"{ratio:.2f}" if ratio is not None and m.label != "raw PUT" else "",
            _seconds(m.tail(0.5)), _seconds(m.tail(0.99)), str(len(m.errors)),
            str(len(m.lost)), f"{m.load[0]:.1f} -> {m.load[1]:.1f}", target,
            "PASS" if passed else "[red]FAIL[/]",
        )  # fmt: skip
    return out, everything


def cpu_table(measures: list[Measure]) -> Table:
    """CPU seconds per GiB moved, per kind of process: what the capacity model divides by.
    ``total`` is every measured process (reporting's too), and ``x raw PUT`` that total over
    the raw PUT's of the same K: where CPU is the limit (two cores shared by everything, as
    here), the ratio to the ceiling cannot be above its inverse."""
    out = Table(
        title="CPU seconds per GiB received (all processes of a kind together);"
        " peak RSS of one replica"
    )
    out.add_column("cores")
    out.add_column("K")
    out.add_column("side")
    for kind in (*KINDS, "total", "x raw PUT"):
        out.add_column(kind, justify="right")
    out.add_column("vault MiB", justify="right")
    out.add_column("ingest MiB", justify="right")
    raw = _raw(measures, _cpu_per_gib)
    for m in sorted(measures, key=_order):
        gib = m.moved / GIB or 1
        total = _cpu_per_gib(m)
        of_raw = raw.get((m.cores, m.stations))
        ratio = total / of_raw if of_raw and m.label != "raw PUT" else None
        out.add_row(
            m.cores, str(m.stations), m.label,
            *(f"{m.cpu_s[k] / gib:.2f}" if k in m.cpu_s else "-" for k in KINDS),
            f"{total:.2f}", "" if ratio is None else f"{ratio:.2f}",
            *(f"{m.peak_rss[k] / MIB:.0f}" if m.peak_rss.get(k) else "-"
              for k in ("vault", "ingest")),
        )  # fmt: skip
    return out


def _cpu_per_gib(m: Measure) -> float:
    return sum(m.cpu_s.values()) / (m.moved / GIB or 1)


def _layout(cores: Cores) -> str:
    if cores.store == cores.rest:
        return f"{cores.name} (every process on CPUs {sorted(cores.store)})"
    return (
        f"{cores.name} (the store on CPUs {sorted(cores.store)}, the rest on {sorted(cores.rest)})"
    )


def main(
    stations: list[int],
    per_station: int | None,
    sizes_mib: tuple[int, int],
    budget_gib: float,
    check: str,
    cores: list[Cores],
    quick: bool = False,
) -> bool:
    # Long lines stay whole in a log, and the table keeps its columns when piped.
    console = Console(soft_wrap=True, width=180)
    sizes = (sizes_mib[0] * MIB, sizes_mib[1] * MIB)
    mean = sum(sizes) / 2
    # Clips per station: about budget_gib per measurement, at least one clip per station.
    counts = {k: per_station or max(1, round(budget_gib * GIB / (k * mean))) for k in stations}
    # Three sides per K; each layout's store is removed before the next one starts.
    planned = sum(3 * k * counts[k] * mean for k in stations)
    root = Path(tempfile.mkdtemp(prefix="temoin-bench-scale-"))
    free = shutil.disk_usage(root).free
    console.print(
        f"Clips of {sizes_mib[0]}-{sizes_mib[1]} MiB (seed {SEED});"
        f" clips per station: {', '.join(f'K={k}: {counts[k]}' for k in stations)};"
        f" about {planned / GIB:.1f} GiB written per layout of the cores (the store keeps it"
        " until the layout's end),"
        f" {free / GIB:.0f} GiB free under {root.parent}."
        f" {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start."
        f" HAProxy checks each replica's /readyz with: {check}."
        f" Cores: {'; '.join(_layout(c) for c in cores)}."
    )
    if planned * 1.3 > free:
        shutil.rmtree(root, ignore_errors=True)
        raise SystemExit("not enough free disk for this run: fewer stations, clips or bytes")
    started = time.monotonic()
    measures: list[Measure] = []
    data = Bytes(SEED)
    everywhere = frozenset(os.sched_getaffinity(0))
    try:
        for layout in cores:
            console.print(f"[bold]Cores {_layout(layout)}[/]: PostgreSQL and SeaweedFS starting…")
            # Everything started from here on (PostgreSQL, the store, the services, HAProxy,
            # the docks' threads) inherits this process's CPUs; the store then moves to its own.
            pin(psutil.Process(), layout.rest)
            directory = root / layout.name.replace(" ", "-")
            with started_servers(directory) as running:
                run = Run(directory, running, data, console, stations, counts, sizes, check, layout)
                run.place()
                run.services(1)
                run.ceiling()
                run.services(2)
            measures += run.measures
            shutil.rmtree(directory, ignore_errors=True)  # the next layout's disk
    finally:
        pin(psutil.Process(), everywhere)
        shutil.rmtree(root, ignore_errors=True)
    summary, passed = table(measures)
    console.print(summary)
    console.print(cpu_table(measures))
    console.print(
        f"{len(measures)} measurements in {time.monotonic() - started:.0f} s;"
        f" load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        " (other work on the machine shares them)."
    )
    if not any(m.cores == APART for m in measures):
        console.print("The ratio target is judged with the store apart (--cores store): not run")
    if quick:  # a smoke run: its clips are too small for throughput to mean anything
        passed = not any(m.errors or m.lost for m in measures)
        console.print("--quick: only errors and lost clips count, not the ratio to the ceiling")
    console.print("PASS" if passed else "[red]FAIL[/]: see the rows above")
    return passed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--stations", default="8,32", help="comma-separated numbers of docking stations"
    )
    parser.add_argument("--clips-per-station", type=int, default=None)
    parser.add_argument("--min-mib", type=int, default=50)
    parser.add_argument("--max-mib", type=int, default=200)
    parser.add_argument(
        "--budget-gib", type=float, default=2.0,
        help="about this much per measurement (at least one clip per station)",
    )  # fmt: skip
    parser.add_argument(
        "--haproxy-check", choices=("production", "test"), default="production",
        help="HAProxy's check of the replicas: as deploy/'s readiness probes (5 s to answer,"
        " 3 failures), or the tests' (300 ms, 1 failure), which load takes for a dead replica",
    )  # fmt: skip
    parser.add_argument(
        "--cores", choices=CHOICES, default="both",
        help="the layouts measured: every process on every core, the store on cores of its"
        " own (the ratio's verdict), or both one after the other",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: K = 2 and 4, clips of 2-8 MiB"
    )
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.stations, arguments.min_mib, arguments.max_mib = "2,4", 2, 8
        arguments.clips_per_station = arguments.clips_per_station or 1
    chosen = layouts(os.sched_getaffinity(0), arguments.cores)
    if not chosen:
        raise SystemExit("one CPU only: the store cannot have cores of its own (--cores shared)")
    passed = main(
        [int(k) for k in arguments.stations.split(",")],
        arguments.clips_per_station,
        (arguments.min_mib, arguments.max_mib),
        arguments.budget_gib,
        PRODUCTION_CHECK if arguments.haproxy_check == "production" else TEST_CHECK,
        chosen,
        arguments.quick,
    )
    raise SystemExit(0 if passed else 1)
