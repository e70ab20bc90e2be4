"""Alembic environment: one migration history for the whole PostgreSQL database, in which each
service owns its own schema (ingest, vault, reporting, audit, dashboard)."""

import asyncio
import os
import warnings

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SAWarning

from services.dashboard.models import Base as DashboardBase
from services.ingest.models import Base as IngestBase
from services.ingest.stations import models as _stations  # noqa: F401  (registers tables)
from services.ingest.uploads import models as _uploads  # noqa: F401  (registers tables)
from services.reporting.models import Base as ReportingBase
from services.reporting.statistics import models as _statistics  # noqa: F401  (registers tables)
from services.vault.audit import tables as _audit_tables  # noqa: F401  (registers tables)
from services.vault.derivatives import models as _derivatives  # noqa: F401  (registers tables)
from services.vault.directory import models as _directory  # noqa: F401  (registers tables)
from services.vault.models import Base as VaultBase
from services.vault.procedures import models as _procedures  # noqa: F401  (registers tables)
from services.vault.recordings import models as _recordings  # noqa: F401  (registers tables)
from shared.audit import audit_metadata
from shared.db import asyncpg_url, create_engine

SCHEMAS = ("ingest", "vault", "reporting", "audit", "dashboard")

# Reflection does not know xid8 (audit.entries.txid, excluded from comparison below).
warnings.filterwarnings("ignore", message="Did not recognize type 'xid8'", category=SAWarning)

# Every service's models, so that `alembic revision --autogenerate` sees all schemas.
target_metadata: list[MetaData] = [
    IngestBase.metadata,
    VaultBase.metadata,
    ReportingBase.metadata,
    audit_metadata,
    DashboardBase.metadata,
]


def _url() -> str:
    url = context.config.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise RuntimeError("set DATABASE_URL to migrate")
    return url


def _include(name: str | None, type_: str, parent: dict[str, str | None]) -> bool:
    if type_ == "schema":
        return name in SCHEMAS
    # audit.entries.txid (xid8) is written by PostgreSQL alone; no model declares it.
    if parent.get("table_name") == "entries" and name in ("txid", "ix_audit_entries_txid_id"):
        return False
    return True


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_schemas=True,
        include_name=_include,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_engine(_url(), application_name="temoin-migrate", pool_size=1)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=asyncpg_url(_url()), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
