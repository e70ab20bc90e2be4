"""The audit trail as a verifiable log (RFC 9162): sequenced leaves, perfect-subtree hashes,
signed tree heads; the database role the services use, which may only read and append to it;
and the one way entries ever leave it, after three years (R241-14).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERVICE_SCHEMAS = ("ingest", "vault", "reporting")
SERVICE_ROLE = "temoin_service"

# Entries may leave the trail only through audit.purge_before(), and only once three years old.
REFUSE_CHANGE = """
CREATE OR REPLACE FUNCTION audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE'
     AND current_setting('temoin.audit_purge', true) = 'on'
     AND OLD.occurred_at < now() - interval '3 years' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit entries are append-only (% refused)', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$
"""
PURGE_FUNCTION = """
CREATE FUNCTION audit.purge_before(cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = audit, pg_temp AS $$
DECLARE
  purged bigint;
BEGIN
  IF cutoff > now() - interval '3 years' THEN
    RAISE EXCEPTION 'audit entries are kept three years (R241-14)'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('temoin.audit_purge', 'on', true);
  DELETE FROM audit.entries e
   USING audit.leaves l
   WHERE l.entry_id = e.entry_id AND e.occurred_at < cutoff;
  GET DIAGNOSTICS purged = ROW_COUNT;
  PERFORM set_config('temoin.audit_purge', 'off', true);
  RETURN purged;
END $$
"""


def upgrade() -> None:
    # The inserting transaction's id: the sequencer orders entries by (txid, id) and takes only
    # those of finished transactions, so an entry committed late never lands behind the log's
    # end and the order never changes (docs/audit.md).
    op.execute(
        "ALTER TABLE audit.entries ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id()"
    )
    op.execute("CREATE INDEX ix_audit_entries_txid_id ON audit.entries (txid, id)")
    op.create_table(
        "leaves",
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.UUID(), nullable=False),
        sa.Column("entry_pk", sa.BigInteger(), nullable=False),
        sa.Column("txid", postgresql.TEXT(), nullable=False),
        sa.Column("leaf_hash", postgresql.BYTEA(), nullable=False),
        sa.Column("sequenced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_leaves")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_leaves_entry_id")),
        schema="audit",
    )
    op.create_table(
        "nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("idx", sa.BigInteger(), nullable=False),
        sa.Column("hash", postgresql.BYTEA(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_nodes")),
        schema="audit",
    )
    op.create_table(
        "tree_heads",
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", postgresql.BYTEA(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("signature", postgresql.BYTEA(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_tree_heads")),
        schema="audit",
    )
    # Entries not sequenced yet: what the sequencer scans.
    # One index serves the DPO's queries (an organisation, over a period, in order); the
    # single-column ones it replaces cost every append for little.
    op.drop_index("ix_audit_entries_action", table_name="entries", schema="audit")
    op.drop_index("ix_audit_entries_organisation_id", table_name="entries", schema="audit")
    op.create_index(
        "ix_audit_entries_organisation_id_occurred_at",
        "entries",
        ["organisation_id", "occurred_at"],
        schema="audit",
    )
    op.execute(REFUSE_CHANGE)
    for table in ("leaves", "nodes", "tree_heads"):
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON audit.{table} "
            "FOR EACH ROW EXECUTE FUNCTION audit.refuse_change()"
        )
    op.execute(PURGE_FUNCTION)

    # The role the services act as (they SET ROLE to it on every connection): full use of their
    # own schemas, read and append only on the audit trail.
    op.execute(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{SERVICE_ROLE}') "
        f"THEN CREATE ROLE {SERVICE_ROLE} NOLOGIN; END IF; END $$"
    )
    schemas = ", ".join(SERVICE_SCHEMAS)
    op.execute(f"GRANT USAGE ON SCHEMA {schemas}, audit TO {SERVICE_ROLE}")
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schemas} TO {SERVICE_ROLE}"
    )
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schemas} TO {SERVICE_ROLE}")
    for schema in SERVICE_SCHEMAS:
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {SERVICE_ROLE}"
        )
    op.execute(f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA audit TO {SERVICE_ROLE}")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA audit TO {SERVICE_ROLE}")
    op.execute("REVOKE ALL ON FUNCTION audit.purge_before(timestamptz) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION audit.purge_before(timestamptz) TO {SERVICE_ROLE}")


def downgrade() -> None:
    schemas = ", ".join(SERVICE_SCHEMAS)
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schemas}, audit FROM {SERVICE_ROLE}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schemas}, audit FROM {SERVICE_ROLE}")
    for schema in SERVICE_SCHEMAS:
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} "
            f"REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {SERVICE_ROLE}"
        )
    op.execute(f"REVOKE USAGE ON SCHEMA {schemas}, audit FROM {SERVICE_ROLE}")
    op.execute("DROP FUNCTION audit.purge_before(timestamptz)")
    op.drop_index(
        "ix_audit_entries_organisation_id_occurred_at", table_name="entries", schema="audit"
    )
    op.create_index("ix_audit_entries_action", "entries", ["action"], schema="audit")
    op.create_index(
        "ix_audit_entries_organisation_id", "entries", ["organisation_id"], schema="audit"
    )
    op.drop_table("tree_heads", schema="audit")
    op.drop_table("nodes", schema="audit")
    op.drop_table("leaves", schema="audit")
    op.execute("DROP INDEX audit.ix_audit_entries_txid_id")
    op.execute("ALTER TABLE audit.entries DROP COLUMN txid")
