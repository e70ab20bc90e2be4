"""The anonymisation runner: makes the anonymised copies asked for (service.py), one job at a
time per vault process, in the background of the vault's lifespan.

The engine (engine.py) reads the original from a URL: an MP4 whose index (moov) is at its end
cannot be demuxed from a pipe, and no plaintext may touch the disk. So for the length of a job
the original's plaintext is served, through the sealed reader (each chunk authenticated before
it is handed on), on a loopback HTTP server: 127.0.0.1, a port the system picks, an
unguessable path, with byte ranges; it stops with the job. The engine's output is sealed as it
comes, under the copy's own data key, into an S3 multipart upload under COMPLIANCE retention
(the part writer new recordings use, parts.py), and registered only once complete.

Several vault processes may run the job: a job is claimed with ``FOR UPDATE SKIP LOCKED``; its
worker writes a heartbeat; a job whose heartbeat stopped (its worker died, the vault
restarted) is claimed again and started from zero under a new attempt, after its earlier
multipart upload is aborted. A worker that finds the job no longer its own (another attempt
took it over) stops and registers nothing: never two copies. An object completed by an
attempt that could not register it is named by no row: the erasure job's orphan sweep deletes
it once its lock allows, as it does for recordings (services/vault/recordings/erasure.py)."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio.from_thread
import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.derivatives.models import DERIVATIVES_PREFIX, Derivative, DerivativeStatus
from services.vault.derivatives.repository import DerivativeRepository
from services.vault.derivatives.service import log_finished
from services.vault.recordings.keys import unwrap_data_key, wrap_data_key
from services.vault.recordings.media import Unsatisfiable, parse_range
from services.vault.recordings.models import Recording, RecordingStatus
from services.vault.recordings.parts import PartWriter
from services.vault.recordings.reading import Damaged, SealedReader
from services.vault.settings import VaultSettings
from shared import sealing
from shared.db import session_scope, try_job_lock, utc_now
from shared.storage import MultipartGone, ObjectStore, StorageError
from shared.web import job_failed

_logger = logging.getLogger("temoin.vault.derivatives")
ACTOR = "temoin-vault:derivatives"
UNKNOWN_LENGTH = 1 << 62  # the part writer's length until the copy's end is known
# A job's reasons are read by people (the dashboard shows them): in French, like the engine's.
CANCELLED = "Fabrication annulée."
ERASED = "L'enregistrement original a été effacé."
DAMAGED = "L'enregistrement original a échoué au contrôle d'intégrité."


# --- the original, on loopback -------------------------------------------------------------


class PlaintextServer:
    """The original's plaintext for one job: 127.0.0.1 only, a random port, a path nobody
    can guess (another local process could otherwise read the clip), byte ranges (RFC 9110)."""

    def __init__(self, reader: SealedReader, content_type: str) -> None:
        self.reader = reader
        self.content_type = content_type
        self.path = "/" + secrets.token_urlsafe(32)
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_HEAD(self) -> None:
                server._answer(self, body=False)

            def do_GET(self) -> None:
                server._answer(self, body=True)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the URL is a secret for the job's length: never logged

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="derivative-source", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._http.server_address[:2]
        return f"http://{host!s}:{port}{self.path}"

    def __enter__(self) -> PlaintextServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def _answer(self, handler: BaseHTTPRequestHandler, *, body: bool) -> None:
        self.requests += 1
        size = self.reader.recording.size
        if not hmac.compare_digest(handler.path.encode(), self.path.encode()):
            handler.send_response(404)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        try:
            wanted = parse_range(handler.headers.get("Range"), size)
        except Unsatisfiable:
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{size}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        start, stop = wanted or (0, size)
        handler.send_response(206 if wanted else 200)
        handler.send_header("Content-Type", self.content_type)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(stop - start))
        if wanted:
            handler.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        handler.end_headers()
        if not body or stop == start:
            return
        try:
            for piece in self.reader.pieces(start, stop):
                handler.wfile.write(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # ffmpeg seeks by dropping a connection: normal
        except Exception as exc:  # a damaged chunk or the store away: cut the answer short
            _logger.warning("derivative source: read of the original stopped: %s", exc)
            handler.close_connection = True


# --- the copy, sealed as it comes -----------------------------------------------------------


class SealingSink:
    """The engine's output into the part writer, whose length is unknown until the end: whole
    parts are handed on only while at least one byte more is held back, so the last part (and
    its final chunk) is written once the length is settled."""

    def __init__(self, writer: PartWriter) -> None:
        self.writer = writer
        self.held = bytearray()

    async def write(self, data: bytes) -> None:
        self.held += data
        size = self.writer.part_size
        while len(self.held) > size:
            part = bytes(self.held[:size])
            del self.held[:size]
            await self.writer.write(part)

    async def finish(self) -> tuple[int, list[str]]:
        """The copy's length and the etags of all its parts."""
        length = self.writer.offset + len(self.held)
        self.writer.settle_length(length)
        if self.held:
            await self.writer.write(bytes(self.held))
            self.held.clear()
        return length, await self.writer.drain()


# --- the job ---------------------------------------------------------------------------------


@dataclass
class Claimed:
    derivative_id: uuid.UUID
    attempt: int


@dataclass
class Prepared:
    derivative: Derivative
    recording: Recording
    original_key: bytes
    data_key: bytes


class JobRunner:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        settings: VaultSettings,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.store = store
        self.settings = settings

    async def run_once(self) -> uuid.UUID | None:
        """Claim one job and run it to its end; the id of the job run, or None."""
        claimed = await self._claim()
        if claimed is None:
            return None
        prepared = await self._prepare(claimed)
        if prepared is not None:
            await self._run(claimed, prepared)
        return claimed.derivative_id

    async def _claim(self) -> Claimed | None:
        now = utc_now()
        stale = now - timedelta(seconds=self.settings.derivative_stale_s)
        async with session_scope(self.sessionmaker) as session:
            derivative = await DerivativeRepository(session).claim(stale)
            if derivative is None:
                return None
            if derivative.multipart_id is not None and derivative.object_key is not None:
                # An attempt died: its parts go, before anyone else can start another.
                _logger.warning("derivative %s: attempt %d died, starting again from zero",
                                derivative.id, derivative.attempt)  # fmt: skip
                await self._abort(derivative.object_key, derivative.multipart_id)
            derivative.multipart_id = None
            derivative.object_key = None
            derivative.wrapped_key = None
            derivative.frames_done = 0
            derivative.frames_total = None
            if derivative.cancel_requested:
                await self._end(session, derivative, DerivativeStatus.annule, CANCELLED)
                return None
            derivative.attempt += 1
            derivative.status = DerivativeStatus.en_cours.value
            derivative.heartbeat_at = now
            claimed = Claimed(derivative.id, derivative.attempt)
        return claimed

    async def _prepare(self, claimed: Claimed) -> Prepared | None:
        """The copy's data key and its multipart upload, committed before the first part: a
        crash from here leaves the row naming the upload to abort."""
        async with session_scope(self.sessionmaker) as session:
            derivative = await self._own(session, claimed)
            if derivative is None:
                return None
            recording = await session.get(Recording, derivative.recording_id)
            assert recording is not None
            if recording.status != RecordingStatus.sealed.value or recording.wrapped_key is None:
                reason = DAMAGED if recording.status == RecordingStatus.damaged.value else ERASED
                await self._end(session, derivative, DerivativeStatus.echec, reason)
                return None
            original_key = unwrap_data_key(
                self.settings, recording.wrapped_key, recording.kek_id, recording.id
            )
            data_key = sealing.new_data_key()
            derivative.wrapped_key = wrap_data_key(self.settings, data_key, derivative.id)
            derivative.kek_id = self.settings.kek_id
            derivative.chunk_size = self.settings.chunk_size
            derivative.content_type = "video/mp4"
            # Locked as long as its original's retention (R241-13), and never less than any
            # sealed object. Not the original's hold: the copy is erased with its original by
            # its key (crypto-erasure), whenever that is; its object follows once unlocked.
            derivative.locked_until = max(
                recording.retain_until,
                utc_now() + timedelta(seconds=self.settings.minimum_lock_s),
            )
            key = (
                f"{DERIVATIVES_PREFIX}{derivative.organisation_id}/"
                f"{derivative.id}-{claimed.attempt}.sealed"
            )
            derivative.multipart_id = await self.store.start_multipart(
                key, retain_until=derivative.locked_until
            )
            derivative.object_key = key
        return Prepared(derivative, recording, original_key, data_key)

    async def _run(self, claimed: Claimed, prepared: Prepared) -> None:
        from services.vault.derivatives import engine

        derivative = prepared.derivative
        assert derivative.object_key is not None and derivative.multipart_id is not None
        writer = PartWriter(
            self.store,
            object_key=derivative.object_key,
            multipart_id=derivative.multipart_id,
            recording_id=derivative.id,
            data_key=prepared.data_key,
            chunk_size=derivative.chunk_size,
            part_size=self.settings.part_size,
            length=UNKNOWN_LENGTH,
        )
        sink = SealingSink(writer)
        progress: list[int | None] = [0, None]
        cancel = threading.Event()
        lost = threading.Event()

        def on_progress(done: int, total: int | None) -> None:
            progress[0], progress[1] = done, total

        def to_sink(data: bytes) -> None:
            anyio.from_thread.run(sink.write, data)

        parameters = engine.Parameters(
            **{
                name: value
                for name, value in derivative.parameters.items()
                if name in engine.Parameters.__dataclass_fields__
            }
        )
        reader = SealedReader(self.store, prepared.recording, prepared.original_key)
        heart = asyncio.create_task(self._heartbeat(claimed, progress, cancel, lost))
        outcome: tuple[DerivativeStatus, str] | None = None
        result: Any = None
        try:
            with PlaintextServer(reader, prepared.recording.content_type) as source:
                # Abandoned on cancellation (the vault shutting down): ``cancel`` is set below,
                # the engine stops its ffmpegs at its next frame, and the job, still claimed,
                # starts again from zero once its heartbeat is stale.
                result = await anyio.to_thread.run_sync(
                    lambda: engine.anonymise(
                        source.url, to_sink, parameters, on_progress, cancel.is_set
                    ),
                    abandon_on_cancel=True,
                )
            length, etags = await sink.finish()
        except engine.Undecodable as exc:
            outcome = (DerivativeStatus.echec, str(exc))  # the engine's reason, in French
        except engine.Cancelled:
            outcome = (DerivativeStatus.annule, CANCELLED)
        except Damaged:
            outcome = (DerivativeStatus.echec, DAMAGED)
        except StorageError:
            # The store away: the job stays claimed, its heartbeat stops, and it starts again
            # from zero once stale (its parts aborted then).
            await writer.abandon()
            raise
        except Exception as exc:
            _logger.error("derivative %s failed", derivative.id, exc_info=exc)
            outcome = (
                DerivativeStatus.echec,
                f"L'anonymisation a échoué ({type(exc).__name__}) ; l'erreur est consignée.",
            )
        finally:
            cancel.set()  # whatever happened, the engine's thread is done or told to stop
            heart.cancel()
            await asyncio.gather(heart, return_exceptions=True)
        if outcome is not None:
            await writer.abandon()
            await self._abort(derivative.object_key, derivative.multipart_id)
            if not lost.is_set():
                await self._finish_failed(claimed, *outcome)
            return
        version = await self.store.complete_multipart(
            derivative.object_key, derivative.multipart_id, etags
        )
        await self._register(claimed, writer, length, version, result)

    async def _heartbeat(
        self,
        claimed: Claimed,
        progress: list[int | None],
        cancel: threading.Event,
        lost: threading.Event,
    ) -> None:
        while True:
            await asyncio.sleep(self.settings.derivative_heartbeat_s)
            try:
                async with session_scope(self.sessionmaker) as session:
                    asked = await DerivativeRepository(session).beat(
                        claimed.derivative_id,
                        claimed.attempt,
                        utc_now(),
                        progress[0] or 0,
                        progress[1],
                    )
            except Exception as exc:  # the database away: the engine goes on meanwhile
                job_failed(_logger, "derivative heartbeat", exc)
                continue
            if asked is None:
                lost.set()
            if asked is None or asked:
                cancel.set()
                return

    async def _register(
        self, claimed: Claimed, writer: PartWriter, length: int, version: str | None, result: Any
    ) -> None:
        """The copy and its `derivation_finished` entry in one transaction, only if the job
        is still this attempt's and its original still there."""
        async with session_scope(self.sessionmaker) as session:
            # The recording locked before its copy, in the order the erasure job (and a
            # demande) take them: the two never wait on each other in a cycle.
            recording_id = await DerivativeRepository(session).recording_of(claimed.derivative_id)
            recording = await session.get(Recording, recording_id)
            assert recording is not None
            await session.refresh(recording, with_for_update=True)
            derivative = await self._own(session, claimed)
            if derivative is None:
                return  # another attempt owns it: this object is an orphan (swept)
            if derivative.cancel_requested or recording.status == RecordingStatus.erased.value:
                reason = CANCELLED if derivative.cancel_requested else ERASED
                status = (
                    DerivativeStatus.annule
                    if derivative.cancel_requested
                    else DerivativeStatus.echec
                )
                await self._end(session, derivative, status, reason)
                return
            derivative.status = DerivativeStatus.a_verifier.value
            derivative.object_version = version
            derivative.multipart_id = None
            derivative.size = length
            derivative.sealed_size = sealing.sealed_size(length, derivative.chunk_size)
            derivative.sha256 = writer.hash.hexdigest()
            derivative.result = _result(result)
            derivative.frames_done = derivative.frames_total = derivative.result.get("frames", 0)
            derivative.finished_at = utc_now()
            await session.flush()
            await log_finished(session, derivative, recording, ACTOR)

    async def _finish_failed(self, claimed: Claimed, status: DerivativeStatus, reason: str) -> None:
        async with session_scope(self.sessionmaker) as session:
            derivative = await self._own(session, claimed)
            if derivative is not None:
                await self._end(session, derivative, status, reason)

    async def _own(self, session: AsyncSession, claimed: Claimed) -> Derivative | None:
        derivative = await DerivativeRepository(session).for_update(claimed.derivative_id)
        if (
            derivative is None
            or derivative.attempt != claimed.attempt
            or derivative.status != DerivativeStatus.en_cours.value
        ):
            return None
        return derivative

    async def _end(
        self, session: AsyncSession, derivative: Derivative, status: DerivativeStatus, reason: str
    ) -> None:
        """Nothing registered: no object, no key; the end logged with its reason."""
        derivative.status = status.value
        derivative.reason = reason
        derivative.finished_at = utc_now()
        derivative.object_key = None
        derivative.multipart_id = None
        derivative.wrapped_key = None
        recording = await session.get(Recording, derivative.recording_id)
        assert recording is not None
        await session.flush()
        await log_finished(session, derivative, recording, ACTOR)

    async def _abort(self, key: str | None, multipart_id: str | None) -> None:
        if key is None or multipart_id is None:
            return
        try:
            await self.store.abort_multipart(key, multipart_id)
        except MultipartGone:
            pass  # aborted already, or completed: then an orphan the sweep deletes

    async def sweep_store(self, older_than: timedelta) -> list[str]:
        """Abort the multipart uploads under ``derivatives/`` that no job names (a crash
        between the store's start of one and its row's commit)."""
        async with session_scope(self.sessionmaker) as session:
            if not await try_job_lock(session, "vault:derivative-multipart-sweep"):
                return []
            uploads = await self.store.list_multipart_uploads(DERIVATIVES_PREFIX)
            named = await DerivativeRepository(session).object_keys({k for k, _, _ in uploads})
            cutoff = utc_now() - older_than
            aborted = []
            for key, upload_id, started in uploads:
                if key in named or started is None or started > cutoff:
                    continue
                await self._abort(key, upload_id)
                aborted.append(key)
            return aborted


def _result(result: Any) -> dict[str, Any]:
    """The engine's Result as JSON (a dataclass; anything else as it is)."""
    if result is None:
        return {}
    try:
        data: dict[str, Any] = asdict(result)
    except TypeError:
        data = dict(result)
    # Through JSON once, so that a number from numpy is stored as a number.
    plain: dict[str, Any] = json.loads(json.dumps(data, default=_number))
    return plain


def _number(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


async def anonymisation_job(
    sessionmaker: async_sessionmaker[AsyncSession], store: ObjectStore, settings: VaultSettings
) -> None:
    """The vault's background task: one job after another, then a pause."""
    runner = JobRunner(sessionmaker, store, settings)
    swept_at: datetime | None = None
    while True:
        ran = None
        try:
            ran = await runner.run_once()
            if swept_at is None or utc_now() - swept_at > timedelta(hours=1):
                swept_at = utc_now()
                for key in await runner.sweep_store(
                    timedelta(seconds=settings.stray_multipart_after_s)
                ):
                    _logger.warning("aborted a multipart upload no anonymisation job owns: %s", key)
        except Exception as exc:
            job_failed(_logger, "anonymisation", exc)
        if ran is None:
            await asyncio.sleep(settings.derivative_interval_s)
