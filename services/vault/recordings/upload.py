"""The bridge between a clip's request body (async) and the S3 SDK (a blocking reader in a
worker thread): each read pulls plaintext from the request, hashes it, seals it, and hands on
sealed bytes. At the end it checks the declared size and SHA-256; a mismatch raises, so the
SDK aborts the multipart upload and nothing is stored. Only a chunk or so is ever in memory,
and no plaintext touches disk."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import anyio.from_thread

from shared.sealing import Sealer


class UploadRejected(Exception):
    """The body did not match what was declared."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # "too_large", "truncated", "sha256"
        self.detail = detail


class SealingReader:
    def __init__(
        self, body: AsyncIterator[bytes], sealer: Sealer, *, size: int, sha256: str
    ) -> None:
        self._body = body
        self._sealer = sealer
        self._declared_size = size
        self._declared_sha256 = sha256
        self._hash = hashlib.sha256()
        self._received = 0
        self._out = bytearray()
        self._eof = False

    async def _next_chunk(self) -> bytes | None:
        """About one sealed chunk of the body (None at its end). The body arrives in pieces
        of ~64 KiB; gathering them here makes one thread-to-loop crossing per chunk rather
        than one per piece, which is most of the bridge's cost."""
        pieces: list[bytes] = []
        gathered = 0
        while gathered < self._sealer.header.chunk_size:
            try:
                piece = await anext(self._body)
            except StopAsyncIteration:
                break
            pieces.append(piece)
            gathered += len(piece)
        return b"".join(pieces) if pieces else None

    def _pull(self) -> None:
        chunk = anyio.from_thread.run(self._next_chunk)
        if not chunk:
            self._finish()
            return
        self._received += len(chunk)
        if self._received > self._declared_size:
            raise UploadRejected(
                "too_large", f"more than the declared {self._declared_size} bytes were sent"
            )
        self._hash.update(chunk)
        self._out += self._sealer.update(chunk)

    def _finish(self) -> None:
        if self._received != self._declared_size:
            raise UploadRejected(
                "truncated",
                f"the body ended after {self._received} of {self._declared_size} bytes",
            )
        if self._hash.hexdigest() != self._declared_sha256:
            raise UploadRejected(
                "sha256", "the clip's SHA-256 differs from the declared one: not stored"
            )
        self._out += self._sealer.finish()
        self._eof = True

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._out) < size):
            self._pull()
        if size < 0:
            size = len(self._out)
        with memoryview(self._out) as view:
            data = bytes(view[:size])  # one copy (slicing the bytearray first made two)
        del self._out[:size]
        return data

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()
