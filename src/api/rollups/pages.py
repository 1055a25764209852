"""Page activity: which visitors saw which page on which UTC day and quarter hour, for exact
daily unique visitors by page in milliseconds (both editions alike).

- `page_activity`: one row per (site, UTC day, page, visitor key) with the day's quarter hours
  as 96 bits (q0: quarters 0-63, q1: 64-95), as activity.py keeps them per key;
- `page_day`: per (site, UTC day, page), how many such rows (`keys`) and how many of them are
  visitors (`visitors`: events without a visitor key are the nil key, which keeps its page's
  group, at zero, as the raw count does, and is never counted).

A bucket of whole UTC days is a set of pieces — (UTC day, the bucket's quarters of it) — and a
page's visitors in it are `page_day`'s where the piece is the whole day, else the page's rows
that meet the piece (the range's first and last days). What is not folded yet, and the parts
of a quarter hour at the range's ends (raw events), are added where no row holds their key
(src/api/stats/repository.py). A bucket made of more than one UTC day or of parts of two (a
week; a Kathmandu day) would need its keys made distinct, which costs more than raw events do:
raw events answer it.

Kept exact as activity.py is: the statement that stores events appends (site, page, key,
quarter) of the rows it really inserted to `page_activity_late`; the fold ORs them in and
counts the new rows into `page_day` (FOLD_SQL, beside activity's, under its lock); a delete
recounts its key's page and day from the events left (RECOUNT); retention deletes the days
before the oldest event left.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from src.api.rollups.activity import (
    KINDS,
    QUARTER_SQL,
    QUARTERS_PER_DAY,
    quarter_bits,
    quarters_of_day,
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
# The fold: the changes' (site, day, page, key) rows upserted, quarters ORed; the rows that were
# not there yet counted into page_day (same snapshot, under the fold lock).
FOLD_SQL = text(
    f"WITH moved AS (DELETE FROM {PAGE_ACTIVITY_LATE} RETURNING site_id, page, key, quarter),"
    f" grouped AS (SELECT site_id, quarter / {QUARTERS_PER_DAY} AS day, page, key,"
    f" bit_or({_Q0}) AS q0, bit_or({_Q1}) AS q1 FROM moved GROUP BY 1, 2, 3, 4),"
    f" written AS (INSERT INTO {PAGE_ACTIVITY} AS a (site_id, day, page, key, q0, q1)"
    " SELECT site_id, day, page, key, q0, q1 FROM grouped"
    " ON CONFLICT (site_id, day, page, key) DO UPDATE SET q0 = a.q0 | excluded.q0, q1 = a.q1 | excluded.q1)"
    f" INSERT INTO {PAGE_DAY} AS c (site_id, day, page, keys, visitors)"
    f" SELECT site_id, day, page, count(*), count(*) FILTER (WHERE {_NOT_NIL}) FROM grouped g"
    f" WHERE NOT EXISTS (SELECT 1 FROM {PAGE_ACTIVITY} a WHERE a.site_id = g.site_id AND a.day = g.day"
    " AND a.page = g.page AND a.key = g.key) GROUP BY 1, 2, 3"
    " ON CONFLICT (site_id, day, page) DO UPDATE SET keys = c.keys + excluded.keys,"
    " visitors = c.visitors + excluded.visitors"
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
# The key of a deleted row, as page_activity keeps it (bound: the row's visitor key text).
DELETED_KEY_SQL = f"{KEY_SQL} AS page_key"


async def recount(session: AsyncSession, site_id: str, page: str, key: str, day: int) -> None:
    """A deleted event's page and key on its day (after the fold, in its transaction)."""
    row = {"site_id": site_id, "page": page, "key": key, "day": day}
    await recompute(session, (_LEFT_SQL, _RESET_SQL, _GONE_SQL), row)


TRIM_SQL = (
    text(f"DELETE FROM {PAGE_ACTIVITY} WHERE day < CAST(:day AS int)"),
    text(f"DELETE FROM {PAGE_DAY} WHERE day < CAST(:day AS int)"),
    text(f"DELETE FROM {PAGE_ACTIVITY_LATE} WHERE quarter < CAST(:day AS int) * {QUARTERS_PER_DAY}"),
)


REBUILD_SQL = (
    text(f"TRUNCATE {PAGE_ACTIVITY}, {PAGE_ACTIVITY_LATE}, {PAGE_DAY}"),
    text(
        f"INSERT INTO {PAGE_ACTIVITY} (site_id, day, page, key, q0, q1)"
        f" SELECT site_id, quarter / {QUARTERS_PER_DAY}, page, key, bit_or({_Q0}), bit_or({_Q1}) FROM ("
        f" SELECT site_id, page, {KEY_SQL} AS key, {QUARTER_SQL.format(t='time')} AS quarter FROM event) AS e"
        " GROUP BY 1, 2, 3, 4"
    ),
    text(
        f"INSERT INTO {PAGE_DAY} (site_id, day, page, keys, visitors) SELECT site_id, day, page, count(*),"
        f" count(*) FILTER (WHERE {_NOT_NIL}) FROM {PAGE_ACTIVITY} GROUP BY 1, 2, 3"
    ),
)


@dataclass(frozen=True)
class Pieces:
    """Buckets of a range as page activity reads them: pieces (UTC day, bucket start, the
    bucket's quarters of the day as (q0, q1)); the whole quarters [quarter_lo, quarter_hi)
    since 1970 they cover; and the raw parts (bucket start, lo, hi) of a quarter hour at the
    buckets' ends. `distinct`: some bucket holds parts of two UTC days (its keys would have to
    be made distinct)."""

    days: tuple[int, ...]
    buckets: tuple[datetime, ...]
    q0: tuple[int, ...]
    q1: tuple[int, ...]
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
    days: list[int] = []
    buckets: list[datetime] = []
    q0s: list[int] = []
    q1s: list[int] = []
    raw: list[tuple[datetime, datetime, datetime]] = []
    distinct = False
    for n, bucket in enumerate(starts):
        lo = max(bucket, start)
        hi = min(starts[n + 1], end) if n + 1 < len(starts) else end
        quarter_lo, quarter_hi, parts = whole_quarters(lo, hi)
        raw.extend((bucket, a, b) for a, b in parts)
        if quarter_lo >= quarter_hi:
            continue
        distinct = distinct or quarter_lo // QUARTERS_PER_DAY != (quarter_hi - 1) // QUARTERS_PER_DAY
        quarter = quarter_lo
        while quarter < quarter_hi:
            day = quarter // QUARTERS_PER_DAY
            until = min(quarter_hi, (day + 1) * QUARTERS_PER_DAY)
            q0, q1 = quarters_of_day(quarter - day * QUARTERS_PER_DAY, until - day * QUARTERS_PER_DAY)
            days.append(day)
            buckets.append(bucket)
            q0s.append(q0)
            q1s.append(q1)
            quarter = until
    if not days:
        return None
    quarter_lo, quarter_hi, _ = whole_quarters(max(starts[0], start), end)
    return Pieces(
        tuple(days),
        tuple(buckets),
        tuple(q0s),
        tuple(q1s),
        quarter_lo,
        quarter_hi,
        tuple(raw),
        distinct,
    )
