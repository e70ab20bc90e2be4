"""Reading a sealed recording back: any byte range of the clip, opening only the chunks that
cover it (one ranged S3 GET), each authenticated before a byte of it is handed on. A chunk
that fails authentication stops the read: nothing unauthenticated is ever served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import anyio.to_thread

from services.vault.recordings.models import Recording
from shared import sealing
from shared.storage import ObjectStore

AHEAD = 2  # chunks read and being opened ahead of the one being sent


class Damaged(Exception):
    """The sealed object failed authentication or is missing: never serve it as valid."""


def _read_exactly(response: Any, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = response.read(size - len(data))
        if not piece:
            break
        data += piece
    return bytes(data)


class SealedReader:
    def __init__(self, store: ObjectStore, recording: Recording, data_key: bytes) -> None:
        self.store = store
        self.recording = recording
        self.key = data_key
        self.chunk_size = recording.chunk_size
        self.count = sealing.chunk_count(recording.size, recording.chunk_size)
        self.header = sealing.Header(recording.chunk_size, recording.id).to_bytes()

    def _sealed_length(self, index: int) -> int:
        plain = min(self.chunk_size, self.recording.size - index * self.chunk_size)
        return plain + sealing.CHUNK_OVERHEAD

    def _open(self, index: int, sealed: bytes) -> bytes:
        try:
            return sealing.open_chunk(
                self.header, self.key, index, sealed, final=index == self.count - 1
            )
        except sealing.SealError as exc:
            raise Damaged(str(exc)) from exc

    def _span(self, start: int, stop: int) -> tuple[int, int, int, int]:
        """The chunks [first, last] that cover [start, stop), and their sealed byte range."""
        if not 0 <= start < stop <= self.recording.size:
            raise ValueError("range outside the clip")
        first, last = start // self.chunk_size, (stop - 1) // self.chunk_size
        offset = sealing.sealed_offset(first, self.chunk_size)
        length = sealing.sealed_offset(last, self.chunk_size) + self._sealed_length(last) - offset
        return first, last, offset, length

    async def read(self, start: int, stop: int) -> bytes:
        """The clip's bytes [start, stop) at once: for a seek, a few chunks, read and opened
        in one worker thread (each hop between the event loop and a thread costs more than
        opening a small chunk)."""
        first, last, offset, length = self._span(start, stop)
        try:
            response = await self.store.open_range(
                self.recording.object_key, self.recording.object_version, offset, length
            )
        except Exception as exc:
            raise Damaged(f"the sealed object cannot be read: {exc}") from exc

        def read_and_open() -> bytes:
            try:
                indices = range(first, last + 1)
                sealed = [_read_exactly(response, self._sealed_length(i)) for i in indices]
            finally:
                response.close()
                response.release_conn()
            opened = [self._open(i, data) for i, data in zip(indices, sealed, strict=True)]
            return b"".join(
                plain[max(start - i * self.chunk_size, 0) : stop - i * self.chunk_size]
                for i, plain in zip(indices, opened, strict=True)
            )

        return await anyio.to_thread.run_sync(read_and_open)

    async def chunks(self, start: int, stop: int) -> AsyncGenerator[bytes, None]:
        """The clip's bytes [start, stop), in pieces of at most a chunk."""
        first, last, offset, length = self._span(start, stop)
        try:
            response = await self.store.open_range(
                self.recording.object_key, self.recording.object_version, offset, length
            )
        except Exception as exc:
            raise Damaged(f"the sealed object cannot be read: {exc}") from exc

        # A pipeline: the object is read in order by one task while earlier chunks are opened
        # in worker threads (both release the GIL) and sent; AHEAD chunks at most in between.
        opened: asyncio.Queue[asyncio.Future[bytes]] = asyncio.Queue(maxsize=AHEAD)

        async def read_all() -> None:
            for index in range(first, last + 1):
                future: asyncio.Future[bytes]
                try:
                    sealed = await anyio.to_thread.run_sync(
                        _read_exactly, response, self._sealed_length(index)
                    )
                    future = asyncio.ensure_future(
                        anyio.to_thread.run_sync(self._open, index, sealed)
                    )
                except Exception as exc:  # handed to the consumer, in order
                    future = asyncio.get_running_loop().create_future()
                    future.set_exception(Damaged(f"the sealed object cannot be read: {exc}"))
                    await opened.put(future)
                    return
                await opened.put(future)

        reader = asyncio.create_task(read_all())
        try:
            for index in range(first, last + 1):
                plain = await (await opened.get())
                base = index * self.chunk_size
                yield plain[max(start - base, 0) : stop - base]
        finally:
            reader.cancel()
            leftovers: list[asyncio.Future[Any]] = [reader]
            while not opened.empty():
                leftovers.append(opened.get_nowait())
            for future in leftovers:
                future.cancel()
            await asyncio.gather(*leftovers, return_exceptions=True)
            response.close()
            response.release_conn()
