"""Apply the Alembic migrations (used by `temoin migrate`, `make run` and the tests)."""

from pathlib import Path

from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def revisions(database_url: str) -> tuple[str | None, str]:
    """The database's revision (None before the first migration) and the code's head: a new
    version's pods wait until they agree (`temoin migrate --check`, deploy/kubernetes/)."""
    import asyncio

    import asyncpg
    from alembic.script import ScriptDirectory

    from shared.database_url import libpq_url

    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert head is not None, "migrations/ has no revision"

    async def current() -> str | None:
        connection = await asyncpg.connect(libpq_url(database_url))
        try:
            if await connection.fetchval("SELECT to_regclass('alembic_version')") is None:
                return None
            value: str | None = await connection.fetchval("SELECT version_num FROM alembic_version")
            return value
        finally:
            await connection.close()

    return asyncio.run(current()), head
