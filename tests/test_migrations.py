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

SCHEMAS = {"ingest", "vault", "reporting", "audit", "dashboard"}


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


def test_check_says_whether_the_database_is_at_the_codes_revision(fresh_database: str) -> None:
    """`temoin migrate --check`, which each Kubernetes pod waits on (deploy/kubernetes/)."""
    from alembic import command
    from typer.testing import CliRunner

    from temoin.cli import app

    def check() -> tuple[int, str]:
        result = CliRunner().invoke(app, ["migrate", "--check", "--database-url", fresh_database])
        return result.exit_code, result.output

    current, head = migrate.revisions(fresh_database)
    assert current is None
    assert check() == (3, f"database at no revision, code at {head}\n")
    migrate.upgrade(fresh_database)
    assert migrate.revisions(fresh_database) == (head, head)
    assert check() == (0, f"database at {head}, code at {head}\n")
    command.downgrade(migrate.alembic_config(fresh_database), "-1")
    behind, _ = migrate.revisions(fresh_database)
    assert behind not in (None, head)
    assert check()[0] == 3
