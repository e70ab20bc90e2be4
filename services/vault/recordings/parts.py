"""Sealing a clip into an S3 multipart upload as it streams in: the write path of both upload
protocols (single request and resumable).

Each part is a whole number of sealed chunks (the first part also carries the header), so a
part can be sealed as soon as its plaintext has arrived: the chunk indices and the final flag
follow from the part's offset and the clip's declared length. Two parts at most are in flight
while the next one fills; sealing and the S3 calls run in worker threads. Memory is about
three parts, whatever the clip's size, and no plaintext goes to disk.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import anyio.to_thread

from shared import sealing
from shared.hashing import ResumableSha256
from shared.storage import ObjectStore

IN_FLIGHT = 2


class PartWriter:
    def __init__(
        self,
        store: ObjectStore,
        *,
        object_key: str,
        multipart_id: str,
        recording_id: uuid.UUID,
        data_key: bytes,
        chunk_size: int,
        part_size: int,
        length: int,
        offset: int = 0,
        etags: Sequence[str] = (),
        pending: bytes = b"",
        hash_state: bytes | None = None,
    ) -> None:
        """``offset``, ``etags``, ``pending`` (the plaintext after the last whole part) and
        ``hash_state`` resume an upload where an earlier writer stopped."""
        if part_size % chunk_size:
            raise ValueError("a part is a whole number of chunks")
        self.store = store
        self.object_key = object_key
        self.multipart_id = multipart_id
        self.key = data_key
        self.chunk_size = chunk_size
        self.part_size = part_size
        self.length = length
        self.header = sealing.Header(chunk_size, recording_id).to_bytes()
        self.hash = ResumableSha256(hash_state)
        self.offset = offset  # plaintext received, sent or pending
        self.etags = list(etags)  # of the parts sent, in order
        self.pending = bytearray(pending)
        self._next_part = len(self.etags) + 1
        self._in_flight: list[asyncio.Task[str]] = []

    async def write(self, piece: bytes) -> None:
        """Take the next bytes of the clip (the caller keeps the total within ``length``)."""
        self.hash.update(piece)
        self.pending += piece
        self.offset += len(piece)
        while len(self.pending) >= self.part_size:
            await self._send(self.part_size)
        if self.offset == self.length and self.pending:
            await self._send(len(self.pending))  # the last part may be short

    async def drain(self) -> list[str]:
        """Wait for the parts in flight; the etags of every part sent, in order."""
        while self._in_flight:
            await self._collect_one()
        return self.etags

    async def abandon(self) -> None:
        """Stop the parts in flight (their bytes are not going to be acknowledged)."""
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._in_flight = []

    async def _send(self, size: int) -> None:
        # The part's buffer goes to its task as it is; only what follows it is copied.
        plain, self.pending = self.pending, self.pending[size:]
        del plain[size:]
        if len(self._in_flight) >= IN_FLIGHT:
            await self._collect_one()
        number, self._next_part = self._next_part, self._next_part + 1
        self._in_flight.append(asyncio.create_task(self._seal_and_upload(number, plain)))

    async def _collect_one(self) -> None:
        self.etags.append(await self._in_flight.pop(0))

    async def _seal_and_upload(self, number: int, plain: bytearray) -> str:
        sealed = await anyio.to_thread.run_sync(self._seal, number, plain)
        del plain  # only the sealed part is held while it is sent
        return await self.store.upload_part(self.object_key, self.multipart_id, number, sealed)

    def _seal(self, number: int, plain: bytearray) -> bytearray:
        first_chunk = (number - 1) * (self.part_size // self.chunk_size)
        start = (number - 1) * self.part_size  # the part's plaintext offset in the clip
        header = self.header if number == 1 else b""
        chunks = -(-len(plain) // self.chunk_size)
        sealed = bytearray(len(header) + len(plain) + chunks * sealing.CHUNK_OVERHEAD)
        sealed[: len(header)] = header
        at = len(header)
        # Each chunk is sealed from the part's buffer straight into the sealed part's.
        with memoryview(plain) as source, memoryview(sealed) as target:
            for i in range(chunks):
                chunk = source[i * self.chunk_size : (i + 1) * self.chunk_size]
                final = start + i * self.chunk_size + len(chunk) == self.length
                end = at + len(chunk) + sealing.CHUNK_OVERHEAD
                sealing.seal_chunk_into(
                    self.header, self.key, first_chunk + i, chunk, final, target[at:end]
                )
                at = end
        return sealed
