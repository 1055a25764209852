"""Per-day counts of first and last quarter hours, and each key's last quarter the day before.

Revision 0012, after 0011. A day of a zone whose midnight is not UTC's (Kathmandu, New York)
is the end of one UTC day and the start of the next; its visitors are the keys whose last
quarter of the first is in it, plus those whose first quarter of the second is, less those in
both. `activity_day` counts, per (kind, site, day), the keys by their first and by their last
quarter (arrays of 96), and `page_day` the visitors per page the same way (the nil key's first
and last quarters beside them); `prev_last` on `activity` and `page_activity` is the key's
last quarter on the day before (NULL: not active then), which a partial index finds
(src/api/rollups/activity.py, pages.py). The new columns and table are filled from the rows
there (seconds to minutes per 10M events; startup waits for it under its lock)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    ARRAY,
    Column,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    text,
)

from src.api.db import schema

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

metadata = MetaData()
activity_day = Table(
    "activity_day",
    metadata,
    Column("kind", SmallInteger, nullable=False),
    Column("site_id", String(128), nullable=False),
    Column("day", Integer, nullable=False),
    Column("firsts", ARRAY(Integer), nullable=False),
    Column("lasts", ARRAY(Integer), nullable=False),
    PrimaryKeyConstraint("kind", "site_id", "day"),
)
NIL = "00000000-0000-0000-0000-000000000000"
ZERO = "array_fill(0, ARRAY[96])"
VISITORS = f" WHERE key <> '{NIL}'"


def first(q0: str, q1: str) -> str:
    return (
        f"CASE WHEN {q0} <> 0 THEN strpos(reverse(CAST({q0} AS bit(64))::text), '1') - 1"
        f" WHEN {q1} <> 0 THEN strpos(reverse(CAST({q1} AS bit(64))::text), '1') + 63 END"
    )


def last(q0: str, q1: str) -> str:
    return (
        f"CASE WHEN {q1} <> 0 THEN 128 - strpos(CAST({q1} AS bit(64))::text, '1')"
        f" WHEN {q0} <> 0 THEN 64 - strpos(CAST({q0} AS bit(64))::text, '1') END"
    )


def histogram(table: str, columns: tuple[str, ...], where: str = "") -> str:
    """(columns, firsts, lasts) counted from the rows of `table`."""
    group = ", ".join(columns)
    on = " AND ".join(f"c.{name} = g.{name}" for name in columns)
    return (
        f"WITH edges AS (SELECT {group}, {first('q0', 'q1')} AS f, {last('q0', 'q1')} AS l"
        f" FROM {table}{where}),"
        f" counts AS (SELECT {group}, q, sum(df)::int AS df, sum(dl)::int AS dl FROM ("
        f"SELECT {group}, f AS q, 1 AS df, 0 AS dl FROM edges UNION ALL SELECT {group}, l, 0, 1 FROM edges)"
        f" AS m GROUP BY {group}, q)"
        f" SELECT {', '.join(f'g.{name}' for name in columns)}, array_agg(COALESCE(c.df, 0) ORDER BY i),"
        " array_agg(COALESCE(c.dl, 0) ORDER BY i)"
        f" FROM (SELECT DISTINCT {group} FROM edges) AS g CROSS JOIN generate_series(0, 95) AS i"
        f" LEFT JOIN counts c ON {on} AND c.q = i GROUP BY {', '.join(f'g.{name}' for name in columns)}"
    )


def upgrade() -> None:
    conn = op.get_bind()
    op.execute("ALTER TABLE activity ADD COLUMN prev_last smallint")
    op.execute("ALTER TABLE page_activity ADD COLUMN prev_last smallint")
    op.execute(
        f"ALTER TABLE page_day ADD COLUMN firsts integer[] NOT NULL DEFAULT {ZERO},"
        f" ADD COLUMN lasts integer[] NOT NULL DEFAULT {ZERO},"
        " ADD COLUMN nil_first smallint, ADD COLUMN nil_last smallint"
    )
    schema.create_tables(conn, [activity_day])
    conn.execute(
        text(
            f"UPDATE activity a SET prev_last = {last('p.q0', 'p.q1')} FROM activity p"
            " WHERE a.prev = a.day - 1 AND p.kind = a.kind AND p.site_id = a.site_id AND p.key = a.key"
            " AND p.day = a.day - 1"
        )
    )
    conn.execute(
        text(
            "INSERT INTO activity_day (kind, site_id, day, firsts, lasts)"
            f" {histogram('activity', ('kind', 'site_id', 'day'))}"
        )
    )
    conn.execute(
        text(
            f"UPDATE page_activity a SET prev_last = {last('p.q0', 'p.q1')} FROM page_activity p"
            f" WHERE a.key <> '{NIL}' AND p.site_id = a.site_id AND p.day = a.day - 1 AND p.page = a.page"
            " AND p.key = a.key"
        )
    )
    conn.execute(
        text(
            f"UPDATE page_day d SET firsts = h.firsts, lasts = h.lasts FROM ("
            f"{histogram('page_activity', ('site_id', 'day', 'page'), VISITORS)})"
            " AS h(site_id, day, page, firsts, lasts)"
            " WHERE d.site_id = h.site_id AND d.day = h.day AND d.page = h.page"
        )
    )
    conn.execute(
        text(
            f"UPDATE page_day d SET nil_first = {first('a.q0', 'a.q1')}, nil_last = {last('a.q0', 'a.q1')}"
            f" FROM page_activity a WHERE a.key = '{NIL}' AND a.site_id = d.site_id AND a.day = d.day"
            " AND a.page = d.page"
        )
    )
    op.execute("ALTER TABLE page_day ALTER COLUMN firsts DROP DEFAULT, ALTER COLUMN lasts DROP DEFAULT")
    op.execute(
        "CREATE INDEX ix_activity_overlap ON activity (kind, site_id, day) INCLUDE (q0, q1, prev_last)"
        " WHERE prev_last IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX ix_page_activity_overlap ON page_activity (site_id, day, page)"
        " INCLUDE (q0, q1, prev_last) WHERE prev_last IS NOT NULL"
    )
    op.execute("ANALYZE activity")
    op.execute("ANALYZE page_activity")
    op.execute("ANALYZE activity_day")
    op.execute("ANALYZE page_day")


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
