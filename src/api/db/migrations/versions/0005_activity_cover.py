"""The activity masks' primary key includes `days`.

Revision 0005, after 0004. Counting the keys that meet a range then reads the index alone
(src/api/stats/repository.py activity_statement). The key is rebuilt as (kind, block, site_id,
key) INCLUDE (days): the new index is built beside the old one, then takes its place, in one
transaction (about a minute per 10M events' masks; startup waits for it under its lock)."""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE UNIQUE INDEX activity_pkey_days ON activity (kind, block, site_id, key) INCLUDE (days)"
    )
    op.execute("ALTER TABLE activity DROP CONSTRAINT activity_pkey")
    op.execute("ALTER INDEX activity_pkey_days RENAME TO activity_pkey")
    op.execute("ALTER TABLE activity ADD CONSTRAINT activity_pkey PRIMARY KEY USING INDEX activity_pkey")
    op.execute("ANALYZE activity")


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
