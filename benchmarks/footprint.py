"""`make bench-footprint`: each service's memory and CPU, idle and under a small load, for the
Kubernetes requests and limits (deploy/kubernetes/, docs/kubernetes.md).

On the whole stack (`temoin run`'s, in a temporary directory, the dashboard included):
1. idle: each service's RSS sampled every 50 ms for a few seconds once every /readyz answers
   (median and peak), after a first request to every page and API the load will use, so that
   lazily imported code is counted;
2. a small load, all at once: `--uploads` clips of `--clip-mib` each sent through ingest with
   the single POST, `--parallel` at a time (ingest and the vault); the yearly report as JSON and
   as a PDF from reporting; the dashboard's Accueil and recordings pages signed in as a maire;
   the vault's recordings list. Printed: each service's peak RSS (its process and its children)
   and its CPU seconds over the load's wall time.
3. a training copy (docs/training-copies.md): a `--copy-seconds` long 1080p H.264 clip uploaded,
   attached to a formation procedure, and its anonymised copy made by the vault's own runner
   with the default parameters: the vault's RSS with its two ffmpeg children, while the job
   runs, and how long it took. `make bench-anonymise` measures the engine alone, finer.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import imageio_ffmpeg
import psutil
from rich.console import Console

from benchmarks.common import bench_stack
from benchmarks.dashboard import sign_in
from benchmarks.ingest import CAMERAS, MIB, make_file, setup_organisation, upload_post
from temoin.dev_issuer import DevIssuer

SERVICES = ("ingest", "vault", "reporting", "dashboard")


def _usage(process: psutil.Process, children_cpu: dict[int, float]) -> int:
    """The RSS of the process and its children (the vault's ffmpeg during a training copy):
    what the container's memory limit counts, give or take the pages they share. Notes each
    child's CPU seconds so far in ``children_cpu``: they are gone by the end of the phase."""
    total: int = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
            children_cpu[child.pid] = sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


class Sampler:
    """Every 50 ms, the RSS of each service, while a phase runs."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes
        self.samples: dict[str, list[int]] = {name: [] for name in processes}
        self.children_cpu: dict[str, dict[int, float]] = {name: {} for name in processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            for name, process in self.processes.items():
                self.samples[name].append(_usage(process, self.children_cpu[name]))

    def __enter__(self) -> Sampler:
        self._cpu = {n: sum(p.cpu_times()[:2]) for n, p in self.processes.items()}
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.wall_s = time.perf_counter() - self._started
        self.cpu_s = {
            n: sum(p.cpu_times()[:2]) - self._cpu[n] + sum(self.children_cpu[n].values())
            for n, p in self.processes.items()
        }

    def line(self, name: str) -> str:
        values = self.samples[name]
        return (
            f"{name:>9}: RSS median {statistics.median(values) / MIB:6.0f} MiB, "
            f"peak {max(values) / MIB:6.0f} MiB; CPU {self.cpu_s[name]:6.1f} s "
            f"over {self.wall_s:5.1f} s ({self.cpu_s[name] / self.wall_s:.2f} cores)"
        )


def _repeat(count: int, call: Callable[[], httpx.Response]) -> None:
    for _ in range(count):
        answer = call()
        assert answer.status_code == 200, (answer.request.url, answer.status_code)


def _mp4_1080p(path: Path, seconds: int) -> str:
    """A 1080p H.264 + AAC clip as a camera writes one (index at its end); its SHA-256."""
    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=duration={seconds}:size=1920x1080:rate=25",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-y", str(path),
        ],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_copy(
    console: Console, vault: psutil.Process, api: httpx.Client, base: str, responsable: str,
    recording: str, timeout_s: float,
) -> None:  # fmt: skip
    """A formation procedure, the recording attached, its copy asked for; RSS until it is made."""
    headers = {"Authorization": f"Bearer {responsable}"}
    opened = api.post(
        f"{base}/procedures", headers=headers,
        json={"type": "formation", "reference": "FORM-FOOTPRINT"},
    )  # fmt: skip
    opened.raise_for_status()
    procedure = f"{base}/procedures/{opened.json()['id']}"
    api.post(
        f"{procedure}/recordings", headers=headers,
        json={"recording_id": recording, "qualification": "mesure"},
    ).raise_for_status()  # fmt: skip
    with Sampler({"vault": vault}) as job:
        asked = api.post(
            f"{procedure}/derivatives", headers=headers,
            json={"recording_id": recording, "motif": "mesure de la mémoire"},
        )  # fmt: skip
        asked.raise_for_status()
        path = f"{base}/derivatives/{asked.json()['id']}"
        deadline = time.monotonic() + timeout_s
        status = "en_attente"
        while status in ("en_attente", "en_cours") and time.monotonic() < deadline:
            time.sleep(1)
            status = api.get(path, headers=headers).json()["status"]
    console.print(f"\na training copy of a 1080p clip (default parameters), ended {status}:")
    console.print("  " + job.line("vault") + " (with its ffmpeg children)")


def main(uploads: int, clip_mib: int, parallel: int, idle_s: float, copy_seconds: int) -> None:
    console = Console(soft_wrap=True)
    with bench_stack(console, "temoin-bench-footprint-", dashboard=True) as stack:
        processes = {name: psutil.Process(stack.services[name].process.pid) for name in SERVICES}
        issuer = DevIssuer(stack.root / "var" / "dev-issuer", issuer=stack.url("issuer"))
        station = setup_organisation(stack.url("vault"), issuer)
        org = station.organisation_id
        maire = issuer.mint("bench-maire", ["maire"], organisation_id=org)
        auth = {"Authorization": f"Bearer {maire}"}
        year = datetime.now(UTC).year
        report = f"{stack.url('reporting')}/v1/organisations/{org}/report"
        recordings = f"{stack.url('vault')}/v1/organisations/{org}/recordings"
        dashboard = sign_in(stack.url("dashboard"), f"maire:{org}")
        api = httpx.Client(headers=auth, timeout=120)
        clips = []
        for n in range(uploads):
            path = stack.root / f"clip-{n}.bin"
            clips.append((CAMERAS[n % len(CAMERAS)], path, make_file(path, clip_mib * MIB)))

        def warm() -> None:
            _repeat(1, lambda: api.get(report, params={"year": year}))
            _repeat(1, lambda: api.get(report, params={"year": year, "format": "pdf"}))
            _repeat(1, lambda: api.get(recordings))
            _repeat(1, lambda: dashboard.get("/"))
            _repeat(1, lambda: dashboard.get("/enregistrements"))

        try:
            warm()
            time.sleep(2)
            with Sampler(processes) as idle:
                time.sleep(idle_s)
            console.print(f"idle, {idle_s:.0f} s after a first request to each page:")
            for name in SERVICES:
                console.print("  " + idle.line(name))

            def upload(clip: tuple[str, Path, str]) -> None:
                camera, path, sha = clip
                upload_post(stack.url("ingest"), station, camera, path, sha)

            with Sampler(processes) as load, ThreadPoolExecutor(parallel + 4) as pool:
                readers = [
                    pool.submit(_repeat, 30, lambda: api.get(report, params={"year": year})),
                    pool.submit(
                        _repeat, 5, lambda: api.get(report, params={"year": year, "format": "pdf"})
                    ),
                    pool.submit(_repeat, 30, lambda: api.get(recordings)),
                    pool.submit(_repeat, 30, lambda: dashboard.get("/enregistrements")),
                ]
                with ThreadPoolExecutor(parallel) as uploaders:
                    list(uploaders.map(upload, clips))
                for reader in readers:
                    reader.result()
            console.print(
                f"\nunder load: {uploads} clips of {clip_mib} MiB by single POST, {parallel} "
                "at a time, with 30 reports (JSON), 5 PDF letters, 30 recordings lists and "
                "30 dashboard recordings pages beside them:"
            )
            for name in SERVICES:
                console.print("  " + load.line(name))
            if copy_seconds:
                video = stack.root / "camera.mp4"
                sha = _mp4_1080p(video, copy_seconds)
                camera = CAMERAS[uploads % len(CAMERAS)]
                upload_post(stack.url("ingest"), station, camera, video, sha)
                listed = api.get(recordings, params={"limit": 500}).json()
                recording = next(r["id"] for r in listed["items"] if r["sha256"] == sha)
                responsable = issuer.mint("bench-responsable", ["responsable"], organisation_id=org)
                base = f"{stack.url('vault')}/v1/organisations/{org}"
                training_copy(
                    console, processes["vault"], api, base, responsable, recording,
                    timeout_s=60.0 * copy_seconds,
                )  # fmt: skip
        finally:
            api.close()
            dashboard.close()
            for _, path, _ in clips:
                path.unlink(missing_ok=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--clip-mib", type=int, default=64)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--copy-seconds", type=int, default=4, help="0: no training copy")
    arguments = parser.parse_args()
    main(
        arguments.uploads, arguments.clip_mib, arguments.parallel, arguments.idle_s,
        arguments.copy_seconds,
    )  # fmt: skip
