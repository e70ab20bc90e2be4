"""The registry bound to the log (issue 15): the object lock the vault set on each recording,
when a divergence between a row and the log was first noted, indexes to read a recording's
or a habilitation's entries, and a habilitation that grants access only while the log agrees.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 11:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# R241-12: a habilitation grants access only while its row agrees with the log: an entry
# `habilitation_granted` names it (sequenced into the log, or written in the last two minutes,
# the time the sequencer takes), and no `habilitation_withdrawn` entry does. A row re-activated
# or made up by SQL grants nothing (docs/threat-model.md).
PEOPLE_VIEW = """
CREATE OR REPLACE VIEW vault.people AS
SELECT a.organisation_id, a.subject, a.id AS agent_id, a.active, a.roles,
       EXISTS (
         SELECT 1 FROM vault.habilitations h
          WHERE h.agent_id = a.id AND h.withdrawn_at IS NULL
            AND EXISTS (
              SELECT 1 FROM audit.entries g
               WHERE g.action = 'habilitation_granted'
                 AND g.details->>'habilitation_id' = h.id::text
                 AND g.details->>'agent_id' = h.agent_id::text
                 AND g.organisation_id = h.organisation_id
                 AND (g.occurred_at > now() - interval '2 minutes'
                      OR EXISTS (SELECT 1 FROM audit.leaves l WHERE l.entry_id = g.entry_id)))
            AND NOT EXISTS (
              SELECT 1 FROM audit.entries w
               WHERE w.action = 'habilitation_withdrawn'
                 AND w.details->>'habilitation_id' = h.id::text)
       ) AS habilitation_active
FROM vault.agents a
WHERE a.subject IS NOT NULL
"""
OLD_PEOPLE_VIEW = """
CREATE OR REPLACE VIEW vault.people AS
SELECT a.organisation_id, a.subject, a.id AS agent_id, a.active, a.roles,
       EXISTS (SELECT 1 FROM vault.habilitations h
               WHERE h.agent_id = a.id AND h.withdrawn_at IS NULL) AS habilitation_active
FROM vault.agents a
WHERE a.subject IS NOT NULL
"""


def upgrade() -> None:
    op.add_column(
        "recordings",
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        schema="vault",
    )
    op.execute("UPDATE vault.recordings SET locked_until = retain_until")
    op.add_column(
        "upload_sessions",
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        schema="vault",
    )
    op.add_column(
        "recordings",
        sa.Column("divergence_noted_at", sa.DateTime(timezone=True), nullable=True),
        schema="vault",
    )
    # A recording's history (collecte, holds, erasure) and a habilitation's, read by the
    # registry checks, the erasure job and every access check of a habilité.
    op.execute(
        "CREATE INDEX ix_audit_entries_recording_ids ON audit.entries USING gin (recording_ids)"
    )
    op.execute(
        "CREATE INDEX ix_audit_entries_habilitation ON audit.entries "
        "((details->>'habilitation_id')) "
        "WHERE action IN ('habilitation_granted', 'habilitation_withdrawn')"
    )
    op.execute(
        "CREATE INDEX ix_audit_entries_object_key ON audit.entries "
        "((details->>'object_key')) WHERE action = 'collecte'"
    )
    op.execute(PEOPLE_VIEW)


def downgrade() -> None:
    op.execute(OLD_PEOPLE_VIEW)
    op.execute("DROP INDEX audit.ix_audit_entries_object_key")
    op.execute("DROP INDEX audit.ix_audit_entries_habilitation")
    op.execute("DROP INDEX audit.ix_audit_entries_recording_ids")
    op.drop_column("recordings", "divergence_noted_at", schema="vault")
    op.drop_column("upload_sessions", "locked_until", schema="vault")
    op.drop_column("recordings", "locked_until", schema="vault")
