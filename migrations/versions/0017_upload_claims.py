"""A PATCH's claim on its upload session (issue 19): the request streaming into it and until
when, so that no database connection is held while the bytes stream
(services/vault/recordings/resumable.py, "Claims").

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-30 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "upload_sessions", sa.Column("claim_id", sa.UUID(), nullable=True), schema="vault"
    )
    op.add_column(
        "upload_sessions",
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        schema="vault",
    )


def downgrade() -> None:
    op.drop_column("upload_sessions", "claimed_until", schema="vault")
    op.drop_column("upload_sessions", "claim_id", schema="vault")
