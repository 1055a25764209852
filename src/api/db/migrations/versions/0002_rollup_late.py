"""Late events' rollup changes: the `rollup_late` table (Apache edition).

Revision 0002, after 0001. Statements that store events below a tier's watermark append their
groups here instead of upserting every rollup (src/api/rollups/maintenance.py); the fold moves
them into the rollups. Community keeps its continuous aggregates itself: nothing to do there."""

from __future__ import annotations

from alembic import op
from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, SmallInteger, String, Table

from src.api.db import schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

metadata = MetaData()
rollup_late = Table(
    "rollup_late",
    metadata,
    Column("bucket", DateTime(timezone=True), nullable=False),
    Column("site_id", String(128), nullable=False),
    Column("event_type", String(128), nullable=False),
    Column("page", String(2048), nullable=False),
    Column("os", String(32), nullable=False),
    Column("browser", String(64), nullable=False),
    Column("device", String(16), nullable=False),
    Column("referrer_domain", String(255), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("duration_sum", BigInteger, nullable=False),
    Column("duration_count", BigInteger, nullable=False),
    Column("tiers", SmallInteger, nullable=False),
    Index("ix_rollup_late_bucket", "bucket"),
)


def upgrade() -> None:
    conn = op.get_bind()
    if not schema.read_edition(conn).has_continuous_aggregates:
        schema.create_tables(conn, [rollup_late])


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
