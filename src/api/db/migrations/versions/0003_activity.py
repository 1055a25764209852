"""Activity masks for exact unique visitors and sessions, filled from the stored events.

Revision 0003, after 0002. The tables `activity` and `activity_late`, on both editions; see
src/api/rollups/activity.py. The fill reads every event once (about a minute per 10M events);
it runs under the startup lock, before the service serves."""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Uuid,
    text,
)

from src.api.db import schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

metadata = MetaData()
activity = Table(
    "activity",
    metadata,
    Column("kind", SmallInteger, nullable=False),
    Column("block", Integer, nullable=False),
    Column("site_id", String(128), nullable=False),
    Column("key", Uuid, nullable=False),
    Column("days", BigInteger, nullable=False),
    PrimaryKeyConstraint("kind", "block", "site_id", "key"),
)
activity_late = Table(
    "activity_late",
    metadata,
    Column("site_id", String(128), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("key", Uuid, nullable=False),
    Column("day", Integer, nullable=False),
)
VISITOR = "COALESCE(visitor_id, user_id, ip_address || ' ' || COALESCE(user_agent, ''))"
DAY = "floor(extract(epoch FROM time) / 86400)::int"


def upgrade() -> None:
    conn = op.get_bind()
    schema.create_tables(conn, [activity, activity_late])
    for kind, key in ((1, VISITOR), (2, "session_id")):
        conn.execute(
            text(
                "INSERT INTO activity (kind, block, site_id, key, days)"
                f" SELECT {kind}, day / 64, site_id, k, bit_or(1::bigint << (day % 64))"
                f" FROM (SELECT DISTINCT site_id, md5({key})::uuid AS k, {DAY} AS day"
                f" FROM event WHERE {key} IS NOT NULL) AS keys"
                " GROUP BY 2, 3, 4 ON CONFLICT DO NOTHING"
            )
        )


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
