"""The docking station's side: upload clips, keep their receipts.

Each clip comes with a sidecar ``CLIP.json`` (what the camera reports: serial, time range,
place, clock offset measured at the dock); ``temoin dock simulate`` makes such pairs for tests
and demonstrations. Clips go up with tus (docs/ingest.md): the upload's address is kept in
``CLIP.upload.json`` so that an interrupted upload, even by a reboot of the dock, resumes
where the server says it stopped. After a successful upload the receipt is checked against
ingest's public key and saved as ``CLIP.receipt.json``: only then may the camera free the
clip.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from shared.clips import ClipMetadata
from shared.receipts import receipt_is_valid
from temoin.station import StationError, StationKeyFile, problem, upload_token

READ_SIZE = 1 << 20
RETRIES = 5


class DockError(Exception):
    """An upload failed for good; the message says why. The clip stays on the dock."""


def sidecar_of(clip: Path) -> Path:
    return clip.with_name(clip.name + ".json")


def receipt_of(clip: Path) -> Path:
    return clip.with_name(clip.name + ".receipt.json")


def upload_state_of(clip: Path) -> Path:
    return clip.with_name(clip.name + ".upload.json")


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2))
    os.replace(temporary, path)  # whole or absent


def describe(clip: Path) -> ClipMetadata:
    """The clip's metadata: the sidecar's, with the size and SHA-256 of the file itself."""
    try:
        reported: dict[str, Any] = json.loads(sidecar_of(clip).read_text())
    except (OSError, ValueError) as exc:
        raise DockError(f"{clip}: no readable sidecar {sidecar_of(clip).name}: {exc}") from exc
    digest = hashlib.sha256()
    size = 0
    with clip.open("rb") as handle:
        while block := handle.read(READ_SIZE):
            digest.update(block)
            size += len(block)
    try:
        return ClipMetadata.model_validate({**reported, "size": size, "sha256": digest.hexdigest()})
    except ValueError as exc:
        raise DockError(f"{clip}: invalid sidecar: {exc}") from exc


def _chunks(clip: Path, offset: int, progress: Callable[[int], None]) -> Iterator[bytes]:
    with clip.open("rb") as handle:
        handle.seek(offset)
        while block := handle.read(READ_SIZE):
            offset += len(block)
            progress(offset)
            yield block


@dataclass
class Dock:
    ingest_url: str
    station: StationKeyFile
    public_key: str | None = None

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.ingest_url, timeout=httpx.Timeout(60.0))

    def receipt_key(self, client: httpx.Client) -> str:
        if self.public_key is None:
            self.public_key = str(client.get("/v1/receipts/public-key").json()["public_key"])
        return self.public_key

    def upload(
        self, clip: Path, progress: Callable[[int], None] = lambda _: None
    ) -> dict[str, Any]:
        """Upload one clip (resuming, retrying what can be retried), save its checked
        receipt. ``progress`` is told how far the clip has gone, in bytes, as it goes."""
        metadata = describe(clip)
        existing = receipt_of(clip)
        with self._client() as client:
            key = self.receipt_key(client)
            if existing.exists():
                saved: dict[str, Any] = json.loads(existing.read_text())
                if saved.get("sha256") == metadata.sha256 and receipt_is_valid(saved, key):
                    return saved
            failure = "no attempt"
            for attempt in range(1, RETRIES + 1):
                wait_s: float = min(2**attempt, 30)
                try:
                    receipt = _Upload(client, clip, metadata, self.station, progress).run()
                except _Retry as exc:
                    failure = str(exc)
                    wait_s = min(max(wait_s, exc.wait_s), 60)
                except (httpx.TransportError, StationError) as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                else:
                    kept = self._keep(clip, receipt, metadata, key)
                    upload_state_of(clip).unlink(missing_ok=True)
                    return kept
                if attempt < RETRIES:
                    time.sleep(wait_s)
            raise DockError(f"{clip}: gave up after {RETRIES} attempts: {failure}")

    def _keep(
        self, clip: Path, receipt: dict[str, Any], metadata: ClipMetadata, key: str
    ) -> dict[str, Any]:
        if not receipt_is_valid(receipt, key) or receipt.get("sha256") != metadata.sha256:
            raise DockError(f"{clip}: the receipt does not verify: keep the clip")
        _write_atomically(receipt_of(clip), receipt)
        return receipt


class _Retry(Exception):
    """Worth another attempt: the server failed or was busy; the upload resumes."""

    def __init__(self, reason: str, wait_s: float = 0) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else 0


@dataclass
class _Upload:
    """One attempt at one clip over tus: find or create the upload, send what is missing."""

    client: httpx.Client
    clip: Path
    metadata: ClipMetadata
    station: StationKeyFile
    progress: Callable[[int], None]

    def run(self) -> dict[str, Any]:
        self.headers = {
            "Authorization": f"Bearer {upload_token(self.client, self.station)}",
            "Tus-Resumable": "1.0.0",
        }
        url, offset, receipt = self._resume() or self._create()
        self.progress(offset)
        if receipt is None:
            response = self.client.patch(
                url,
                content=_chunks(self.clip, offset, self.progress),
                headers={
                    **self.headers,
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                    "Content-Length": str(self.metadata.size - offset),
                },
            )
            self._check(response, (204,))
            receipt = _receipt_header(response)
        if receipt is None:  # the server acknowledged less than everything: resume
            raise _Retry(f"the upload stopped at {response.headers.get('Upload-Offset')}")
        return receipt

    def _resume(self) -> tuple[str, int, dict[str, Any] | None] | None:
        state_file = upload_state_of(self.clip)
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            return None
        if state.get("sha256") != self.metadata.sha256:
            return None  # another clip under the same name
        response = self.client.head(state["url"], headers=self.headers)
        if response.status_code in (404, 410):  # expired, or refused: start again
            state_file.unlink(missing_ok=True)
            return None
        self._check(response, (200,))
        return state["url"], int(response.headers["Upload-Offset"]), _receipt_header(response)

    def _create(self) -> tuple[str, int, dict[str, Any] | None]:
        metadata = base64.b64encode(self.metadata.model_dump_json().encode()).decode()
        filetype = base64.b64encode(b"video/mp4").decode()
        response = self.client.post(
            "/v1/uploads",
            headers={
                **self.headers,
                "Upload-Length": str(self.metadata.size),
                "Upload-Metadata": f"metadata {metadata},filetype {filetype}",
            },
        )
        self._check(response, (201,))
        url = response.headers["Location"]
        _write_atomically(upload_state_of(self.clip), {"url": url, "sha256": self.metadata.sha256})
        return url, int(response.headers.get("Upload-Offset", 0)), _receipt_header(response)

    def _check(self, response: httpx.Response, expected: tuple[int, ...]) -> None:
        if response.status_code in expected:
            return
        if response.status_code == 502:  # the vault failed on this very request
            raise DockError(f"{self.clip}: failed: {problem(response)}")
        if response.status_code >= 500 or response.status_code in (409, 423, 429, 460):
            raise _Retry(problem(response), _retry_after(response))  # resume and go on
        if response.status_code == 410:  # expired or ended: the next attempt starts afresh
            upload_state_of(self.clip).unlink(missing_ok=True)
            raise _Retry(problem(response))
        raise DockError(f"{self.clip}: refused: {problem(response)}")


def _receipt_header(response: httpx.Response) -> dict[str, Any] | None:
    header = response.headers.get("Temoin-Receipt")
    if header is None:
        return None
    receipt: dict[str, Any] = json.loads(base64.urlsafe_b64decode(header))
    return receipt


FRAME_BITS = 16
"""The frame number, burnt into each simulated clip as a row of black and white blocks."""
FRAME_BAND = 16
"""Height in pixels of that row, at the top of the 640x360 picture."""


def frame_marks(width: int = 640) -> str:
    """ffmpeg filters that burn each frame's number (and its time, in Liberation Sans) into the
    picture: a black band along the top, bit i of the number a white block at the i-th sixteenth
    of the width (least significant bit on the left). A browser test reads the number back from
    a screenshot (tests/fixtures/browser.py) to tell which frame the player shows."""
    from importlib.resources import files

    font = str(files("services.reporting.statistics") / "fonts" / "LiberationSans-Regular.ttf")
    font = font.replace("\\", "\\\\").replace(":", "\\:").replace("'", "\\'")
    block = width // FRAME_BITS
    marks = [f"drawbox=x=0:y=0:w={width}:h={FRAME_BAND}:color=black:t=fill"]
    marks += [
        f"drawbox=x={bit * block}:y=0:w={block}:h={FRAME_BAND}:color=white:t=fill"
        f":enable='mod(floor(n/{2**bit})\\,2)'"
        for bit in range(FRAME_BITS)
    ]
    marks.append(
        f"drawtext=fontfile='{font}':text='%{{pts\\:hms}}  image %{{frame_num}}'"
        ":x=12:y=h-th-12:fontsize=24:fontcolor=white:box=1:boxcolor=black@0.6:boxborderw=6"
    )
    return ",".join(marks)


def _real_mp4(path: Path, seconds: int, title: str) -> None:
    """A playable H.264 + AAC clip (test pattern and tone), via the ffmpeg of imageio-ffmpeg.
    The title (camera and start) makes each clip's bytes unique, as a real camera's are. Each
    frame carries its number and time (frame_marks)."""
    import imageio_ffmpeg

    subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc2=duration={seconds}:size=640x360:rate=25",
            "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
            "-vf", frame_marks(640),
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-movflags", "+faststart", "-metadata", f"title={title}",
            "-y", str(path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )  # fmt: skip


def _random_bytes(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, READ_SIZE))
            handle.write(block)
            remaining -= len(block)


def simulate(
    directory: Path,
    *,
    camera_serial: str,
    count: int,
    seconds: int = 8,
    size: int | None = None,
    start: datetime | None = None,
) -> list[Path]:
    """Make ``count`` clips with their sidecars: real MP4s of ``seconds`` each, or, given a
    ``size``, files of random bytes that large (for load and memory measurements)."""
    directory.mkdir(parents=True, exist_ok=True)
    moment = start or datetime.now(UTC) - timedelta(hours=count)
    clips = []
    for index in range(count):
        clip = directory / f"{camera_serial}_{moment:%Y%m%dT%H%M%S}_{index:03d}.mp4"
        if size is None:
            _real_mp4(clip, seconds, f"{camera_serial} {moment.isoformat()}")
        else:
            _random_bytes(clip, size)
        sidecar_of(clip).write_text(
            json.dumps(
                {
                    "camera_serial": camera_serial,
                    "started_at": moment.isoformat(),
                    "ended_at": (moment + timedelta(seconds=seconds)).isoformat(),
                    "clock_offset_ms": 800,
                    "place": {"latitude": 48.7798, "longitude": 2.3376},
                    "pre_record_s": 30,
                },
                indent=2,
            )
        )
        clips.append(clip)
        moment += timedelta(minutes=20)
    return clips
