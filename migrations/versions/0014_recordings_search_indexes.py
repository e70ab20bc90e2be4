"""The recordings search at 100,000 recordings an organisation (issue 17, `make bench-dashboard`).

Before, every search page sorted all of the organisation's recordings to show 25 of them, and
a search by place read the whole table: 120-460 ms at 100k recordings. Now a page is read in
the search's order from ``ix_vault_recordings_search`` (organisation, newest first, the id to
break ties) and a period's count is an index-only scan of it; the place's ``ILIKE '%…%'`` is
answered by trigrams (``pg_trgm``, a trusted extension shipped with PostgreSQL's contrib: the
database owner who runs migrations may create it).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 15:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_vault_recordings_search "
        "ON vault.recordings (organisation_id, started_at DESC, id)"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_vault_recordings_address_trgm "
        "ON vault.recordings USING gin (address gin_trgm_ops)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS vault.ix_vault_recordings_address_trgm")
    op.execute("DROP INDEX IF EXISTS vault.ix_vault_recordings_search")
    # pg_trgm stays: something else in the database may use it.
