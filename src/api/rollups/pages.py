"""Page activity: which visitors saw which page on which UTC day and quarter hour, for exact
daily unique visitors by page in milliseconds (both editions alike).

- `page_activity`: one row per (site, UTC day, page, visitor key) with the day's quarter hours
  as 96 bits (q0: quarters 0-63, q1: 64-95), as activity.py keeps them per key;
- `page_day`: per (site, UTC day, page), how many such rows (`keys`) and how many of them are
  visitors (`visitors`: events without a visitor key are the nil key, which keeps its page's
  group, at zero, as the raw count does, and is never counted).

A bucket is a set of pieces — (UTC day, the bucket's quarters of it) — and a page's visitors
in it are `page_day`'s where the piece is the whole day; where it starts or ends the day,
`page_day`'s counts of the visitors by their first or last quarter (arrays of 96, as
activity_day's; the nil key's first and last quarters beside them); else (a range that starts
and ends inside one day) the page's rows that meet it. A bucket of two pieces (a Kathmandu or
New York day: the end of one UTC day and the start of the next) takes away the keys in both:
the second piece's rows that meet it and whose `prev_last` (the key's last quarter on the page
the day before) is in the first. What is not folded yet, and the parts of a quarter hour at
the range's ends (raw events), are added where no row holds their key
(src/api/stats/repository.py). A bucket over more than two UTC days (a week) would need its
keys made distinct, which costs more than raw events do: raw events answer it.

Kept exact as activity.py is: the statement that stores events appends (site, page, key,
quarter) of the rows it really inserted to `page_activity_late`; the fold ORs them in and
counts the new rows and moves the first and last quarters' counts in `page_day` (FOLD_SQL,
beside activity's, under its lock); a delete recounts its key's page and day from the events
left (recount); retention deletes the days before the oldest event left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from src.api.rollups.activity import (
    EDGES_SQL,
    KINDS,
    PREV_LAST_SQL,
    QUARTER_SQL,
    QUARTERS_PER_DAY,
    Recount,
    added_sql,
    edge_moves_sql,
    first_quarter_sql,
    histogram_sql,
    last_quarter_sql,
    prev_last_sql,
    quarter_bits,
    quarters_of_day,
    rebuilt_histogram_sql,
    recompute,
    whole_quarters,
)

PAGE_ACTIVITY = "page_activity"
PAGE_ACTIVITY_LATE = "page_activity_late"
PAGE_DAY = "page_day"
NIL_KEY = "00000000-0000-0000-0000-000000000000"
KEY_SQL = f"COALESCE(md5({KINDS['visitors'][1]})::uuid, '{NIL_KEY}'::uuid)"


def append_cte(source: str) -> str:
    """A CTE (after `WITH {source} AS (INSERT … RETURNING …)`, page and activity.KEY_COLUMNS
    among them) that appends the inserted rows' pages and keys to page_activity_late."""
    return (
        f"page_change AS (INSERT INTO {PAGE_ACTIVITY_LATE} (site_id, page, key, quarter)"
        f" SELECT site_id, page, {KEY_SQL}, {QUARTER_SQL.format(t='time')} FROM {source})"
    )


_Q0, _Q1 = quarter_bits("quarter")
_NOT_NIL = f"key <> '{NIL_KEY}'"
_GROUP = ("site_id", "day", "page")
_ZERO = f"array_fill(0, ARRAY[{QUARTERS_PER_DAY}])"
# The fold, one statement (same snapshot, under the fold lock):
# - grouped: the changes' (site, day, page, key) rows, quarters ORed; stored: with the row's
#   stored quarters (o0, o1; NULL: no row yet); edges: its first and last quarters before and
#   after;
# - written: the rows upserted, each with `prev_last` (its key's last quarter on the page the
#   day before, as it is now), and the next days' rows of the keys whose last quarter moved;
# - page_day: the new rows counted, the visitors' first and last quarters moved, the nil key's
#   kept.
FOLD_SQL = text(
    f"WITH moved AS (DELETE FROM {PAGE_ACTIVITY_LATE} RETURNING site_id, page, key, quarter),"
    f" grouped AS (SELECT site_id, quarter / {QUARTERS_PER_DAY} AS day, page, key,"
    f" bit_or({_Q0}) AS q0, bit_or({_Q1}) AS q1 FROM moved GROUP BY 1, 2, 3, 4),"
    " stored AS (SELECT g.site_id, g.day, g.page, g.key, g.q0, g.q1, a.q0 AS o0, a.q1 AS o1"
    f" FROM grouped g LEFT JOIN {PAGE_ACTIVITY} a USING (site_id, day, page, key)),"
    f" edges AS (SELECT site_id, day, page, key, o0, {EDGES_SQL} FROM stored),"
    f" written AS (INSERT INTO {PAGE_ACTIVITY} AS a (site_id, day, page, key, q0, q1, prev_last)"
    " SELECT g.site_id, g.day, g.page, g.key, g.q0, g.q1,"
    f" CASE WHEN g.{_NOT_NIL} THEN {PREV_LAST_SQL} END"
    f" FROM grouped g LEFT JOIN {PAGE_ACTIVITY} p ON p.site_id = g.site_id AND p.day = g.day - 1"
    " AND p.page = g.page AND p.key = g.key LEFT JOIN grouped pg ON pg.site_id = g.site_id"
    " AND pg.day = g.day - 1 AND pg.page = g.page AND pg.key = g.key"
    " UNION ALL SELECT n.site_id, n.day, n.page, n.key, 0, 0, CAST(e.l_new AS smallint)"
    f" FROM edges e JOIN {PAGE_ACTIVITY} n ON n.site_id = e.site_id AND n.day = e.day + 1"
    f" AND n.page = e.page AND n.key = e.key WHERE e.{_NOT_NIL} AND e.l_old IS DISTINCT FROM e.l_new"
    " AND NOT EXISTS (SELECT 1 FROM grouped g WHERE g.site_id = n.site_id AND g.day = n.day"
    " AND g.page = n.page AND g.key = n.key)"
    " ON CONFLICT (site_id, day, page, key) DO UPDATE SET q0 = a.q0 | excluded.q0, q1 = a.q1 | excluded.q1,"
    " prev_last = excluded.prev_last),"
    f" visitor_edges AS (SELECT * FROM edges WHERE {_NOT_NIL}),"
    f" moves AS ({edge_moves_sql('visitor_edges', ', '.join(_GROUP))}),"
    f" histogram AS ({histogram_sql('moves', _GROUP)}),"
    " counts AS (SELECT site_id, day, page, count(*) FILTER (WHERE o0 IS NULL) AS keys,"
    f" count(*) FILTER (WHERE o0 IS NULL AND {_NOT_NIL}) AS visitors,"
    f" min(f_new) FILTER (WHERE NOT {_NOT_NIL}) AS nil_first,"
    f" max(l_new) FILTER (WHERE NOT {_NOT_NIL}) AS nil_last FROM edges GROUP BY 1, 2, 3)"
    f" INSERT INTO {PAGE_DAY} AS t (site_id, day, page, keys, visitors, firsts, lasts, nil_first, nil_last)"
    f" SELECT c.site_id, c.day, c.page, c.keys, c.visitors, COALESCE(h.firsts, {_ZERO}),"
    f" COALESCE(h.lasts, {_ZERO}), c.nil_first, c.nil_last"
    " FROM counts c LEFT JOIN histogram h USING (site_id, day, page)"
    " ON CONFLICT (site_id, day, page) DO UPDATE SET keys = t.keys + excluded.keys,"
    f" visitors = t.visitors + excluded.visitors, firsts = {added_sql('t.firsts', 'excluded.firsts')},"
    f" lasts = {added_sql('t.lasts', 'excluded.lasts')}, nil_first = LEAST(t.nil_first, excluded.nil_first),"
    " nil_last = GREATEST(t.nil_last, excluded.nil_last)"
)

_E0, _E1 = quarter_bits(QUARTER_SQL.format(t="time"))
_LEFT_SQL = text(
    f"SELECT bit_or({_E0}) AS q0, bit_or({_E1}) AS q1 FROM event WHERE site_id = :site_id"
    f" AND time >= :day_start AND time < :day_end AND page = :page AND {KEY_SQL} = CAST(:key AS uuid)"
)
_ROW = "site_id = :site_id AND day = :day AND page = :page AND key = CAST(:key AS uuid)"
_RESET_SQL = text(f"UPDATE {PAGE_ACTIVITY} SET q0 = :q0, q1 = :q1 WHERE {_ROW}")
_GONE_SQL = text(
    f"WITH gone AS (DELETE FROM {PAGE_ACTIVITY} WHERE {_ROW} RETURNING site_id, day, page, key)"
    f" UPDATE {PAGE_DAY} c SET keys = c.keys - 1, visitors = c.visitors - (g.{_NOT_NIL})::int FROM gone g"
    " WHERE c.site_id = g.site_id AND c.day = g.day AND c.page = g.page"
)
# The visitors' counts of first and last quarters move; the nil key's are set.
_HISTOGRAM_SQL = text(
    f"UPDATE {PAGE_DAY} SET"
    f" firsts = CASE WHEN :nil THEN firsts ELSE {added_sql('firsts', 'CAST(:firsts AS int[])')} END,"
    f" lasts = CASE WHEN :nil THEN lasts ELSE {added_sql('lasts', 'CAST(:lasts AS int[])')} END,"
    " nil_first = CASE WHEN :nil THEN CAST(:first AS smallint) ELSE nil_first END,"
    " nil_last = CASE WHEN :nil THEN CAST(:last AS smallint) ELSE nil_last END"
    " WHERE site_id = :site_id AND day = :day AND page = :page"
)
_RECOUNT = Recount(
    _LEFT_SQL,
    text(f"SELECT q0, q1 FROM {PAGE_ACTIVITY} WHERE {_ROW}"),
    _RESET_SQL,
    _GONE_SQL,
    _HISTOGRAM_SQL,
    text(
        f"UPDATE {PAGE_ACTIVITY} SET prev_last = :last WHERE site_id = :site_id AND day = :day + 1"
        " AND page = :page AND key = CAST(:key AS uuid)"
    ),
)
# The key of a deleted row, as page_activity keeps it (bound: the row's visitor key text).
DELETED_KEY_SQL = f"{KEY_SQL} AS page_key"


async def recount(session: AsyncSession, site_id: str, page: str, key: str, day: int) -> None:
    """A deleted event's page and key on its day (after the fold, in its transaction)."""
    row = {"site_id": site_id, "page": page, "key": key, "day": day}
    await recompute(session, _RECOUNT, row, nil=key == NIL_KEY)


TRIM_SQL = (
    text(f"DELETE FROM {PAGE_ACTIVITY} WHERE day < CAST(:day AS int)"),
    text(
        f"UPDATE {PAGE_ACTIVITY} SET prev_last = NULL WHERE day = CAST(:day AS int) AND prev_last IS NOT NULL"
    ),
    text(f"DELETE FROM {PAGE_DAY} WHERE day < CAST(:day AS int)"),
    text(f"DELETE FROM {PAGE_ACTIVITY_LATE} WHERE quarter < CAST(:day AS int) * {QUARTERS_PER_DAY}"),
)


REBUILD_SQL = (
    text(f"TRUNCATE {PAGE_ACTIVITY}, {PAGE_ACTIVITY_LATE}, {PAGE_DAY}"),
    text(
        f"INSERT INTO {PAGE_ACTIVITY} (site_id, day, page, key, q0, q1, prev_last)"
        f" SELECT site_id, day, page, key, q0, q1, CASE WHEN {_NOT_NIL} THEN {prev_last_sql('w')} END FROM ("
        f" SELECT site_id, quarter / {QUARTERS_PER_DAY} AS day, page, key, bit_or({_Q0}) AS q0,"
        f" bit_or({_Q1}) AS q1 FROM ("
        f" SELECT site_id, page, {KEY_SQL} AS key, {QUARTER_SQL.format(t='time')} AS quarter FROM event) AS e"
        " GROUP BY 1, 2, 3, 4) AS d WINDOW w AS (PARTITION BY site_id, page, key ORDER BY day)"
    ),
    text(
        f"INSERT INTO {PAGE_DAY} (site_id, day, page, keys, visitors, firsts, lasts, nil_first, nil_last)"
        f" SELECT c.site_id, c.day, c.page, c.keys, c.visitors, COALESCE(h.firsts, {_ZERO}),"
        f" COALESCE(h.lasts, {_ZERO}), c.nil_first, c.nil_last FROM ("
        " SELECT site_id, day, page, count(*) AS keys,"
        f" count(*) FILTER (WHERE {_NOT_NIL}) AS visitors,"
        f" min({first_quarter_sql('q0', 'q1')}) FILTER (WHERE NOT {_NOT_NIL}) AS nil_first,"
        f" max({last_quarter_sql('q0', 'q1')}) FILTER (WHERE NOT {_NOT_NIL}) AS nil_last"
        f" FROM {PAGE_ACTIVITY} GROUP BY 1, 2, 3) AS c LEFT JOIN ("
        f"{rebuilt_histogram_sql(PAGE_ACTIVITY, _GROUP, f' WHERE {_NOT_NIL}')})"
        " AS h USING (site_id, day, page)"
    ),
)


@dataclass(frozen=True)
class Pieces:
    """Buckets of a range as page activity reads them: pieces (UTC day, bucket start, the
    bucket's quarters [lo, hi) of the day, also as (q0, q1) bits, and for the second piece of
    a bucket over two days, the first one's `lo` (else None)); the whole quarters [quarter_lo,
    quarter_hi) since 1970 they cover; and the raw parts (bucket start, lo, hi) of a quarter
    hour at the buckets' ends. `distinct`: some bucket holds parts of more than two UTC days
    (a week: its keys would have to be made distinct)."""

    days: tuple[int, ...]
    buckets: tuple[datetime, ...]
    q0: tuple[int, ...]
    q1: tuple[int, ...]
    lo: tuple[int, ...]
    hi: tuple[int, ...]
    prev_lo: tuple[int | None, ...]
    quarter_lo: int
    quarter_hi: int
    raw: tuple[tuple[datetime, datetime, datetime], ...]
    distinct: bool

    def params(self) -> dict[str, Any]:
        return {
            "p_days": list(self.days),
            "p_buckets": list(self.buckets),
            "p_q0": list(self.q0),
            "p_q1": list(self.q1),
            "p_lo": list(self.lo),
            "p_hi": list(self.hi),
            "p_prev_lo": list(self.prev_lo),
            "quarter_lo": self.quarter_lo,
            "quarter_hi": self.quarter_hi,
            **{
                f"raw{n}_{name}": value
                for n, part in enumerate(self.raw)
                for name, value in zip(("bucket", "start", "end"), part, strict=True)
            },
        }


def pieces(starts: list[datetime], start: datetime, end: datetime) -> Pieces | None:
    """The pieces of the buckets beginning at `starts` (in order) over [start, end); None when
    no bucket holds a whole quarter hour."""
    per_day = QUARTERS_PER_DAY
    days: list[int] = []
    buckets: list[datetime] = []
    q0s: list[int] = []
    q1s: list[int] = []
    los: list[int] = []
    his: list[int] = []
    prev_los: list[int | None] = []
    raw: list[tuple[datetime, datetime, datetime]] = []
    distinct = False
    for n, bucket in enumerate(starts):
        lo = max(bucket, start)
        hi = min(starts[n + 1], end) if n + 1 < len(starts) else end
        quarter_lo, quarter_hi, parts = whole_quarters(lo, hi)
        raw.extend((bucket, a, b) for a, b in parts)
        if quarter_lo >= quarter_hi:
            continue
        distinct = distinct or quarter_lo // per_day + 1 < (quarter_hi - 1) // per_day
        quarter = quarter_lo
        prev_lo: int | None = None
        while quarter < quarter_hi:
            day = quarter // per_day
            until = min(quarter_hi, (day + 1) * per_day)
            piece_lo, piece_hi = quarter - day * per_day, until - day * per_day
            q0, q1 = quarters_of_day(piece_lo, piece_hi)
            days.append(day)
            buckets.append(bucket)
            q0s.append(q0)
            q1s.append(q1)
            los.append(piece_lo)
            his.append(piece_hi)
            prev_los.append(prev_lo)
            prev_lo = piece_lo
            quarter = until
    if not days:
        return None
    quarter_lo, quarter_hi, _ = whole_quarters(max(starts[0], start), end)
    return Pieces(
        tuple(days),
        tuple(buckets),
        tuple(q0s),
        tuple(q1s),
        tuple(los),
        tuple(his),
        tuple(prev_los),
        quarter_lo,
        quarter_hi,
        tuple(raw),
        distinct,
    )
