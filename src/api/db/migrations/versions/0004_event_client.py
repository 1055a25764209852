"""The event's client company: `event.client_id`.

Revision 0004, after 0003. A nullable column, so adding it rewrites nothing (on a compressed
hypertable too); events stored before it keep null, as do events of sites that are not
authorized (SITE_AUTHORIZATION=off)."""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE event ADD COLUMN IF NOT EXISTS client_id varchar(128)")


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
