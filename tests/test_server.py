"""shared/server.py: request bodies reach the application whole and in order, whether one
piece or many arrived between two reads, through a real uvicorn server with the protocol."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from shared.server import HttpProtocol, Pieces


def test_one_piece_is_handed_over_as_it_came() -> None:
    piece = os.urandom(1000)
    pieces = Pieces()
    pieces += piece
    assert bytes(pieces) is piece  # no copy
    pieces += b"abc"
    assert bytes(pieces) == piece + b"abc" and len(pieces) == 1003
    assert bytes(Pieces()) == b"" and bytes(Pieces(b"xy")) == b"xy"


class Recorder:
    """An ASGI app that reads a POST's body slowly (pieces pile up between its reads) and
    answers the body's SHA-256 and how many messages brought it."""

    def __init__(self) -> None:
        self.messages: list[int] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        digest = hashlib.sha256()
        more = True
        while more:
            await asyncio.sleep(0.05)
            message = await receive()
            digest.update(message["body"])
            self.messages.append(len(message["body"]))
            more = message.get("more_body", False)
        body = digest.hexdigest().encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def served() -> Iterator[tuple[int, Recorder]]:
    app = Recorder()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, http=HttpProtocol, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield port, app
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _post(port: int, pieces: list[bytes], pause_s: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        length = sum(len(p) for p in pieces)
        connection.sendall(
            b"POST / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode()
        )
        for piece in pieces:
            connection.sendall(piece)
            if pause_s:
                time.sleep(pause_s)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer.rsplit(b"\r\n\r\n", 1)[1]


def test_small_pieces_arriving_between_reads_are_joined_in_order(
    served: tuple[int, Recorder],
) -> None:
    port, app = served
    pieces = [os.urandom(997) for _ in range(120)]
    answer = _post(port, pieces, pause_s=0.002)
    assert answer.decode() == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert max(app.messages) > 997, "several pieces were handed over in one message"


def test_a_large_body_arrives_whole(served: tuple[int, Recorder]) -> None:
    port, _ = served
    body = os.urandom(6 * 1024 * 1024 + 5)
    answer = _post(port, [body[i : i + 300_000] for i in range(0, len(body), 300_000)], 0)
    assert answer.decode() == hashlib.sha256(body).hexdigest()
