"""`make bench-anonymise`: the anonymisation engine's speed and memory (issue 18).

For a 1080p and a 720p synthetic clip (10 s at 25 fps, a few packaged faces pasted and moving,
sensor noise, benchmarks/faces.py), served on a loopback URL with Range as the vault serves an
original: (a) the floor, ffmpeg alone decoding the clip and re-encoding it with the engine's
encoder settings (engine.ENCODER_ARGS), no detection; (b) the whole job, `anonymise` with the
default parameters, and again with detection at 640 pixels ("fast"), each in a process of its
own whose peak RSS (Python plus both ffmpeg children, summed, sampled every 20 ms) is measured.
Printed: frames per second of each, the ratio b/a, the peak RSS and each process's own.
Targets on these 2-core machines: b/a >= 0.3, peak RSS < 500 MB whatever the clip's length.

`--sweep` measures instead what docs/anonymisation.md chose the threshold from: recall per face
size on the quality test set (tests/test_anonymise_quality.py) and false detections on a clip
without faces, for several thresholds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import imageio_ffmpeg
import psutil
from rich.console import Console

from benchmarks.faces import (
    Clip,
    SizeStats,
    evaluate,
    fast_set,
    hd_set,
    quality_set,
    scene,
    serve,
)
from services.vault.derivatives.engine import (
    DEFAULT_PARAMETERS,
    ENCODER_ARGS,
    Parameters,
    _get_detector,
    anonymise,
)

TARGET_RATIO = 0.3
TARGET_RSS_MB = 500
RESOLUTIONS = ((1920, 1080), (1280, 720))
SWEEP_THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6)


def bench_clip(width: int, height: int, seconds: int) -> Clip:
    """A few faces of sizes proportionate to the frame, as a body camera sees people at a few
    metres: from a twentieth to a fifth of the frame's height; sensor noise on every frame, or
    the floor would encode a still photograph far faster than any camera's footage."""
    sizes = [height // 5, height // 8, height // 12, height // 16, height // 20]
    return scene(width, height, seconds * 25, sizes, occluded_every=4, seed=11, noise=6)


def floor(url: str, fps: float) -> float:
    """Seconds ffmpeg alone takes to decode the clip and re-encode it as the engine does."""
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-threads",
        "2",
        "-i",
        url,
        "-map",
        "0:v:0",
        "-g",
        str(round(fps * 2)),
        *ENCODER_ARGS,
        # The fastest x264 gets on two cores (the job's encoder runs on one thread, for memory:
        # the floor is not slowed down to match it).
        "-threads",
        "2",
        "pipe:1",
    ]
    started = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


class PeakRss:
    """Samples the summed RSS of a process and its descendants until it ends, each one's own peak
    (python, decoder, encoder), and the summed PSS (each shared page counted once across the
    processes: the two ffmpeg processes run the same binary)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self.peak_pss = 0
        self.each: dict[str, int] = {}
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            try:
                everyone = [self.process, *self.process.children(recursive=True)]
                total = pss = 0
                for p in everyone:
                    try:
                        rss = p.memory_info().rss
                        name = _role(p)
                        pss += _pss(p.pid)
                    except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                        continue  # a child that just ended
                    total += rss
                    self.each[name] = max(self.each.get(name, 0), rss)
                self.peak = max(self.peak, total)
                self.peak_pss = max(self.peak_pss, pss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.02)

    def join(self) -> int:
        """The peak of the sum, in bytes."""
        self._thread.join()
        return self.peak


def _pss(pid: int) -> int:
    """The process's proportional set size, in bytes (/proc/PID/smaps_rollup, cheap to read)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def _role(process: psutil.Process) -> str:
    command = process.cmdline()
    if "services.vault.derivatives.quantise" in command:
        return "quantiser"  # the detector's loading only, before either ffmpeg starts
    if "ffmpeg" not in process.name():
        return "python"
    return "encoder" if "pipe:0" in command else "decoder"


def job(url: str, parameters: Parameters) -> tuple[dict[str, float], PeakRss]:
    """The whole job in a process of its own: what it reports, and its peak RSS in bytes."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.anonymise",
            "--job",
            url,
            "--parameters",
            json.dumps(dataclasses.asdict(parameters)),
        ],
        stdout=subprocess.PIPE,
    )
    rss = PeakRss(process.pid)
    out, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError("the job failed")
    rss.join()
    return json.loads(out), rss


def run_job(url: str, parameters: Parameters) -> None:
    """--job: in the measured process. Prints the job's frames, seconds and output size, and
    the seconds the detector took to load before it.

    The vault loads the detector once per process (the 8-bit model is made then, 2-3 s), not
    once per job: on a 10 s clip that load would weigh a tenth of the job, on an hour's clip
    nothing. The job's speed is timed from a loaded detector, as the vault's second job and
    every later one runs; the load is timed and printed on its own."""
    written = 0

    def sink(chunk: bytes) -> None:
        nonlocal written
        written += len(chunk)

    started = time.perf_counter()
    _get_detector()
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = anonymise(url, sink, parameters)
    seconds = time.perf_counter() - started
    faces = sum(result.faces_per_frame)
    print(json.dumps({"frames": result.frames, "seconds": seconds, "bytes": written,
                      "faces": faces, "load_seconds": load_seconds}))  # fmt: skip


def bench(console: Console, seconds: int, variants: dict[str, Parameters]) -> bool:
    """The table; True when the default parameters meet both targets."""
    console.print(f"make bench-anonymise: {seconds} s clips")
    for name, parameters in variants.items():
        console.print(f"  {name}: {parameters}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="temoin-bench-anonymise-") as tmp:
        for width, height in RESOLUTIONS:
            clip = bench_clip(width, height, seconds)
            started = time.perf_counter()
            path = clip.encode(Path(tmp) / f"{height}p.mp4")
            console.print(
                f"  {height}p clip: {clip.frames} frames, {path.stat().st_size / 1e6:.1f} MB, "
                f"made in {time.perf_counter() - started:.0f} s"
            )
            with serve(path.read_bytes()) as url:
                floor_s = floor(url, clip.fps)
                for name, parameters in variants.items():
                    reported, rss = job(url, parameters)
                    rows.append((height, name, clip.frames, floor_s, reported, rss))
            path.unlink()

    ok = True
    console.print(
        f"\n{'clip':>6} {'parameters':<10} {'frames':>7} {'floor fps':>10} {'job fps':>8} "
        f"{'ratio':>6} {'target':>7} {'peak RSS':>9} {'target':>8}  result"
    )
    for height, name, frames, floor_s, reported, rss in rows:
        floor_fps = frames / floor_s
        job_fps = reported["frames"] / reported["seconds"]
        ratio = job_fps / floor_fps
        mb = rss.peak / 1e6
        passed = ratio >= TARGET_RATIO and mb < TARGET_RSS_MB and reported["frames"] == frames
        # The targets are the defaults'; the other variants are there for comparison.
        if name == "default":
            ok &= passed
        console.print(
            f"{height:>5}p {name:<10} {frames:>7} {floor_fps:>10.1f} {job_fps:>8.1f} "
            f"{ratio:>5.2f}x {'>=' + str(TARGET_RATIO):>7} {mb:>6.0f} MB "
            f"{'<' + str(TARGET_RSS_MB):>8}  "
            + ("PASS" if passed else "FAIL")
            + ("" if name == "default" else " (for comparison)")
        )
        console.print(
            f"{'':>7}peak RSS of each: "
            + ", ".join(f"{n} {peak / 1e6:.0f} MB" for n, peak in sorted(rss.each.items()))
            + f"; peak PSS summed {rss.peak_pss / 1e6:.0f} MB"
        )
        load = reported["load_seconds"]
        with_load = reported["frames"] / (reported["seconds"] + load)
        console.print(
            f"{'':>7}detector loaded in {load:.1f} s before the job, once per vault process "
            f"(counted in: {with_load:.1f} fps, {with_load / floor_fps:.2f}x)"
        )
        if height == 1080:
            console.print(
                f"{'':>7}an hour of 1080p at 25 fps: {3600 * 25 / job_fps / 3600:.1f} h here "
                f"(the floor: {3600 * 25 / floor_fps / 3600:.2f} h)"
            )
    return ok


def _merge(total: dict[int, SizeStats], stats: dict[int, SizeStats]) -> None:
    for size, entry in stats.items():
        into = total.setdefault(size, SizeStats())
        into.boxes += entry.boxes
        into.covered += entry.covered


def sweep(console: Console, frames: int, scales: list[float], strides: list[int]) -> None:
    """Recall per face size, and boxes blurred on a clip without faces: against the threshold
    on the quality test set (640x360), against the detection scale on the 1080p set, and against
    the detection stride on 1080p faces moving fast (benchmarks/faces.py)."""
    d = DEFAULT_PARAMETERS
    runs: list[tuple[str, list[Clip], Clip | None, str, list[Parameters]]] = [
        ("640x360 quality set", quality_set(frames), scene(640, 360, frames * 2, []),
         "threshold", [dataclasses.replace(d, threshold=t) for t in SWEEP_THRESHOLDS]),
        ("1080p set", hd_set(frames // 2), scene(1920, 1080, frames, []),
         "detect_scale", [dataclasses.replace(d, detect_scale=s) for s in scales]),
        ("1080p, faces moving 8 to 24 px a frame", fast_set(frames), None,
         "detect_every", [dataclasses.replace(d, detect_every=k) for k in strides]),
    ]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="temoin-sweep-") as tmp:
        for name, clips, empty, varied, variants in runs:
            sources = [c.encode(Path(tmp) / f"q{i}.mp4", audio=False) for i, c in enumerate(clips)]
            empty_source = empty.encode(Path(tmp) / "empty.mp4", audio=False) if empty else None
            sizes: list[int] = sorted({f.size for c in clips for f in c.faces})
            console.print(
                f"\n{name}: {sum(c.frames for c in clips)} frames with faces"
                + (f", {empty.frames} without" if empty else "")
                + f"; otherwise {d}\n{varied:>12} "
                + " ".join(f"{str(s) + ' px':>7}" for s in sizes)
                + f" {'>=40 px':>8} {'false boxes':>12} {'fps':>5}"
            )
            for parameters in variants:
                total: dict[int, SizeStats] = {}
                seconds = 0.0
                done = 0
                for clip, source in zip(clips, sources, strict=True):
                    output = Path(tmp) / "out.mp4"
                    with serve(source.read_bytes()) as url, output.open("wb") as sink:
                        started = time.perf_counter()
                        done += anonymise(url, sink.write, parameters).frames
                        seconds += time.perf_counter() - started
                    stats, _ = evaluate(clip, output)
                    _merge(total, stats)
                false_boxes = "-"
                if empty_source is not None:
                    with serve(empty_source.read_bytes()) as url:
                        result = anonymise(url, lambda chunk: None, parameters)
                    false_boxes = str(sum(result.faces_per_frame))
                big = [s for size, s in total.items() if size >= 40]
                pooled = sum(s.covered for s in big) / sum(s.boxes for s in big)
                console.print(
                    f"{getattr(parameters, varied):>12} "
                    + " ".join(f"{total[s].recall:>7.1%}" for s in sizes)
                    + f" {pooled:>8.1%} {false_boxes:>12} {done / seconds:>5.1f}"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--sweep", action="store_true", help="the threshold's measurements")
    parser.add_argument("--sweep-frames", type=int, default=40)
    parser.add_argument("--sweep-scales", default="0.5,0.667,0.75", help="detection scales")
    parser.add_argument("--sweep-strides", default="1,2,3,4", help="detection strides")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--parameters", help="JSON of engine.Parameters fields to change")
    arguments = parser.parse_args()
    chosen = DEFAULT_PARAMETERS
    if arguments.parameters:
        chosen = dataclasses.replace(chosen, **json.loads(arguments.parameters))
    if arguments.job:
        run_job(arguments.job, chosen)
    elif arguments.sweep:
        scales = [float(scale) for scale in arguments.sweep_scales.split(",")]
        strides = [int(stride) for stride in arguments.sweep_strides.split(",")]
        sweep(Console(soft_wrap=True), arguments.sweep_frames, scales, strides)
    else:
        # The default, and detection on every frame: what the stride saves.
        variants = {"default": chosen, "every": dataclasses.replace(chosen, detect_every=1)}
        sys.exit(0 if bench(Console(soft_wrap=True), arguments.seconds, variants) else 1)
