"""Connections killed under the pool (a database restart, a failover) are replaced before use
once they have been idle, so the next request after an outage succeeds."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

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
