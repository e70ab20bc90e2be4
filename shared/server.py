"""How every service is served: uvicorn, with one change on the path of request bodies.

uvicorn's httptools protocol keeps what arrived of a body since the application last read it
in a bytearray: each piece is copied into it, then out of it into a new bytes object for the
application. For a clip that is two copies of every byte in ingest and two more in the vault
(about 5% of the vault's CPU while uploads stream, 10% of ingest's time in Python;
docs/scaling.md, "The first scrub after a start, and two copies less"). ``HttpProtocol``
keeps the pieces as they came (bytes that httptools made, never reused) and joins them only
when several arrived between two reads: a single piece, the usual case of a stream read as it
comes, is handed over as it is.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class Pieces:
    """The body received since the last read, in the few operations uvicorn applies to it."""

    __slots__ = ("pieces", "size")

    def __init__(self, start: bytes = b"") -> None:
        self.pieces: list[bytes] = [start] if start else []
        self.size = len(start)

    def __iadd__(self, piece: bytes) -> Pieces:
        self.pieces.append(piece)
        self.size += len(piece)
        return self

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        if len(self.pieces) == 1:
            return self.pieces[0]
        return b"".join(self.pieces)


class HttpProtocol(HttpToolsProtocol):
    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if not isinstance(cycle.body, Pieces):
            # uvicorn starts each read with a new bytearray (empty, unless another server
            # class filled it): its content is kept, then pieces are added as they come.
            cycle.body = Pieces(bytes(cycle.body))  # type: ignore[assignment]
        super().on_body(body)


def serve(application: Any, host: str, port: int) -> None:
    """Run ``application`` until stopped, logging as `configure_logging` set it up
    (shared/observability.py), trusting no proxy headers, sending no Server header."""
    uvicorn.run(
        application,
        host=host,
        port=port,
        http=HttpProtocol,
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )
