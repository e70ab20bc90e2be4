"""`make bench-ingest`: the write path's speed and memory, on this machine's real servers.

In one run, for the same 1 GiB file, five rounds of: (a) a direct S3 multipart PUT with the
minio SDK, the peer; (b) an upload through ingest with tus (creation, then one PATCH of the
whole file, as `temoin dock upload` does); (c) an upload with the single POST. (b) and (c)
are hashed, checked, sealed, locked, registered and receipted, each round from other cameras
(the same clip from the same camera would only get its receipt again). Printed: each side's
median MB/s, the ratios b/a and c/a, the peak RSS of the ingest and vault processes, and the
CPU seconds of every process (S3 and the client too) in the last round. Then a 4 GiB clip
through both protocols, for the peak RSS.
Targets: b/a and c/a >= 0.8; peak RSS <= 150 MB per service whatever the clip size.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
from nacl.signing import SigningKey
from rich.console import Console

from benchmarks.common import bench_stack
from shared.clips import METADATA_HEADER, ClipMetadata
from shared.signatures import public_key_of
from shared.storage import ObjectStore
from temoin.dev_issuer import DevIssuer
from temoin.stack import BUCKET
from temoin.station import StationKeyFile, upload_token

MIB = 1 << 20
PART_SIZE = 16 * MIB


def make_file(path: Path, size: int) -> str:
    """A file of random-looking bytes (a 64 MiB random block repeated), and its SHA-256."""
    block = os.urandom(64 * MIB)
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        written = 0
        while written < size:
            piece = block[: size - written]
            handle.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


class PeakRss:
    """Polls the processes' resident memory while a measurement runs."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.peak = dict.fromkeys(processes, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            for name, process in self.processes.items():
                self.peak[name] = max(self.peak[name], process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._cpu_start = {n: sum(p.cpu_times()[:2]) for n, p in self.processes.items()}
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_s = {
            n: sum(p.cpu_times()[:2]) - self._cpu_start[n] for n, p in self.processes.items()
        }

    def report(self) -> str:
        return ", ".join(
            f"{n} {self.peak[n] / MIB:.0f} MiB RSS / {self.cpu_s[n]:.1f} s CPU"
            for n in self.processes
        )


def direct_put(store: ObjectStore, clip: Path, key: str) -> float:
    """Seconds for a plain multipart PUT of the file (no retention, no sealing)."""
    started = time.perf_counter()
    with clip.open("rb") as handle:
        store.client.put_object(
            BUCKET, key, handle, length=-1, part_size=PART_SIZE, num_parallel_uploads=2
        )
    return time.perf_counter() - started


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(MIB):
            yield block


ROUNDS = 5
CAMERAS = tuple(f"BENCH-CAM-{n}" for n in range(1, 2 * ROUNDS + 1))


def setup_organisation(vault_url: str, issuer: DevIssuer) -> StationKeyFile:
    org = uuid.uuid4()
    token = issuer.mint("bench-maire", ["maire"], organisation_id=org)
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{vault_url}/v1/organisations/{org}", headers=headers) as c:
        c.put(
            f"{vault_url}/v1/organisations/{org}",
            json={
                "name": "Bench",
                "departement": "94",
                "communes": [{"insee_code": "94038", "name": "Bench"}],
            },
        ).raise_for_status()
        agent = c.post(
            "/agents",
            json={"matricule": "B1", "first_name": "B", "last_name": "B",
                  "subject": "bench-responsable", "roles": ["responsable"]},
        )  # fmt: skip
        for serial in CAMERAS:
            camera = c.post("/cameras", json={"serial": serial, "model": "bench"})
            c.post(
                f"/cameras/{camera.json()['id']}/assignments",
                json={"agent_id": agent.json()["id"], "starts_at": "2020-01-01T00:00:00Z"},
            ).raise_for_status()
        key = SigningKey.generate()
        station = c.post("/stations", json={"name": "dock", "public_key": public_key_of(key)})
        station.raise_for_status()
    return StationKeyFile(uuid.UUID(station.json()["id"]), org, key)


def _metadata(camera: str, path: Path, sha256: str) -> ClipMetadata:
    ended = datetime.now(UTC) - timedelta(minutes=1)
    return ClipMetadata.model_validate(
        {"camera_serial": camera, "started_at": ended - timedelta(minutes=30), "ended_at": ended,
         "clock_offset_ms": 0, "place": {"address": "benchmark"}, "size": path.stat().st_size,
         "sha256": sha256}
    )  # fmt: skip


def upload_post(
    ingest_url: str, station: StationKeyFile, camera: str, path: Path, sha256: str
) -> float:
    """(c): seconds from the first byte of the POST to its receipt."""
    metadata = _metadata(camera, path, sha256)
    with httpx.Client(base_url=ingest_url, timeout=httpx.Timeout(120.0)) as client:
        token = upload_token(client, station)
        started = time.perf_counter()
        response = client.post(
            "/v1/recordings",
            content=_file_chunks(path),
            headers={"Authorization": f"Bearer {token}", METADATA_HEADER: metadata.encode(),
                     "Content-Length": str(metadata.size)},
        )  # fmt: skip
        took = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"upload failed: {response.status_code} {response.text[:300]}")
    return took


def upload_tus(
    ingest_url: str, station: StationKeyFile, camera: str, path: Path, sha256: str
) -> float:
    """(b): seconds from the tus creation to the receipt on the PATCH's answer."""
    metadata = _metadata(camera, path, sha256)
    encoded = base64.b64encode(metadata.model_dump_json().encode()).decode()
    with httpx.Client(base_url=ingest_url, timeout=httpx.Timeout(120.0)) as client:
        token = upload_token(client, station)
        headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
        started = time.perf_counter()
        created = client.post(
            "/v1/uploads",
            headers={**headers, "Upload-Length": str(metadata.size),
                     "Upload-Metadata": f"metadata {encoded}"},
        )  # fmt: skip
        created.raise_for_status()
        response = client.patch(
            created.headers["Location"],
            content=_file_chunks(path),
            headers={**headers, "Upload-Offset": "0", "Content-Length": str(metadata.size),
                     "Content-Type": "application/offset+octet-stream"},
        )  # fmt: skip
        took = time.perf_counter() - started
    if response.status_code != 204 or "Temoin-Receipt" not in response.headers:
        raise RuntimeError(f"tus upload failed: {response.status_code} {response.text[:300]}")
    return took


def _rss(processes: dict[str, psutil.Process], rss: PeakRss) -> str:
    return ", ".join(f"{n} {rss.peak[n] / MIB:.0f} MiB" for n in processes)


def main(size_mib: int, large_mib: int) -> None:
    console = Console(soft_wrap=True)  # long lines stay whole in a log
    with bench_stack(console, "temoin-bench-ingest-") as stack:
        processes = {
            name: psutil.Process(stack.services[name].process.pid) for name in ("ingest", "vault")
        }
        s3_process = next(
            p for p in psutil.Process().children(recursive=True) if p.name() == "weed"
        )
        station = setup_organisation(
            stack.url("vault"), DevIssuer(stack.root / "var" / "dev-issuer")
        )
        ingest = stack.url("ingest")
        clip = stack.root / "clip.bin"
        sha = make_file(clip, size_mib * MIB)
        store = stack.store
        everyone = {**processes, "s3": s3_process, "client": psutil.Process()}
        # The machine's speed drifts from one upload to the next (the direct PUT alone swings
        # by 20%), and the store slows a little as it fills: ROUNDS rounds of (a), (b), (c),
        # each round in another order so that no side is always first, and each side's median
        # compared. Each round uploads through other cameras, or the clip would be recognised
        # as already stored. Before each upload the disks are synced, so that writing out the
        # previous upload's gigabyte (kernel work charged to no process here) is not done
        # during the next one.
        seconds: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        usage: dict[str, PeakRss] = {}
        peaks = dict.fromkeys(processes, 0)

        def measured(side: str, round_: int) -> float:
            if side == "a":
                return direct_put(store, clip, f"bench/direct-{round_}")
            if side == "b":
                return upload_tus(ingest, station, CAMERAS[2 * round_], clip, sha)
            return upload_post(ingest, station, CAMERAS[2 * round_ + 1], clip, sha)

        for round_ in range(ROUNDS):
            for side in "abc"[round_ % 3 :] + "abc"[: round_ % 3]:
                os.sync()
                with PeakRss(everyone) as usage[side]:
                    seconds[side].append(measured(side, round_))
            for name in processes:
                peaks[name] = max(peaks[name], usage["b"].peak[name], usage["c"].peak[name])
        mb = size_mib * MIB / 1e6
        direct, by_tus, by_post = (statistics.median(seconds[side]) for side in "abc")
        console.print(f"\n{size_mib} MiB clip, medians of {ROUNDS} rounds")
        for side, label in (
            ("a", "(a) direct S3 multipart PUT (minio SDK):"),
            ("b", "(b) tus through ingest:                "),
            ("c", "(c) single POST through ingest:        "),
        ):
            rates = ", ".join(f"{mb / s:.1f}" for s in seconds[side])
            console.print(f"  {label} {mb / statistics.median(seconds[side]):7.1f} MB/s ({rates})")
        console.print(
            f"  b/a = {direct / by_tus:.2f}   c/a = {direct / by_post:.2f}   target: >= 0.8"
        )
        console.print(
            "  peak RSS over (b) and (c): "
            + ", ".join(f"{n} {peaks[n] / MIB:.0f} MiB" for n in processes)
            + "   target: <= 150 MB each"
        )
        console.print("  CPU during the last round:")
        for side in "abc":
            console.print(f"  during ({side}): {usage[side].report()}")
        clip.unlink()
        if large_mib:
            sha = make_file(clip, large_mib * MIB)
            console.print(f"\n{large_mib} MiB clip")
            for name, upload, camera in (
                ("tus", upload_tus, CAMERAS[0]),
                ("single POST", upload_post, CAMERAS[1]),
            ):
                with PeakRss(processes) as rss:
                    took = upload(ingest, station, camera, clip, sha)
                rate = large_mib * MIB / 1e6 / took
                console.print(f"  {name}: {rate:.1f} MB/s, peak RSS {_rss(processes, rss)}")
            clip.unlink()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--large-mib", type=int, default=4096)
    arguments = parser.parse_args()
    main(arguments.size_mib, arguments.large_mib)
