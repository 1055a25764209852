"""Activity by day and quarter hour, with linked days and first-day counts; page activity.

Revision 0011, after 0010. The masks of 0003 (a bit per day per key and 64-day block) counted a
30-day total by reading every key of the range's blocks, and probed each key of the ragged ends
against them: about half a second for the benchmark's summary. `activity` now holds a row per
key and active day with its quarter hours and the key's previous and next active days;
`activity_first` counts, per day, the keys active on it by their previous active day; and
`activity_late` holds quarter hours instead of days (src/api/rollups/activity.py).
`page_activity` holds a row per (site, day, page, visitor) with its quarter hours, for daily
visitors by page, `page_day` their counts per (site, day, page), and `page_activity_late` the
changes (src/api/rollups/pages.py). The masks'
tables go, and the new ones are filled from the stored events (a few minutes per 10M events;
startup waits for it under its lock)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Index,
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

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

metadata = MetaData()
activity = Table(
    "activity",
    metadata,
    Column("kind", SmallInteger, nullable=False),
    Column("site_id", String(128), nullable=False),
    Column("key", Uuid, nullable=False),
    Column("day", Integer, nullable=False),
    Column("q0", BigInteger, nullable=False),
    Column("q1", BigInteger, nullable=False),
    Column("prev", Integer),
    Column("next", Integer),
    PrimaryKeyConstraint("kind", "site_id", "key", "day"),
    Index(
        "ix_activity_day", "kind", "day", "site_id", postgresql_include=["key", "q0", "q1", "prev", "next"]
    ),
)
activity_first = Table(
    "activity_first",
    metadata,
    Column("kind", SmallInteger, nullable=False),
    Column("site_id", String(128), nullable=False),
    Column("day", Integer, nullable=False),
    Column("since", Integer, nullable=False),
    Column("n", BigInteger, nullable=False),
    PrimaryKeyConstraint("kind", "site_id", "day", "since"),
)
activity_late = Table(
    "activity_late",
    metadata,
    Column("site_id", String(128), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("key", Uuid, nullable=False),
    Column("quarter", Integer, nullable=False),
)
page_activity = Table(
    "page_activity",
    metadata,
    Column("site_id", String(128), nullable=False),
    Column("day", Integer, nullable=False),
    Column("page", String(2048), nullable=False),
    Column("key", Uuid, nullable=False),
    Column("q0", BigInteger, nullable=False),
    Column("q1", BigInteger, nullable=False),
    PrimaryKeyConstraint("site_id", "day", "page", "key", postgresql_include=["q0", "q1"]),
)
page_day = Table(
    "page_day",
    metadata,
    Column("site_id", String(128), nullable=False),
    Column("day", Integer, nullable=False),
    Column("page", String(2048), nullable=False),
    Column("keys", BigInteger, nullable=False),
    Column("visitors", BigInteger, nullable=False),
    PrimaryKeyConstraint("site_id", "day", "page"),
)
page_activity_late = Table(
    "page_activity_late",
    metadata,
    Column("site_id", String(128), nullable=False),
    Column("page", String(2048), nullable=False),
    Column("key", Uuid, nullable=False),
    Column("quarter", Integer, nullable=False),
)
KEYS = {1: "COALESCE(visitor_id, user_id, ip_address || ' ' || COALESCE(user_agent, ''))", 2: "session_id"}
NIL = "00000000-0000-0000-0000-000000000000"
OF_DAY = "(quarter % 96)"
Q0 = f"CASE WHEN {OF_DAY} < 64 THEN 1::bigint << {OF_DAY} ELSE 0::bigint END"
Q1 = f"CASE WHEN {OF_DAY} >= 64 THEN 1::bigint << ({OF_DAY} - 64) ELSE 0::bigint END"


def upgrade() -> None:
    conn = op.get_bind()
    op.execute("DROP TABLE activity, activity_late")
    schema.create_tables(
        conn, [activity, activity_first, activity_late, page_activity, page_day, page_activity_late]
    )
    for kind, key in KEYS.items():
        conn.execute(
            text(
                "INSERT INTO activity (kind, site_id, key, day, q0, q1, prev, next)"
                " SELECT kind, site_id, key, day, q0, q1, lag(day) OVER w, lead(day) OVER w FROM ("
                f" SELECT {kind} AS kind, site_id, key, quarter / 96 AS day,"
                f" bit_or({Q0}) AS q0, bit_or({Q1}) AS q1 FROM (SELECT site_id, md5({key})::uuid AS key,"
                " floor(extract(epoch FROM time) / 900)::int AS quarter"
                f" FROM event WHERE {key} IS NOT NULL) AS e GROUP BY 1, 2, 3, 4) AS d"
                " WINDOW w AS (PARTITION BY kind, site_id, key ORDER BY day)"
            )
        )
    conn.execute(
        text(
            "INSERT INTO activity_first (kind, site_id, day, since, n)"
            " SELECT kind, site_id, day, COALESCE(prev, -1), count(*) FROM activity GROUP BY 1, 2, 3, 4"
        )
    )
    conn.execute(
        text(
            "INSERT INTO page_activity (site_id, day, page, key, q0, q1)"
            f" SELECT site_id, quarter / 96, page, key, bit_or({Q0}), bit_or({Q1}) FROM ("
            f" SELECT site_id, page, COALESCE(md5({KEYS[1]})::uuid, '{NIL}'::uuid) AS key,"
            " floor(extract(epoch FROM time) / 900)::int AS quarter FROM event) AS e GROUP BY 1, 2, 3, 4"
        )
    )
    conn.execute(
        text(
            "INSERT INTO page_day (site_id, day, page, keys, visitors) SELECT site_id, day, page, count(*),"
            f" count(*) FILTER (WHERE key <> '{NIL}') FROM page_activity GROUP BY 1, 2, 3"
        )
    )
    op.execute("ANALYZE activity")
    op.execute("ANALYZE page_activity")
    op.execute("ANALYZE activity_first")


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
