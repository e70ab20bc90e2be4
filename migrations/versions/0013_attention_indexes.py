"""What needs attention (issue 17, the dashboard's Accueil): indexes for the recordings search's
new filters and a station's last upload.

- (organisation_id, received_at): the clips received since a time (today's, by station);
- (station_id, received_at): a station's last upload, read as a max from the index's end;
- (organisation_id, retain_until) of sealed recordings: those erased within a few days;
- organisation_id of damaged recordings: what the fixity scrub found (few rows, a small index).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_vault_recordings_org_received",
        "recordings",
        ["organisation_id", "received_at"],
        schema="vault",
    )
    op.create_index(
        "ix_vault_recordings_station_received",
        "recordings",
        ["station_id", "received_at"],
        schema="vault",
    )
    op.create_index(
        "ix_vault_recordings_org_sealed_retain",
        "recordings",
        ["organisation_id", "retain_until"],
        schema="vault",
        postgresql_where=sa.text("status = 'sealed'"),
    )
    op.create_index(
        "ix_vault_recordings_org_damaged",
        "recordings",
        ["organisation_id"],
        schema="vault",
        postgresql_where=sa.text("status = 'damaged'"),
    )


def downgrade() -> None:
    for name in (
        "ix_vault_recordings_org_damaged",
        "ix_vault_recordings_org_sealed_retain",
        "ix_vault_recordings_station_received",
        "ix_vault_recordings_org_received",
    ):
        op.drop_index(name, table_name="recordings", schema="vault")
