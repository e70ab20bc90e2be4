"""Synthetic clips with faces whose boxes are known, and the loopback HTTP server that serves them
to the anonymisation engine as the vault serves an original's plaintext (Range, seekable).

Faces come from images installed packages ship, nothing is downloaded: scikit-image's
`astronaut` (frontal) and `camera` (a profile), and the 100 faces of its `lfw_subset` (Labeled
Faces in the Wild, 25x25 grey crops of 100 different people). They are pasted at known sizes and
positions over a packaged photograph (scikit-image's `rocket`), moving, some partly hidden, so that
the true box of every face is known on every frame. Used by tests/test_anonymise_quality.py and
benchmarks/anonymise.py; these clips are synthetic, not evidence, so they may sit in a temporary
directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import math
import random
import re
import secrets
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import imageio_ffmpeg
import numpy as np
import numpy.typing as npt
import skimage.data

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Source:
    """A face photograph and, inside it, the face's box (x1, y1, x2, y2)."""

    name: str
    image: Image  # rgb
    face: tuple[int, int, int, int]
    # Haar's frontal detector can find this face (a profile it cannot): only these faces tell
    # whether the blur defeats it.
    frontal: bool


@cache
def sources() -> tuple[Source, ...]:
    astronaut = np.ascontiguousarray(skimage.data.astronaut())  # type: ignore[no-untyped-call]
    grey_camera = skimage.data.camera()  # type: ignore[no-untyped-call]
    camera = np.ascontiguousarray(np.stack([grey_camera] * 3, axis=-1))
    found: list[Source] = [
        # Boxes from forehead to chin, checked by eye; context around them is pasted too.
        Source("astronaut", astronaut, (176, 58, 272, 178), True),
        Source("camera", camera, (200, 112, 262, 200), False),
    ]
    # The first 100 are faces, the others are not.
    lfw = skimage.data.lfw_subset()[:100]  # type: ignore[no-untyped-call]
    for i, grey in enumerate(lfw):
        face = np.clip(grey * 255, 0, 255).astype(np.uint8)
        # A tight crop: the face is the whole image.
        found.append(Source(f"lfw{i}", np.stack([face] * 3, axis=-1), (0, 0, 25, 25), True))
    return tuple(found)


@dataclass(frozen=True)
class Face:
    """One pasted face: its source, its size (width of the true box, pixels), its path."""

    source: Source
    size: int
    cell: tuple[int, int, int, int]  # x, y, width, height: the face moves inside, never outside
    phase: float  # where on its path the face starts (pixels)
    vx: float  # pixels per frame
    vy: float
    occluded: bool  # a grey band hides the lower third of the face (a scarf, a hand)
    light: float = 1.0  # brightness gain: below 1, a face in the shade
    tilt: float = 0.0  # degrees the head is tilted (the patch turns about the face's centre)


@dataclass(frozen=True)
class TrueBox:
    face: Face
    box: tuple[int, int, int, int]


class Clip:
    """A clip whose frames are recomputed on demand (nothing held in memory)."""

    def __init__(
        self,
        width: int,
        height: int,
        frames: int,
        faces: list[Face],
        fps: int = 25,
        noise: int = 0,
    ) -> None:
        self.width, self.height, self.frames, self.faces, self.fps = (
            width,
            height,
            frames,
            faces,
            fps,
        )
        # Sensor noise, different on every frame (± this many levels): a camera's footage is
        # never clean, and noise is what makes an encoder work as hard as on real footage.
        self.noise = noise
        background = np.ascontiguousarray(skimage.data.rocket())  # type: ignore[no-untyped-call]
        self._background: Image = np.asarray(
            cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA), np.uint8
        )

    def _placement(self, face: Face, index: int) -> tuple[Image, int, int, tuple[int, ...]]:
        """The face's patch (with its context), where it goes, and its true box."""
        src = face.source
        fx1, fy1, fx2, fy2 = src.face
        scale = face.size / (fx2 - fx1)
        cx1, cy1, cx2, cy2 = _context(src)
        crop = src.image[cy1:cy2, cx1:cx2]
        patch_w, patch_h = patch_size(src, face.size)
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        patch: Image = np.asarray(
            cv2.resize(crop, (patch_w, patch_h), interpolation=interpolation), np.uint8
        )
        if face.tilt:
            centre = ((fx1 + fx2) / 2 - cx1) * scale, ((fy1 + fy2) / 2 - cy1) * scale
            turn = cv2.getRotationMatrix2D(centre, face.tilt, 1.0)
            patch = np.asarray(
                cv2.warpAffine(patch, turn, (patch_w, patch_h), borderMode=cv2.BORDER_REPLICATE),
                np.uint8,
            )
        if face.light != 1.0:
            patch = np.clip(patch.astype(np.float32) * face.light, 0, 255).astype(np.uint8)
        # The patch moves inside its cell, bouncing off the cell's edges, so that faces never
        # overlap one another (each true box holds one face).
        face_w = round((fx2 - fx1) * scale)
        face_h = round((fy2 - fy1) * scale)
        cell_x, cell_y, cell_w, cell_h = face.cell
        px = cell_x + _bounce(face.phase + face.vx * index, cell_w - patch_w)
        py = cell_y + _bounce(face.phase + face.vy * index, cell_h - patch_h)
        x = px + round((fx1 - cx1) * scale)
        y = py + round((fy1 - cy1) * scale)
        return patch, px, py, (x, y, x + face_w, y + face_h)

    def true_boxes(self, index: int) -> list[TrueBox]:
        boxes = []
        for face in self.faces:
            *_, box = self._placement(face, index)
            boxes.append(TrueBox(face, (box[0], box[1], box[2], box[3])))
        return boxes

    def frame(self, index: int) -> Image:
        frame = self._background.copy()
        # A slow pan of the background, so that the encoder has motion everywhere.
        frame = np.roll(frame, index * 2, axis=1)
        for face in self.faces:
            patch, px, py, box = self._placement(face, index)
            _paste(frame, patch, px, py)
            if face.occluded:
                x1, y1, x2, y2 = box
                frame[y1 + (y2 - y1) * 2 // 3 : y2, x1:x2] = (90, 90, 90)
        if self.noise:
            grain = np.random.default_rng(index).integers(
                -self.noise, self.noise + 1, frame.shape[:2], dtype=np.int16
            )
            frame = np.clip(frame + grain[..., None], 0, 255).astype(np.uint8)
        return np.ascontiguousarray(frame)

    def encode(self, path: Path, *, audio: bool = True, crf: int = 16) -> Path:
        """The clip as an MP4 like a camera's: moov atom at the end, with a sound track and
        identifying metadata tags, so the engine's removal of both is tested."""
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{self.width}x{self.height}",
            "-framerate",
            str(self.fps),
            "-i",
            "pipe:0",
        ]
        if audio:
            command += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={self.seconds}"]
        command += ["-map", "0:v"]
        if audio:
            command += ["-map", "1:a", "-c:a", "aac", "-shortest"]
        command += [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            str(crf),
            "-pix_fmt",
            "yuv420p",
            "-metadata",
            "title=Agent 4242, caméra SN-0042",
            "-metadata",
            "location=+48.8566+002.3522/",
            "-metadata",
            "comment=serial TEMOIN-CAM-0042",
            str(path),
        ]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdin is not None
        for index in range(self.frames):
            process.stdin.write(self.frame(index).tobytes())
        process.stdin.close()
        assert process.stderr is not None
        with process.stderr:
            error = process.stderr.read()
        if process.wait() != 0:
            raise RuntimeError(f"ffmpeg: {error.decode(errors='replace')}")
        return path

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def _context(source: Source) -> tuple[int, int, int, int]:
    """The face's box with some context around it when the photograph has it (hair, neck)."""
    fx1, fy1, fx2, fy2 = source.face
    pad = int((fx2 - fx1) * 0.35)
    h, w = source.image.shape[:2]
    return max(0, fx1 - pad), max(0, fy1 - pad), min(w, fx2 + pad), min(h, fy2 + pad)


def patch_size(source: Source, size: int) -> tuple[int, int]:
    """Width and height of the pasted patch of `source` whose face is `size` pixels wide."""
    fx1, _, fx2, _ = source.face
    cx1, cy1, cx2, cy2 = _context(source)
    scale = size / (fx2 - fx1)
    return max(1, round((cx2 - cx1) * scale)), max(1, round((cy2 - cy1) * scale))


def _bounce(position: float, span: int) -> int:
    """A position going back and forth in [0, span]."""
    if span <= 0:
        return 0
    period = 2 * span
    p = position % period
    return round(p if p <= span else period - p)


def _paste(frame: Image, patch: Image, x: int, y: int) -> None:
    h, w = patch.shape[:2]
    fh, fw = frame.shape[:2]
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(fw, x + w), min(fh, y + h)
    if x1 >= x2 or y1 >= y2:
        return
    frame[y1:y2, x1:x2] = patch[y1 - y : y2 - y, x1 - x : x2 - x]


def scene(
    width: int,
    height: int,
    frames: int,
    sizes: list[int],
    *,
    occluded_every: int = 0,
    seed: int = 7,
    noise: int = 0,
    speed: tuple[float, float] = (0.5, 4.0),
    room: int = 0,
) -> Clip:
    """One face per size in `sizes`: the astronaut for the first, the cameraman's profile for the
    second, faces of the LFW subset for the others; each moving inside a cell of its
    own (cells packed in rows, largest first); every `occluded_every`-th face partly hidden (0:
    none); each in its own light (45 to 100% brightness) and tilted up to 12 degrees; each at a
    pace drawn from `speed` (pixels a frame), with at least `room` pixels to move across its
    cell. Raises ValueError when the faces do not fit the frame."""
    rng = random.Random(seed)
    pool = sources()
    faces: list[Face] = []
    row_x = row_y = row_h = 0
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    for n in order:
        size = sizes[n]
        source = pool[n] if n < 2 else pool[2 + rng.randrange(len(pool) - 2)]
        # The cell leaves the patch room to move.
        patch_w, patch_h = patch_size(source, size)
        space = max(8, size // 3, room)
        cell_w, cell_h = min(width, patch_w + space), min(height, patch_h + space)
        if row_x + cell_w > width:
            row_x, row_y, row_h = 0, row_y + row_h, 0
        if row_y + cell_h > height:
            raise ValueError(f"faces of {sizes} px do not fit in {width}x{height}")
        pace = rng.uniform(*speed)
        angle = rng.uniform(0, 2 * math.pi)
        faces.append(
            Face(
                source=source,
                size=size,
                cell=(row_x, row_y, cell_w, cell_h),
                phase=rng.uniform(0, size),
                vx=pace * math.cos(angle),
                vy=pace * math.sin(angle),
                occluded=bool(occluded_every) and n % occluded_every == occluded_every - 1,
                light=rng.uniform(0.45, 1.0),
                tilt=rng.uniform(-12, 12),
            )
        )
        row_x += cell_w
        row_h = max(row_h, cell_h)
    # The rows start at a random height in the room they leave, not always at the top.
    shift = rng.randrange(max(1, height - (row_y + row_h) + 1))
    faces = [
        dataclasses.replace(face, cell=(face.cell[0], face.cell[1] + shift, *face.cell[2:]))
        for face in faces
    ]
    return Clip(width, height, frames, faces, noise=noise)


def quality_set(frames: int = 50) -> list[Clip]:
    """The quality test set (tests/test_anonymise_quality.py, make bench-anonymise -- --sweep):
    faces from 24 pixels to half the frame's height, moving (one clip fast), a third of them
    partly hidden."""
    return [
        scene(640, 360, frames, [24, 24, 32, 32, 40, 40, 48, 56, 64, 80], occluded_every=3, seed=1),
        scene(640, 360, frames, [40, 96, 180], occluded_every=2, seed=2),
        scene(640, 360, frames, [160, 40, 64, 48, 32], occluded_every=4, seed=3),
        # Fast: 8 to 16 px a frame (200 to 400 px a second here), bouncing off their cells'
        # edges, so that a detection stride is tested on faces that turn between detections.
        scene(640, 360, frames, [40, 56, 80], occluded_every=3, seed=5, speed=(8.0, 16.0),
              room=120),
    ]  # fmt: skip


def fast_set(frames: int = 40) -> list[Clip]:
    """1080p faces moving fast, 8 to 24 pixels a frame (200 to 600 pixels a second: a person
    walking past close by, or the camera turning), bouncing off their cells' edges: what a
    detection stride must not miss."""
    return [
        scene(1920, 1080, frames, [40, 48, 64, 96, 160], occluded_every=3, seed=8,
              speed=(8.0, 24.0), room=300),
        scene(1920, 1080, frames, [40, 56, 80, 120], occluded_every=4, seed=9,
              speed=(8.0, 24.0), room=300),
    ]  # fmt: skip


def hd_set(frames: int = 20) -> list[Clip]:
    """The same faces on 1080p frames, where the detector sees a scaled-down frame
    (`Parameters.detect_size`): the set the threshold and the detection size were chosen on."""
    return [
        scene(1920, 1080, frames, [40, 24, 32, 40, 40, 48, 48, 56, 64, 80, 96, 120, 160],
              occluded_every=4, seed=5),
        scene(1920, 1080, frames, [540, 40, 270, 48, 40], occluded_every=3, seed=6),
    ]  # fmt: skip


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD of one path, with single byte ranges (RFC 9110 14), as ffmpeg asks them."""

    data: bytes = b""
    path_token: str = ""

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: ffmpeg seeks a lot

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def do_GET(self) -> None:
        self._respond(body=True)

    def _respond(self, *, body: bool) -> None:
        if self.path != self.path_token:
            self.send_error(404)
            return
        size = len(self.data)
        start, end = 0, size - 1
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                start = max(0, size - int(match.group(2)))
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            try:
                view = memoryview(self.data)[start : end + 1]
                for offset in range(0, len(view), 1 << 16):
                    self.wfile.write(view[offset : offset + (1 << 16)])
            except (BrokenPipeError, ConnectionResetError):
                pass  # ffmpeg seeks elsewhere and drops the connection: normal


@contextlib.contextmanager
def serve(data: bytes) -> Iterator[str]:
    """`data` on a loopback URL with an unguessable path, for as long as the block runs."""
    token = "/" + secrets.token_urlsafe(16) + ".mp4"
    handler = type("Handler", (_RangeHandler,), {"data": data, "path_token": token})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{token}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class SizeStats:
    """What the check found for the true boxes of one face size."""

    boxes: int = 0
    covered: int = 0  # detail gone and Haar finds no face in the output
    haar_eligible: int = 0  # frontal and unhidden: Haar ought to find them in the original
    haar_original: int = 0  # ... and does
    haar_output: int = 0  # boxes where Haar still finds a face in the output
    correlation: float = 0.0  # mean detail correlation between original and output

    @property
    def recall(self) -> float:
        return self.covered / self.boxes if self.boxes else 1.0

    @property
    def haar_sees(self) -> float:
        return self.haar_original / self.haar_eligible if self.haar_eligible else 0.0


# Detail correlation below which a box's content is no longer the original's: an H.264 encode
# at CRF 23 keeps about 0.9, a pixelation of 8 cells about 0.2 (measured, docs/anonymisation.md).
DETAIL_GONE = 0.5


@cache
def _cascade() -> cv2.CascadeClassifier:
    return cv2.CascadeClassifier(
        str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")  # type: ignore[attr-defined]
    )


def haar_finds(grey: npt.NDArray[Any], box: tuple[int, int, int, int]) -> bool:
    """Whether OpenCV's Haar cascade finds a face centred inside `box`: it looks at the box with
    half a box of context around it, scaled up so that the face spans at least 48 pixels (its
    window is 24), and takes any face at least half the box wide."""
    x1, y1, x2, y2 = box
    w = x2 - x1
    pad = w // 2
    cx1, cy1 = max(0, x1 - pad), max(0, y1 - pad)
    crop = grey[cy1 : y2 + pad, cx1 : x2 + pad]
    factor = max(1.0, 48 / w)
    if factor > 1:
        crop = cv2.resize(crop, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC)
    found = _cascade().detectMultiScale(
        crop, scaleFactor=1.05, minNeighbors=3, minSize=(int(w * factor * 0.5),) * 2
    )
    for fx, fy, fw, fh in found:
        centre_x = cx1 + (fx + fw / 2) / factor
        centre_y = cy1 + (fy + fh / 2) / factor
        if x1 <= centre_x <= x2 and y1 <= centre_y <= y2:
            return True
    return False


def detail_correlation(original: npt.NDArray[Any], output: npt.NDArray[Any], size: int) -> float:
    """Correlation of the fine detail (the image minus its own blur) of two grey crops: near 1
    when the output still shows the original's features, near 0 when they are gone."""
    sigma = max(1.0, size / 24)
    a = original.astype(np.float32)
    b = output.astype(np.float32)
    a -= cv2.GaussianBlur(a, (0, 0), sigma)
    b -= cv2.GaussianBlur(b, (0, 0), sigma)
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / norm) if norm > 0 else 0.0


def decoded_frames(path: Path, width: int, height: int) -> Iterator[Image]:
    """The frames of an MP4, decoded by ffmpeg, rgb24."""
    process = subprocess.Popen(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "pipe:1",
        ],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    size = width * height * 3
    try:
        while len(data := process.stdout.read(size)) == size:
            yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
    finally:
        process.stdout.close()
        process.kill()
        process.wait()


def evaluate(clip: Clip, output: Path) -> tuple[dict[int, SizeStats], int]:
    """Each true box of each frame of `clip` against the anonymised `output`: per face size, the
    boxes covered (detail gone and Haar finds no face there) and Haar's sanity check on the
    original. Also the number of frames the output has."""
    stats: dict[int, SizeStats] = {}
    frames = 0
    for index, out in enumerate(decoded_frames(output, clip.width, clip.height)):
        frames += 1
        if index >= clip.frames:
            continue
        original = cv2.cvtColor(clip.frame(index), cv2.COLOR_RGB2GRAY)
        anonymised = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
        for true in clip.true_boxes(index):
            x1, y1, x2, y2 = true.box
            size = true.face.size
            entry = stats.setdefault(size, SizeStats())
            entry.boxes += 1
            rho = detail_correlation(original[y1:y2, x1:x2], anonymised[y1:y2, x1:x2], size)
            entry.correlation += rho
            in_output = haar_finds(anonymised, true.box)
            entry.haar_output += in_output
            entry.covered += rho < DETAIL_GONE and not in_output
            if true.face.source.frontal and not true.face.occluded:
                entry.haar_eligible += 1
                entry.haar_original += haar_finds(original, true.box)
    for entry in stats.values():
        entry.correlation /= max(1, entry.boxes)
    return dict(sorted(stats.items())), frames
