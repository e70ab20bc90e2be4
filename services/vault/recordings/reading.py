"""Reading a sealed recording back: any byte range of the clip, opening only the chunks that
cover it (one ranged S3 GET), each authenticated before a byte of it is handed on. A chunk
that fails authentication stops the read: nothing unauthenticated is ever served.

Two kinds of failure, kept apart because only one of them says anything about the evidence:
``Damaged`` (an authentication tag fails, the object is missing or shorter than the registry
says) and the store's own ``StorageError`` (connection refused or cut, timeout: try later)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncGenerator, Iterator
from typing import Protocol

import anyio.to_thread

from shared import sealing
from shared.errors import Conflict
from shared.storage import Body, ObjectMissing, ObjectStore

AHEAD = 2  # batches read and opened ahead of the one being sent
BATCH = 1 << 20  # plaintext handed to the event loop at a time, when streaming


class Damaged(Conflict):
    """The sealed object (or its wrapped key) failed authentication, or is missing or shorter
    than the registry says: never serve it as valid (409 when a request meets it)."""

    title = "Integrity check failed"
    slug = "damaged"

    def __init__(self, problem: str) -> None:
        super().__init__(f"this recording failed its integrity check: {problem}")
        self.problem = problem


def _read_exactly(response: Body, size: int) -> bytes | bytearray:
    """``size`` bytes; an answer that ends cleanly before them is an object shorter than the
    registry says (a connection cut mid-answer raises StorageUnavailable instead)."""
    first = response.read(size)
    if len(first) == size:  # the usual case: no copy
        return first
    data = bytearray(size)
    data[: len(first)] = first
    filled = len(first)
    while filled < size:
        piece = response.read(size - filled)
        if not piece:
            raise Damaged(f"the sealed object ends {size - filled} bytes early")
        data[filled : filled + len(piece)] = piece
        filled += len(piece)
    return data


class SealedObject(Protocol):
    """What reading needs of a sealed object's row: a recording, or its anonymised copy
    (services/vault/derivatives/), each sealed under its own id and data key."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def size(self) -> int: ...
    @property
    def chunk_size(self) -> int: ...
    @property
    def object_key(self) -> str | None: ...
    @property
    def object_version(self) -> str | None: ...


class SealedReader:
    def __init__(self, store: ObjectStore, recording: SealedObject, data_key: bytes) -> None:
        self.store = store
        self.recording = recording
        self.key = data_key
        self.chunk_size = recording.chunk_size
        self.count = sealing.chunk_count(recording.size, recording.chunk_size)
        self.header = sealing.Header(recording.chunk_size, recording.id).to_bytes()

    def _span(self, start: int, stop: int) -> tuple[int, int]:
        """The chunks [first, last] that cover the clip's bytes [start, stop)."""
        if not 0 <= start < stop <= self.recording.size:
            raise ValueError("range outside the clip")
        return start // self.chunk_size, (stop - 1) // self.chunk_size

    def _sealed_length(self, first: int, last: int) -> int:
        """The length of sealed chunks [first, last] (the last chunk may be short)."""
        end = sealing.sealed_offset(last + 1, self.chunk_size)
        if last == self.count - 1:
            end = sealing.sealed_size(self.recording.size, self.chunk_size)
        return end - sealing.sealed_offset(first, self.chunk_size)

    def _get(self, first: int, last: int) -> Body:
        """Blocking: the S3 answer carrying sealed chunks [first, last]."""
        offset = sealing.sealed_offset(first, self.chunk_size)
        length = self._sealed_length(first, last)
        if self.recording.object_key is None:
            raise Damaged("no sealed object is registered for it")
        try:
            return self.store.get_range(
                self.recording.object_key, self.recording.object_version, offset, length
            )
        except ObjectMissing as exc:
            raise Damaged(f"the sealed object is missing: {exc}") from exc

    def _read_and_open(
        self, response: Body, first: int, last: int, start: int, stop: int
    ) -> memoryview:
        """Blocking: read chunks [first, last] from ``response``, authenticate and open each
        into one buffer, and return their plaintext within the clip's bytes [start, stop)."""
        sealed = _read_exactly(response, self._sealed_length(first, last))
        base = first * self.chunk_size
        plain = bytearray(min((last + 1) * self.chunk_size, self.recording.size) - base)
        with memoryview(sealed) as source, memoryview(plain) as target:
            at = 0
            for index in range(first, last + 1):
                offset = index * self.chunk_size - base
                size = min(self.chunk_size, self.recording.size - base - offset)
                try:
                    sealing.open_chunk_into(
                        self.header,
                        self.key,
                        index,
                        source[at : at + size + sealing.CHUNK_OVERHEAD],
                        self.count - 1 == index,
                        target[offset : offset + size],
                    )
                except sealing.SealError as exc:
                    raise Damaged(str(exc)) from exc
                at += size + sealing.CHUNK_OVERHEAD
        return memoryview(plain)[max(start - base, 0) : stop - base]

    async def read(self, start: int, stop: int) -> memoryview:
        """The clip's bytes [start, stop) at once: for a seek, a few chunks, fetched, read and
        opened in one worker thread (each hop between the event loop and a thread costs more
        than opening a small chunk)."""
        first, last = self._span(start, stop)

        def fetch() -> memoryview:
            response = self._get(first, last)
            try:
                return self._read_and_open(response, first, last, start, stop)
            finally:
                response.close()

        return await anyio.to_thread.run_sync(fetch)

    def pieces(self, start: int, stop: int) -> Iterator[memoryview]:
        """Blocking: the clip's bytes [start, stop) in pieces of about BATCH bytes, from one
        ranged GET, for a caller that is itself a worker thread (the anonymisation job's
        loopback server, services/vault/derivatives/jobs.py)."""
        first, last = self._span(start, stop)
        per_batch = max(1, BATCH // self.chunk_size)
        response = self._get(first, last)
        try:
            for batch in range(first, last + 1, per_batch):
                end = min(batch + per_batch - 1, last)
                yield self._read_and_open(response, batch, end, start, stop)
        finally:
            response.close()

    async def chunks(self, start: int, stop: int) -> AsyncGenerator[memoryview, None]:
        """The clip's bytes [start, stop), in pieces of about BATCH bytes."""
        first, last = self._span(start, stop)
        per_batch = max(1, BATCH // self.chunk_size)
        loop = asyncio.get_running_loop()
        ready: asyncio.Queue[memoryview | Exception] = asyncio.Queue()
        room = threading.Semaphore(AHEAD)
        stopping = threading.Event()

        # One thread reads the object in order and opens it, batch by batch (both release the
        # GIL), while the event loop sends the batches before: one hand-off per batch, and at
        # most AHEAD batches waiting. The thread stops at the next batch once told to.
        def hand_over(item: memoryview | Exception) -> None:
            if stopping.is_set():
                return
            try:
                loop.call_soon_threadsafe(ready.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is waiting any more
                stopping.set()

        def produce() -> None:
            try:
                response = self._get(first, last)
            except Exception as exc:  # Damaged or StorageError: the consumer raises it
                hand_over(exc)
                return
            try:
                for batch in range(first, last + 1, per_batch):
                    room.acquire()
                    if stopping.is_set():
                        return
                    end = min(batch + per_batch - 1, last)
                    hand_over(self._read_and_open(response, batch, end, start, stop))
            except Exception as exc:  # handed to the consumer, in order
                hand_over(exc)
            finally:
                response.close()

        threading.Thread(target=produce, name="sealed-reader", daemon=True).start()
        try:
            remaining = stop - start
            while remaining:
                item = await ready.get()
                room.release()
                if isinstance(item, Exception):
                    raise item
                remaining -= len(item)
                yield item
        finally:
            stopping.set()
            room.release()  # a thread waiting for room wakes, sees it is told to stop
