"""Sealing a clip into an S3 multipart upload as it streams in: the write path of both upload
protocols (single request and resumable).

Each part is a whole number of sealed chunks (the first part also carries the header), so a
part can be sealed as soon as its plaintext has arrived: the chunk indices and the final flag
follow from the part's offset and the clip's declared length. The plaintext is copied once,
into the buffer of the sealed part at the place of each chunk's ciphertext, and sealed there
in a worker thread. Two parts at most are in flight while the next one fills: memory is about
three parts, whatever the clip's size, and no plaintext goes to disk.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator, Sequence

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
        """``offset``, ``etags``, ``pending`` (the plaintext after the last whole part, already
        hashed) and ``hash_state`` resume an upload where an earlier writer stopped."""
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
        self.offset = offset  # plaintext received, sent or in the part being filled
        self.etags = list(etags)  # of the parts sent, in order
        self._number = len(self.etags) + 1  # of the part being filled
        self._part: bytearray | None = None  # its sealed layout, allocated with its first byte
        self._filled = 0  # plaintext bytes in it
        self._in_flight: list[asyncio.Task[str]] = []
        if pending:
            self._place(memoryview(pending))

    @property
    def pending(self) -> bytes:
        """The plaintext of the part being filled (a resumable upload keeps it, sealed)."""
        if self._part is None:
            return b""
        with memoryview(self._part) as view:
            return b"".join(
                view[at : at + size] for at, size in self._slots(self._number, self._filled)
            )

    async def write(self, piece: bytes) -> None:
        """Take the next bytes of the clip (the caller refuses what goes beyond ``length``)."""
        if self.offset + len(piece) > self.length:
            raise ValueError("more bytes than the clip's declared length")
        self.hash.update(piece)
        self.offset += len(piece)
        with memoryview(piece) as view:
            while view:
                room = self._plain_size(self._number) - self._filled
                self._place(view[:room])
                view = view[room:]
                if self._filled == self._plain_size(self._number):
                    await self._send()

    def settle_length(self, length: int) -> None:
        """For a stream whose length is known only at its end (an anonymised copy as it is
        encoded, services/vault/derivatives/jobs.py): the writer was made with a length beyond
        any it will reach, and fed whole parts only while more bytes were known to follow; the
        true length is set before the last part's first byte, so that part's size and its
        final chunk follow from it."""
        if length < self.offset or self._part is not None:
            raise ValueError("the length is settled before the last part, at or past the offset")
        self.length = length

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

    # --- the layout of a part ----------------------------------------------------------------

    def _plain_size(self, number: int) -> int:
        """The plaintext bytes of part ``number`` (the last part may be short)."""
        return min(self.part_size, self.length - (number - 1) * self.part_size)

    def _header_size(self, number: int) -> int:
        return len(self.header) if number == 1 else 0  # the object's header opens part 1

    def _slots(self, number: int, plain: int) -> Iterator[tuple[int, int]]:
        """Where the first ``plain`` bytes of part ``number`` go in its sealed layout: for each
        of its chunks, the offset of its plaintext (after the nonce) and its size."""
        at = self._header_size(number)
        for start in range(0, plain, self.chunk_size):
            yield at + sealing.NONCE_SIZE, min(self.chunk_size, plain - start)
            at += self.chunk_size + sealing.CHUNK_OVERHEAD

    def _place(self, data: memoryview) -> None:
        """Copy ``data`` (at most what the part lacks) into the part's chunks."""
        if self._part is None:
            plain = self._plain_size(self._number)
            header = self._header_size(self._number)
            chunks = -(-plain // self.chunk_size)
            self._part = bytearray(header + plain + chunks * sealing.CHUNK_OVERHEAD)
            self._part[:header] = self.header[:header]
        while data:
            chunk, within = divmod(self._filled, self.chunk_size)
            at = self._header_size(self._number) + sealing.NONCE_SIZE + within
            at += chunk * (self.chunk_size + sealing.CHUNK_OVERHEAD)
            size = min(self.chunk_size - within, len(data))
            self._part[at : at + size] = data[:size]
            data = data[size:]
            self._filled += size

    # --- sealing and sending -----------------------------------------------------------------

    async def _send(self) -> None:
        assert self._part is not None
        part, number = self._part, self._number
        self._part, self._filled, self._number = None, 0, number + 1
        if len(self._in_flight) >= IN_FLIGHT:
            await self._collect_one()
        self._in_flight.append(asyncio.create_task(self._seal_and_upload(number, part)))

    async def _collect_one(self) -> None:
        self.etags.append(await self._in_flight.pop(0))

    async def _seal_and_upload(self, number: int, part: bytearray) -> str:
        await anyio.to_thread.run_sync(self._seal, number, part)
        return await self.store.upload_part(self.object_key, self.multipart_id, number, part)

    def _seal(self, number: int, part: bytearray) -> None:
        """Seal the part's chunks where they lie."""
        first_chunk = (number - 1) * (self.part_size // self.chunk_size)
        start = (number - 1) * self.part_size  # the part's plaintext offset in the clip
        scratch = bytearray(self.chunk_size + sealing.TAG_SIZE)
        with memoryview(part) as view, memoryview(scratch) as out:
            for i, (at, size) in enumerate(self._slots(number, self._plain_size(number))):
                final = start + i * self.chunk_size + size == self.length
                slot = view[at - sealing.NONCE_SIZE : at + size + sealing.TAG_SIZE]
                sealing.seal_chunk_in_place(
                    self.header, self.key, first_chunk + i, slot, final, out
                )
