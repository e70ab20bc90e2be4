"""Faults (issue 14): the fixity scrub's lease on a recording, a consultation's closing, and an
index on the upload sessions the background passes look for (open, completing).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "recordings",
        sa.Column("scrub_claimed_until", sa.DateTime(timezone=True), nullable=True),
        schema="vault",
    )
    op.add_column(
        "consultations",
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        schema="vault",
    )
    op.create_index(
        "ix_vault_upload_sessions_live",
        "upload_sessions",
        ["status", "expires_at"],
        schema="vault",
        postgresql_where=sa.text("status IN ('open', 'completing')"),
    )


def downgrade() -> None:
    op.drop_index("ix_vault_upload_sessions_live", table_name="upload_sessions", schema="vault")
    op.drop_column("consultations", "closed_at", schema="vault")
    op.drop_column("recordings", "scrub_claimed_until", schema="vault")
