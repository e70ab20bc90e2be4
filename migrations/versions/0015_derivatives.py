"""Anonymised copies of recordings for training (issue 18): ``vault.derivatives``, one row per
job and the derivative it makes, and the consultation of a derivative.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30 16:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "derivatives",
        sa.Column("organisation_id", sa.UUID(), nullable=False),
        sa.Column("recording_id", sa.UUID(), nullable=False),
        sa.Column("procedure_id", sa.UUID(), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("requested_role", sa.String(length=16), nullable=False),
        sa.Column("motif", sa.Text(), nullable=False),
        sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("frames_done", sa.BigInteger(), nullable=False),
        sa.Column("frames_total", sa.BigInteger(), nullable=True),
        sa.Column("multipart_id", sa.Text(), nullable=True),
        sa.Column("object_key", sa.Text(), nullable=True),
        sa.Column("object_version", sa.Text(), nullable=True),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sealed_size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("content_type", sa.Text(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("kek_id", sa.String(length=64), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by", sa.Text(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("review_reason", sa.Text(), nullable=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("object_deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["vault.organisations.id"],
            name=op.f("fk_derivatives_organisation_id_organisations"),
        ),
        sa.ForeignKeyConstraint(
            ["procedure_id"],
            ["vault.procedures.id"],
            name=op.f("fk_derivatives_procedure_id_procedures"),
        ),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["vault.recordings.id"],
            name=op.f("fk_derivatives_recording_id_recordings"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_derivatives")),
        sa.UniqueConstraint("object_key", name=op.f("uq_derivatives_object_key")),
        schema="vault",
    )
    op.create_index(
        op.f("ix_vault_derivatives_organisation_id"),
        "derivatives",
        ["organisation_id"],
        unique=False,
        schema="vault",
    )
    op.create_index(
        op.f("ix_vault_derivatives_recording_id"),
        "derivatives",
        ["recording_id"],
        unique=False,
        schema="vault",
    )
    op.create_index(
        "ux_vault_derivatives_active",
        "derivatives",
        ["recording_id"],
        unique=True,
        schema="vault",
        postgresql_where=sa.text("status IN ('en_attente', 'en_cours')"),
    )
    op.create_index(
        "ix_vault_derivatives_active_jobs",
        "derivatives",
        ["status", "heartbeat_at"],
        unique=False,
        schema="vault",
        postgresql_where=sa.text("status IN ('en_attente', 'en_cours')"),
    )
    op.add_column(
        "consultations",
        sa.Column("derivative_id", sa.UUID(), nullable=True),
        schema="vault",
    )
    op.create_foreign_key(
        op.f("fk_consultations_derivative_id_derivatives"),
        "consultations",
        "derivatives",
        ["derivative_id"],
        ["id"],
        source_schema="vault",
        referent_schema="vault",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_consultations_derivative_id_derivatives"),
        "consultations",
        schema="vault",
        type_="foreignkey",
    )
    op.drop_column("consultations", "derivative_id", schema="vault")
    op.drop_index("ix_vault_derivatives_active_jobs", table_name="derivatives", schema="vault")
    op.drop_index("ux_vault_derivatives_active", table_name="derivatives", schema="vault")
    op.drop_index(
        op.f("ix_vault_derivatives_recording_id"), table_name="derivatives", schema="vault"
    )
    op.drop_index(
        op.f("ix_vault_derivatives_organisation_id"), table_name="derivatives", schema="vault"
    )
    op.drop_table("derivatives", schema="vault")
