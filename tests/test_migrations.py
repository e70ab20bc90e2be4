"""Migrations apply on an empty database, are idempotent, and go down and up again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from temoin import migrate
from tests.fixtures.servers import Servers

SCHEMAS = {"ingest", "vault", "reporting", "audit"}


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _execute(url: str, sql: str) -> None:
    connection = await asyncpg.connect(_plain(url))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _schemas(url: str) -> set[str]:
    connection = await asyncpg.connect(_plain(url))
    try:
        rows = await connection.fetch("SELECT schema_name FROM information_schema.schemata")
    finally:
        await connection.close()
    return {row["schema_name"] for row in rows} & SCHEMAS


@pytest.fixture
def fresh_database(servers: Servers) -> Iterator[str]:
    name = f"migration_{uuid.uuid4().hex[:12]}"
    asyncio.run(_execute(servers.database_url, f'CREATE DATABASE "{name}"'))
    url = make_url(servers.database_url).set(database=name).render_as_string(hide_password=False)
    yield url
    asyncio.run(_execute(servers.database_url, f'DROP DATABASE "{name}" WITH (FORCE)'))


def test_upgrade_is_idempotent_and_reversible(fresh_database: str) -> None:
    migrate.upgrade(fresh_database)
    assert asyncio.run(_schemas(fresh_database)) == SCHEMAS
    migrate.upgrade(fresh_database)  # a second `make run` applies nothing new
    assert asyncio.run(_schemas(fresh_database)) == SCHEMAS

    from alembic import command

    command.downgrade(migrate.alembic_config(fresh_database), "base")
    assert asyncio.run(_schemas(fresh_database)) == set()
    migrate.upgrade(fresh_database)
    assert asyncio.run(_schemas(fresh_database)) == SCHEMAS


def test_models_and_migrations_agree(fresh_database: str) -> None:
    """`alembic check`: a model changed without its migration fails here."""
    from alembic import command

    migrate.upgrade(fresh_database)
    command.check(migrate.alembic_config(fresh_database))
