"""Upload delays of any length (issue 16): the delay buckets no longer stop at a week.

Before, every delay of 9,412 minutes or more (the bucket under a week) was counted in the
9,412 bucket, so a clip uploaded a year late showed 9,412 minutes. The buckets below it keep
their meaning; the 9,412 rows are counted again from the audit log's collecte entries that
reporting had already applied, each in the bucket of its true delay (the same 10% scale,
services/reporting/statistics/consumer.py `delay_bucket`).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 13:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_CAP_BUCKET = 9412
# 1.1 ** 96 in double precision: the least delay the old code put in the capped bucket.
OLD_CAP_MINUTES = 9412.343651268613
MAX_MINUTES = 100 * 366 * 24 * 60

# The consumer's arithmetic in SQL: the day is the date written in `started_at`, the delay
# runs from `ended_at` to the entry's time, the bucket is 1.1 ** floor(log_1.1(minutes)) in
# double precision, like Python's floats.
RECOUNT = f"""
INSERT INTO reporting.delay_buckets (organisation_id, day, minutes, count)
SELECT organisation_id, day,
       GREATEST(1, round(power(1.1::float8,
                floor(ln(LEAST(minutes, {MAX_MINUTES})) / ln(1.1::float8)))))::int,
       count(*)
FROM (
    SELECT e.organisation_id,
           substr(e.details->>'started_at', 1, 10)::date AS day,
           extract(epoch FROM e.occurred_at - (e.details->>'ended_at')::timestamptz)::float8
               / 60 AS minutes
    FROM audit.entries e JOIN audit.leaves l ON l.entry_id = e.entry_id
    WHERE e.action = 'collecte' AND e.outcome = 'success' AND e.organisation_id IS NOT NULL
      AND e.details ? 'started_at' AND e.details ? 'ended_at'
      AND l.seq <= (SELECT last_seq FROM reporting.checkpoints WHERE name = 'audit-feed')
) delays
WHERE minutes >= {OLD_CAP_MINUTES}
GROUP BY 1, 2, 3
ON CONFLICT (organisation_id, day, minutes)
DO UPDATE SET count = reporting.delay_buckets.count + excluded.count
"""


UPGRADE = [f"DELETE FROM reporting.delay_buckets WHERE minutes = {OLD_CAP_BUCKET}", RECOUNT]


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    # Back to « a week or more is one bucket ».
    op.execute(
        "INSERT INTO reporting.delay_buckets (organisation_id, day, minutes, count) "
        f"SELECT organisation_id, day, {OLD_CAP_BUCKET}, sum(count) "
        f"FROM reporting.delay_buckets WHERE minutes > {OLD_CAP_BUCKET} "
        "GROUP BY organisation_id, day "
        "ON CONFLICT (organisation_id, day, minutes) "
        "DO UPDATE SET count = reporting.delay_buckets.count + excluded.count"
    )
    op.execute(f"DELETE FROM reporting.delay_buckets WHERE minutes > {OLD_CAP_BUCKET}")
