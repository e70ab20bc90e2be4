"""The audit log's authenticity (issue 15): each entry carries its writer's authenticator, the
sequencer records the entries it refused, tree heads are chained checkpoints, witnesses'
cosignatures are kept, and the three-year purge is bounded by a head signed before its cut-off.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERVICE_ROLE = "temoin_service"
APPEND_ONLY = ("refusals", "cosignatures", "authentication")

REFUSE_ANY_CHANGE = """
CREATE FUNCTION audit.refuse_any_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit.% is append-only (% refused)', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$
"""

# Entries leave the trail only three years old, and only below a position that a tree head
# signed before the cut-off covers: those were written before it, whatever date they claim.
PURGE_BELOW = """
CREATE FUNCTION audit.purge_below(below_seq bigint, cutoff timestamptz) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = audit, pg_temp AS $$
DECLARE
  purged bigint;
BEGIN
  IF cutoff > now() - interval '3 years' THEN
    RAISE EXCEPTION 'audit entries are kept three years (R241-14)'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF below_seq > 0 AND NOT EXISTS (
    SELECT 1 FROM audit.tree_heads h WHERE h.tree_size >= below_seq AND h.signed_at <= cutoff
  ) THEN
    RAISE EXCEPTION 'no tree head signed before % covers position %', cutoff, below_seq
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  PERFORM set_config('temoin.audit_purge', 'on', true);
  DELETE FROM audit.entries e
   USING audit.leaves l
   WHERE l.entry_id = e.entry_id AND l.seq < below_seq AND e.occurred_at < cutoff;
  GET DIAGNOSTICS purged = ROW_COUNT;
  PERFORM set_config('temoin.audit_purge', 'off', true);
  RETURN purged;
END $$
"""


def upgrade() -> None:
    # The writer's key hash and Ed25519 signature over the entry's canonical bytes.
    op.add_column(
        "entries", sa.Column("authenticator", postgresql.BYTEA(), nullable=True), schema="audit"
    )
    # Entries of transactions before this one were written before authenticators existed: the
    # sequencer logs them as they are. None when the trail is empty.
    op.execute("CREATE TABLE audit.authentication (since_txid xid8 NOT NULL)")
    op.execute(
        "INSERT INTO audit.authentication (since_txid) SELECT CASE WHEN EXISTS "
        "(SELECT 1 FROM audit.entries) THEN pg_current_xact_id() ELSE '0'::xid8 END"
    )
    # Entries the sequencer set aside: no valid authenticator from a known writer. Its cursor
    # moves past them (txid, entry_pk), as past the leaves.
    op.execute(
        """
        CREATE TABLE audit.refusals (
            entry_pk bigint NOT NULL CONSTRAINT pk_refusals PRIMARY KEY,
            entry_id uuid NOT NULL,
            txid xid8 NOT NULL,
            reason text NOT NULL,
            refused_at timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX ix_audit_refusals_txid_entry_pk ON audit.refusals (txid, entry_pk)")
    # Checkpoints (C2SP): each head names the one before it.
    op.add_column("tree_heads", sa.Column("previous_size", sa.BigInteger()), schema="audit")
    op.add_column("tree_heads", sa.Column("previous_root", postgresql.BYTEA()), schema="audit")
    op.add_column("tree_heads", sa.Column("checkpoint", sa.Text()), schema="audit")
    # Witnesses' cosignatures (C2SP tlog-cosignature), with the checkpoint they cosigned.
    op.create_table(
        "cosignatures",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("witness", sa.Text(), nullable=False),
        sa.Column("key_hash", postgresql.BYTEA(), nullable=False),
        sa.Column("cosigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", postgresql.BYTEA(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cosignatures")),
        sa.UniqueConstraint(
            "witness", "key_hash", "tree_size", "cosigned_at", name=op.f("uq_cosignatures_once")
        ),
        schema="audit",
    )
    op.create_index(
        "ix_audit_cosignatures_witness_cosigned_at",
        "cosignatures",
        ["witness", "cosigned_at"],
        schema="audit",
    )
    op.execute(REFUSE_ANY_CHANGE)
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON audit.{table} "
            "FOR EACH ROW EXECUTE FUNCTION audit.refuse_any_change()"
        )
    op.execute(PURGE_BELOW)
    op.execute("REVOKE ALL ON FUNCTION audit.purge_below(bigint, timestamptz) FROM PUBLIC")
    op.execute(
        f"GRANT EXECUTE ON FUNCTION audit.purge_below(bigint, timestamptz) TO {SERVICE_ROLE}"
    )
    # The purge that any position could reach is no longer the services' to call.
    op.execute(f"REVOKE EXECUTE ON FUNCTION audit.purge_before(timestamptz) FROM {SERVICE_ROLE}")
    tables = ", ".join(f"audit.{table}" for table in APPEND_ONLY)
    op.execute(f"GRANT SELECT, INSERT ON {tables} TO {SERVICE_ROLE}")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA audit TO {SERVICE_ROLE}")


def downgrade() -> None:
    op.execute(f"GRANT EXECUTE ON FUNCTION audit.purge_before(timestamptz) TO {SERVICE_ROLE}")
    op.execute("DROP FUNCTION audit.purge_below(bigint, timestamptz)")
    for table in APPEND_ONLY:
        op.drop_table(table, schema="audit")
    op.execute("DROP FUNCTION audit.refuse_any_change()")
    for column in ("checkpoint", "previous_root", "previous_size"):
        op.drop_column("tree_heads", column, schema="audit")
    op.drop_column("entries", "authenticator", schema="audit")
