"""Connections killed under the pool (a database restart, a failover) are replaced before use
once they have been idle, so the next request after an outage succeeds; a server of
DATABASE_URL that does not answer does not keep the others from being tried."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from shared.db import create_engine
from tests.fixtures.servers import Servers


async def test_dead_idle_connections_are_replaced(servers: Servers) -> None:
    engine = create_engine(
        servers.database_url, application_name="temoin-ping-test", pool_size=2,
        ping_after_idle_s=0.1,
    )  # fmt: skip
    admin = create_engine(servers.database_url, application_name="temoin-ping-admin")
    try:
        async with engine.connect() as connection:
            first_pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar()
        async with admin.connect() as connection:
            killed = await connection.execute(
                text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid}
            )
            assert killed.scalar() is True
        await asyncio.sleep(0.3)
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar()
        assert pid != first_pid
    finally:
        await engine.dispose()
        await admin.dispose()


async def test_busy_connections_are_not_pinged(servers: Servers) -> None:
    engine = create_engine(
        servers.database_url, application_name="temoin-ping-test", pool_size=1,
        ping_after_idle_s=60,
    )  # fmt: skip
    try:
        async with engine.connect() as connection:
            first = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar()
        async with engine.connect() as connection:
            # Same connection, and no BEGIN/ROLLBACK ping went through it in between.
            assert (await connection.execute(text("SELECT pg_backend_pid()"))).scalar() == first
    finally:
        await engine.dispose()


class Silent:
    """A server that takes TCP connections and never answers (a machine frozen or cut off
    behind a live address): it counts the connections it was offered."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # closed
            while True:
                self.held.append(self.socket.accept()[0])

    def close(self) -> None:
        self.socket.close()
        for connection in self.held:
            connection.close()


async def test_a_silent_server_first_in_the_url_is_passed_over(servers: Servers) -> None:
    """DATABASE_URL names a server that does not answer, then the real one: a connection is
    made within the connect timeout, and the next ones go to the real server first."""
    real = make_url(servers.database_url)
    socket_dir = str(real.query["host"])
    (port,) = (path.suffix[1:] for path in Path(socket_dir).glob(".s.PGSQL.*[0-9]"))
    silent = Silent()
    url = real.set(query={"host": f"127.0.0.1,{socket_dir}", "port": f"{silent.port},{port}"})
    engine = create_engine(
        url.render_as_string(hide_password=False), application_name="temoin-silent-test",
        pool_size=1, connect_timeout_s=2,
    )  # fmt: skip
    try:
        for _ in range(3):
            async with engine.connect() as connection:
                assert (await connection.execute(text("SELECT 1"))).scalar() == 1
            await engine.dispose()  # the next one is a new connection
        assert len(silent.held) == 1
    finally:
        await engine.dispose()
        silent.close()
