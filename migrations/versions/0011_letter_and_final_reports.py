"""The letter to the préfet and reports that cannot change (issue 16): the commune a service
writes from, the responsables who may sign, and a finalised report's frozen PDF, its
signatory, its version (one per organisation and period).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What reporting reads of the directory. `place` is the commune the letter is written from
# (the service's first commune by INSEE code), NULL when none is registered.
DIRECTORY_VIEW = """
CREATE OR REPLACE VIEW vault.organisation_directory AS
SELECT o.id, o.name, o.departement,
       (SELECT c.name FROM vault.communes c
         WHERE c.organisation_id = o.id ORDER BY c.insee_code LIMIT 1) AS place
FROM vault.organisations o
"""
# Who may sign a service's report: its active responsables, by their identity's subject.
SIGNATORIES_VIEW = """
CREATE VIEW vault.signatories AS
SELECT a.organisation_id, a.subject, a.first_name, a.last_name
FROM vault.agents a
WHERE a.active AND a.subject IS NOT NULL AND 'responsable' = ANY (a.roles)
"""


def upgrade() -> None:
    op.execute(DIRECTORY_VIEW)
    op.execute(SIGNATORIES_VIEW)
    for column in (
        sa.Column("pdf", sa.LargeBinary(), nullable=True),
        sa.Column("pdf_sha256", sa.String(64), nullable=True),
        sa.Column("pdf_signature", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
    ):
        op.add_column("finalised_reports", column, schema="reporting")
    # Reports finalised before: numbered in the order they were made.
    op.execute(
        "UPDATE reporting.finalised_reports f SET version = n.v FROM ("
        " SELECT id, row_number() OVER (PARTITION BY organisation_id, period_start, period_end"
        " ORDER BY finalised_at, id) AS v FROM reporting.finalised_reports) n WHERE n.id = f.id"
    )
    op.alter_column("finalised_reports", "version", nullable=False, schema="reporting")
    op.create_unique_constraint(
        "uq_finalised_reports_period_version",
        "finalised_reports",
        ["organisation_id", "period_start", "period_end", "version"],
        schema="reporting",
    )


def downgrade() -> None:
    op.drop_constraint(
        "uq_finalised_reports_period_version", "finalised_reports", schema="reporting"
    )
    for name in ("version", "pdf_signature", "pdf_sha256", "pdf"):
        op.drop_column("finalised_reports", name, schema="reporting")
    op.execute("DROP VIEW vault.signatories")
    op.execute("DROP VIEW vault.organisation_directory")
    op.execute(
        "CREATE VIEW vault.organisation_directory AS "
        "SELECT id, name, departement FROM vault.organisations"
    )
