"""The dashboard's sessions in PostgreSQL, so that any number of dashboard replicas serve the
same people behind a load balancer without stickiness (issue 19): schema ``dashboard``, its
table ``sessions``, and the role the dashboard acts as, ``temoin_dashboard``, which may use that
table and nothing else (the dashboard reads everything else through the APIs, as the person).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DASHBOARD_ROLE = "temoin_dashboard"


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS dashboard")
    op.create_table(
        "sessions",
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_sessions")),
        schema="dashboard",
    )
    # Not temoin_service: a dashboard's credentials must not open the vault's tables, nor a
    # service's the people's sessions.
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DASHBOARD_ROLE}') "
        f"THEN CREATE ROLE {DASHBOARD_ROLE} NOLOGIN; END IF; END $$"
    )
    op.execute(f"GRANT USAGE ON SCHEMA dashboard TO {DASHBOARD_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON dashboard.sessions TO {DASHBOARD_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON dashboard.sessions FROM {DASHBOARD_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA dashboard FROM {DASHBOARD_ROLE}")
    op.drop_table("sessions", schema="dashboard")
    op.execute("DROP SCHEMA IF EXISTS dashboard")
    # The role stays, as temoin_service does: roles belong to the cluster, not this database.
