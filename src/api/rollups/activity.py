"""Activity: who was active on which UTC day and quarter hour, for exact unique visitors and
sessions in milliseconds (both editions alike).

A kind is what is counted: visitors (the stats API's visitor key: visitor id, else user id,
else address + User-Agent) or sessions (the session id). Keys are kept as md5 UUIDs of their
text, so rows are narrow; two keys share a UUID with probability about n² / 2¹²⁹ (10⁻²⁶ for a
billion keys).

- `activity`: one row per (kind, site, key, UTC day the key was active). `q0`/`q1` have bit i
  set when it was active in the day's quarter hour i (q0: quarters 0-63, q1: 64-95); `prev` and
  `next` are the key's previous and next active days (NULL: none).
- `activity_first`: per (kind, site, day, since), how many keys were active on `day` with
  `since` (their previous active day, -1 for none) before it. A key is counted once over the
  whole days [lo, hi): on its first active day there, the one whose previous day is before lo.

A question's distinct count over [start, end) (src/api/stats/repository.py) is then

    Σ activity_first(day in [lo, hi), since < lo)          the keys of its whole days
  + the rows of the day before lo that meet the start's quarters and whose `next` is ≥ hi
  + the rows of day hi that meet the end's quarters, whose `prev` is < lo, and that are not
    already counted on the day before lo
  + the keys of what is not folded yet, and of the parts of a quarter at either end (read from
    raw events), that none of those rows holds

— a few hundred rows read where raw events are millions, and the number is the raw events' own.

A range that is the end of one day and the start of the next (a day of Kathmandu or New York)
has no whole days: `activity_day` counts, per (kind, site, day), the keys by their first and by
their last quarter hour (arrays of 96), and each row's `prev_last` is its key's last quarter on
the day before (NULL: not active then). The range's keys are then those whose last quarter of
the first day is in it, plus those whose first quarter of the second is, less those whose row
on the second meets the range and whose `prev_last` is in it (a partial index holds the rows
with a `prev_last`: the keys active on consecutive days).

Kept exact:
- the statement that stores events appends (site, kind, key, quarter) of the rows it really
  inserted to `activity_late` (one plain insert: duplicates add nothing, late events land on
  their quarter); the fold (FOLD_SQL: with the rollups' fold, every ROLLUP_FOLD_INTERVAL, and
  before every recount) ORs the quarters into the rows, links the keys' new days into their
  chains, moves the counts of `activity_first` and `activity_day` by what changed and tells
  the next day's row a key's new last quarter; questions read the unfolded changes beside it;
- a delete folds, then recomputes its key's day from the raw events left (recount), unlinking
  the day when none is, and moves the same counts;
- retention deletes the days older than EVENTS_RETENTION (a `prev` may then name a day no
  longer there: it is still before every range a question can ask), and the first day left
  forgets its `prev_last`.
Every writer of the folded tables holds the fold lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from src.api.rollups.catalogue import DAY, QUARTER, ceil_quarter, floor_quarter
from src.api.rollups.maintenance import FOLD_LOCK_KEY

ACTIVITY = "activity"
ACTIVITY_FIRST = "activity_first"
ACTIVITY_LATE = "activity_late"
ACTIVITY_DAY = "activity_day"
QUARTERS_PER_DAY = DAY // QUARTER
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# What each kind counts, as SQL over an event row (NULL: not counted): the one definition of a
# visitor and a session, which the raw distinct counts (src/api/stats/repository.py) use too.
KINDS: dict[str, tuple[int, str]] = {
    "visitors": (1, "COALESCE(visitor_id, user_id, ip_address || ' ' || COALESCE(user_agent, ''))"),
    "sessions": (2, "session_id"),
}
# The columns of an event row these and page activity (pages.py) need (the ingest statement
# returns them).
KEY_COLUMNS = ("site_id", "time", "page", "visitor_id", "user_id", "ip_address", "user_agent", "session_id")

DAY_SQL = "floor(extract(epoch FROM {t}) / 86400)::int"
QUARTER_SQL = "floor(extract(epoch FROM {t}) / 900)::int"


def quarter_bits(quarter: str) -> tuple[str, str]:
    """SQL of (q0, q1) with the one bit of `quarter` (quarters since 1970, SQL) set."""
    of_day = f"(({quarter}) % {QUARTERS_PER_DAY})"
    return (
        f"CASE WHEN {of_day} < 64 THEN 1::bigint << {of_day} ELSE 0::bigint END",
        f"CASE WHEN {of_day} >= 64 THEN 1::bigint << ({of_day} - 64) ELSE 0::bigint END",
    )


def first_quarter_sql(q0: str, q1: str) -> str:
    """SQL: the first quarter hour (0-95) set in a day's bits (q0, q1: SQL), NULL when none."""
    return (
        f"CASE WHEN {q0} <> 0 THEN strpos(reverse(CAST({q0} AS bit(64))::text), '1') - 1"
        f" WHEN {q1} <> 0 THEN strpos(reverse(CAST({q1} AS bit(64))::text), '1') + 63 END"
    )


def last_quarter_sql(q0: str, q1: str) -> str:
    """SQL: the last quarter hour (0-95) set in a day's bits, NULL when none."""
    return (
        f"CASE WHEN {q1} <> 0 THEN 128 - strpos(CAST({q1} AS bit(64))::text, '1')"
        f" WHEN {q0} <> 0 THEN 64 - strpos(CAST({q0} AS bit(64))::text, '1') END"
    )


def edges_of(q0: int | None, q1: int | None) -> tuple[int | None, int | None]:
    """The first and last quarter hours set in a day's bits (q0 signed, as stored); (None,
    None) for none."""
    bits = ((q0 or 0) & ((1 << 64) - 1)) | ((q1 or 0) << 64)
    if not bits:
        return None, None
    return (bits & -bits).bit_length() - 1, bits.bit_length() - 1


def edge_moves_sql(edges: str, group: str) -> str:
    """SQL: how per-day counts of first and last quarters move (columns: `group`, quarter, df,
    dl) when the rows of `edges` (columns: `group`, f_old, f_new, l_old, l_new; NULL: no row)
    change."""
    return " UNION ALL ".join(
        f"SELECT {group}, {column} AS quarter, {df} AS df, {dl} AS dl FROM {edges}"
        f" WHERE {old} IS DISTINCT FROM {new} AND {column} IS NOT NULL"
        for column, old, new, df, dl in (
            ("f_old", "f_old", "f_new", -1, 0),
            ("f_new", "f_old", "f_new", 1, 0),
            ("l_old", "l_old", "l_new", 0, -1),
            ("l_new", "l_old", "l_new", 0, 1),
        )
    )


def histogram_sql(moves: str, group: tuple[str, ...]) -> str:
    """SQL: per group of `moves` (columns: `group`, quarter, df, dl), the counts `firsts` and
    `lasts` as arrays of 96 (quarter i at index i + 1)."""
    columns = ", ".join(f"grp.{c}" for c in group)
    on = " AND ".join(f"m.{c} = grp.{c}" for c in group)
    return (
        f"SELECT {columns}, array_agg(COALESCE(m.df, 0) ORDER BY i) AS firsts,"
        " array_agg(COALESCE(m.dl, 0) ORDER BY i) AS lasts"
        f" FROM (SELECT DISTINCT {', '.join(group)} FROM {moves}) AS grp"
        f" CROSS JOIN generate_series(0, {QUARTERS_PER_DAY - 1}) AS i LEFT JOIN ("
        f"SELECT {', '.join(group)}, quarter, CAST(sum(df) AS int) AS df, CAST(sum(dl) AS int) AS dl"
        f" FROM {moves} GROUP BY {', '.join(group)}, quarter) AS m ON {on} AND m.quarter = i"
        f" GROUP BY {columns}"
    )


def added_sql(stored: str, delta: str) -> str:
    """SQL: two arrays of counts added element by element."""
    return f"ARRAY(SELECT a + b FROM unnest({stored}, {delta}) WITH ORDINALITY AS u(a, b, i) ORDER BY i)"


def slice_sum_sql(array: str, lo: str, hi: str) -> str:
    """SQL: the sum of counts of quarters [lo, hi) (SQL integers) of an array of 96."""
    return f"(SELECT COALESCE(sum(x), 0) FROM unnest({array}[({lo}) + 1:{hi}]) AS x)"


def _keys(source: str) -> str:
    """(site_id, kind, key, quarter) of each counted key of the rows of `source`. Not made
    distinct here: the fold groups them anyway, and hashing every batch's keys costs more than
    appending the few repeats."""
    return " UNION ALL ".join(
        f"SELECT site_id, {kind}::smallint AS kind, md5({expression})::uuid AS key,"
        f" {QUARTER_SQL.format(t='time')} AS quarter FROM {source} WHERE {expression} IS NOT NULL"
        for kind, expression in KINDS.values()
    )


def append_cte(source: str) -> str:
    """A CTE (after `WITH {source} AS (INSERT … RETURNING KEY_COLUMNS)`) that appends the
    inserted rows' keys to activity_late."""
    return f"activity_change AS (INSERT INTO {ACTIVITY_LATE} (site_id, kind, key, quarter) {_keys(source)})"


_Q0, _Q1 = quarter_bits("quarter")
_SAME_KEY = "USING (kind, site_id, key)"
# How `activity_first` moves when rows `before` of some keys become rows `after`: -1 for each
# (day, since) of before, +1 for each of after; only what changed is written.
_DELTA = (
    "delta AS (SELECT kind, site_id, day, since, sum(n) AS n FROM ("
    " SELECT kind, site_id, day, COALESCE(prev, -1) AS since, -1 AS n FROM before"
    " UNION ALL SELECT kind, site_id, day, COALESCE(prev, -1), 1 FROM after) AS moves"
    " GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0),"
    f" counted AS (INSERT INTO {ACTIVITY_FIRST} AS f (kind, site_id, day, since, n)"
    " SELECT kind, site_id, day, since, n FROM delta"
    " ON CONFLICT (kind, site_id, day, since) DO UPDATE SET n = f.n + excluded.n)"
)

_NEW0, _NEW1 = "COALESCE(o0, 0) | q0", "COALESCE(o1, 0) | q1"
# The folds' (here and pages.py): a changed row's first and last quarters before (its stored
# quarters o0, o1; NULL: no row yet) and after (the change's q0, q1 ORed in).
EDGES_SQL = (
    f"{first_quarter_sql('o0', 'o1')} AS f_old, {first_quarter_sql(_NEW0, _NEW1)} AS f_new,"
    f" {last_quarter_sql('o0', 'o1')} AS l_old, {last_quarter_sql(_NEW0, _NEW1)} AS l_new"
)
# The folds': a row's `prev_last` as it is after the fold — the last quarter of the key's
# stored row of the day before (p) with that day's change (pg) ORed in; NULL: neither.
PREV_LAST_SQL = "CAST({} AS smallint)".format(
    last_quarter_sql("COALESCE(p.q0, 0) | COALESCE(pg.q0, 0)", "COALESCE(p.q1, 0) | COALESCE(pg.q1, 0)")
)
_DAY_GROUP = ("kind", "site_id", "day")

# The fold, one statement (it sees the tables as they were when it began):
# - moved: the changes, taken out; grouped: one row per (kind, site, key, day), quarters ORed;
#   stored: with the row's stored quarters (o0, o1; NULL: no row yet);
# - fresh: the days not stored yet; touched: their keys, whose chains change;
# - before: the touched keys' stored rows; after: their chains again, with the fresh days;
# - changed: the touched keys' rows that `after` changes (quarters ORed in), and the other
#   changes' quarters ORed into their rows (prev = -2: keep the links);
# - written: those, each with `prev_last` (its key's last quarter the day before, as it is
#   now), and the next days' rows of the keys whose last quarter moved, with it;
# - edges/histogram: activity_day's counts of first and last quarters move;
# - delta/counted: activity_first moves by `after` less `before`.
FOLD_SQL = text(
    f"WITH moved AS (DELETE FROM {ACTIVITY_LATE} RETURNING site_id, kind, key, quarter),"
    f" grouped AS (SELECT kind, site_id, key, quarter / {QUARTERS_PER_DAY} AS day,"
    f" bit_or({_Q0}) AS q0, bit_or({_Q1}) AS q1 FROM moved GROUP BY 1, 2, 3, 4),"
    " stored AS (SELECT g.kind, g.site_id, g.key, g.day, g.q0, g.q1, a.q0 AS o0, a.q1 AS o1"
    f" FROM grouped g LEFT JOIN {ACTIVITY} a USING (kind, site_id, key, day)),"
    " fresh AS (SELECT kind, site_id, key, day FROM stored WHERE o0 IS NULL),"
    " touched AS (SELECT DISTINCT kind, site_id, key FROM fresh),"
    f" before AS (SELECT a.kind, a.site_id, a.key, a.day, a.prev, a.next FROM {ACTIVITY} a JOIN touched t"
    f" {_SAME_KEY}),"
    " after AS (SELECT kind, site_id, key, day,"
    " lag(day) OVER w AS prev, lead(day) OVER w AS next"
    " FROM (SELECT kind, site_id, key, day FROM before UNION ALL SELECT * FROM fresh) AS days"
    " WINDOW w AS (PARTITION BY kind, site_id, key ORDER BY day)),"
    " changed AS (SELECT c.kind, c.site_id, c.key, c.day, COALESCE(g.q0, 0) AS q0, COALESCE(g.q1, 0) AS q1,"
    " c.prev, c.next FROM after c LEFT JOIN grouped g USING (kind, site_id, key, day)"
    " LEFT JOIN before b USING (kind, site_id, key, day) WHERE g.key IS NOT NULL OR b.key IS NULL"
    " OR c.prev IS DISTINCT FROM b.prev OR c.next IS DISTINCT FROM b.next"
    " UNION ALL SELECT g.kind, g.site_id, g.key, g.day, g.q0, g.q1, -2, -2 FROM grouped g"
    f" WHERE NOT EXISTS (SELECT 1 FROM touched t WHERE t.kind = g.kind AND t.site_id = g.site_id"
    " AND t.key = g.key)),"
    f" edges AS (SELECT kind, site_id, key, day, {EDGES_SQL} FROM stored),"
    f" written AS (INSERT INTO {ACTIVITY} AS a (kind, site_id, key, day, q0, q1, prev, next, prev_last)"
    f" SELECT c.kind, c.site_id, c.key, c.day, c.q0, c.q1, c.prev, c.next, {PREV_LAST_SQL}"
    f" FROM changed c LEFT JOIN {ACTIVITY} p ON p.kind = c.kind AND p.site_id = c.site_id"
    " AND p.key = c.key AND p.day = c.day - 1 LEFT JOIN grouped pg ON pg.kind = c.kind"
    " AND pg.site_id = c.site_id AND pg.key = c.key AND pg.day = c.day - 1"
    " UNION ALL SELECT n.kind, n.site_id, n.key, n.day, 0, 0, -2, -2, CAST(e.l_new AS smallint)"
    f" FROM edges e JOIN {ACTIVITY} n ON n.kind = e.kind AND n.site_id = e.site_id AND n.key = e.key"
    " AND n.day = e.day + 1 WHERE e.l_old IS DISTINCT FROM e.l_new AND NOT EXISTS (SELECT 1 FROM changed c"
    " WHERE c.kind = n.kind AND c.site_id = n.site_id AND c.key = n.key AND c.day = n.day)"
    " ON CONFLICT (kind, site_id, key, day) DO UPDATE SET q0 = a.q0 | excluded.q0,"
    " q1 = a.q1 | excluded.q1,"
    " prev = CASE WHEN excluded.prev = -2 THEN a.prev ELSE excluded.prev END,"
    " next = CASE WHEN excluded.next = -2 THEN a.next ELSE excluded.next END,"
    " prev_last = excluded.prev_last),"
    f" moves AS ({edge_moves_sql('edges', ', '.join(_DAY_GROUP))}),"
    f" histogram AS (INSERT INTO {ACTIVITY_DAY} AS t (kind, site_id, day, firsts, lasts)"
    f" {histogram_sql('moves', _DAY_GROUP)} ON CONFLICT (kind, site_id, day) DO UPDATE SET"
    f" firsts = {added_sql('t.firsts', 'excluded.firsts')},"
    f" lasts = {added_sql('t.lasts', 'excluded.lasts')}),"
    f" {_DELTA}"
    " SELECT count(*) FROM moved"
)
FOLD_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=FOLD_LOCK_KEY)

# After a delete (and a fold, under its lock): a deleted row's day for one key, from the raw
# events of the site left that day. Bound: site_id, day, day_start, day_end, key (the text).
_LEFT_SQL = {
    name: text(
        "SELECT bit_or({}) AS q0, bit_or({}) AS q1 FROM event".format(
            *quarter_bits(QUARTER_SQL.format(t="time"))
        )
        + f" WHERE site_id = :site_id AND time >= :day_start AND time < :day_end AND {expression} = :key"
    )
    for name, (kind, expression) in KINDS.items()
}
_ROW = "kind = :kind AND site_id = :site_id AND key = md5(CAST(:key AS text))::uuid AND day = :day"
_RESET_SQL = text(f"UPDATE {ACTIVITY} SET q0 = :q0, q1 = :q1 WHERE {_ROW}")
# No event left: the day goes, its neighbours link to each other, activity_first follows.
_UNLINK_SQL = text(
    f"WITH gone AS (DELETE FROM {ACTIVITY} WHERE {_ROW} RETURNING kind, site_id, key, day, prev, next),"
    f" to_prev AS (UPDATE {ACTIVITY} a SET next = g.next FROM gone g"
    " WHERE a.kind = g.kind AND a.site_id = g.site_id AND a.key = g.key AND a.day = g.prev),"
    f" to_next AS (UPDATE {ACTIVITY} a SET prev = g.prev FROM gone g"
    " WHERE a.kind = g.kind AND a.site_id = g.site_id AND a.key = g.key AND a.day = g.next),"
    " before AS (SELECT kind, site_id, day, prev FROM gone"
    " UNION ALL SELECT kind, site_id, next, day FROM gone WHERE next IS NOT NULL),"
    " after AS (SELECT kind, site_id, next AS day, prev FROM gone WHERE next IS NOT NULL),"
    f" {_DELTA}"
    " SELECT count(*) FROM gone"
)


_STORED_SQL = text(f"SELECT q0, q1 FROM {ACTIVITY} WHERE {_ROW}")
# The day's counts of first and last quarters move by `firsts`/`lasts` (arrays of 96).
_HISTOGRAM_SQL = text(
    f"UPDATE {ACTIVITY_DAY} SET firsts = {added_sql('firsts', 'CAST(:firsts AS int[])')},"
    f" lasts = {added_sql('lasts', 'CAST(:lasts AS int[])')}"
    " WHERE kind = :kind AND site_id = :site_id AND day = :day"
)
# The key's next day's row learns the day's last quarter now (NULL: none).
_NEXT_DAY_SQL = text(
    f"UPDATE {ACTIVITY} SET prev_last = :last WHERE kind = :kind AND site_id = :site_id"
    " AND key = md5(CAST(:key AS text))::uuid AND day = :day + 1"
)


@dataclass(frozen=True)
class Recount:
    """What recomputes one row of a deleted event's day, here or in page activity (`row`
    binds it, `day` among it): `left` reads its quarters from the events left that day (q0,
    q1: NULL for none), `stored` its stored ones; `reset` sets them, or `gone` takes the row
    away; `histogram` moves the day's counts of first and last quarters (binds firsts, lasts
    and `nil`: whether the key is page activity's nil key); `next_day` tells the key's next
    day's row the day's last quarter when it moved (binds `last`)."""

    left: TextClause
    stored: TextClause
    reset: TextClause
    gone: TextClause
    histogram: TextClause
    next_day: TextClause


_RECOUNTS = {
    name: Recount(_LEFT_SQL[name], _STORED_SQL, _RESET_SQL, _UNLINK_SQL, _HISTOGRAM_SQL, _NEXT_DAY_SQL)
    for name in KINDS
}


async def recount(session: AsyncSession, site_id: str, kind_name: str, key: str, day: int) -> None:
    """A deleted event's key on its day (after fold_late, in the same transaction): its quarters
    from the events left, or the day unlinked when none is."""
    row = {"site_id": site_id, "day": day, "key": key, "kind": KINDS[kind_name][0]}
    await recompute(session, _RECOUNTS[kind_name], row)


async def recompute(
    session: AsyncSession, statements: Recount, row: dict[str, Any], *, nil: bool = False
) -> None:
    """One row of a deleted event's day (see Recount): its quarters from the events left, the
    day's counts of first and last quarters, and the next day's `prev_last`."""
    day_start = EPOCH + timedelta(days=row["day"])
    bounds = {**row, "day_start": day_start, "day_end": day_start + timedelta(days=1)}
    stored = (await session.execute(statements.stored, bounds)).one_or_none()
    q0, q1 = (await session.execute(statements.left, bounds)).one()
    if q0 is not None:
        await session.execute(statements.reset, {**bounds, "q0": q0, "q1": q1})
    else:
        await session.execute(statements.gone, bounds)
    (f_old, l_old), (f_new, l_new) = edges_of(*(stored or (None, None))), edges_of(q0, q1)
    if (f_old, l_old) != (f_new, l_new):
        firsts, lasts = [0] * QUARTERS_PER_DAY, [0] * QUARTERS_PER_DAY
        for counts, old, new in ((firsts, f_old, f_new), (lasts, l_old, l_new)):
            if old is not None:
                counts[old] -= 1
            if new is not None:
                counts[new] += 1
        await session.execute(
            statements.histogram,
            {**bounds, "firsts": firsts, "lasts": lasts, "nil": nil, "first": f_new, "last": l_new},
        )
    if l_old != l_new and not nil:  # the nil key's rows keep no prev_last
        await session.execute(statements.next_day, {**bounds, "last": l_new})


# Retention (under the fold lock): the days before the cutoff day go; the cutoff day's rows
# forget the day before it.
TRIM_SQL = (
    text(f"DELETE FROM {ACTIVITY} WHERE day < CAST(:day AS int)"),
    text(f"UPDATE {ACTIVITY} SET prev_last = NULL WHERE day = CAST(:day AS int) AND prev_last IS NOT NULL"),
    text(f"DELETE FROM {ACTIVITY_FIRST} WHERE day < CAST(:day AS int)"),
    text(f"DELETE FROM {ACTIVITY_DAY} WHERE day < CAST(:day AS int)"),
    text(f"DELETE FROM {ACTIVITY_LATE} WHERE quarter < CAST(:day AS int) * {QUARTERS_PER_DAY}"),
)


def prev_last_sql(window: str) -> str:
    """SQL: a row's `prev_last` from its key's previous row (over `window`, ordered by day)."""
    last = last_quarter_sql(f"lag(q0) OVER {window}", f"lag(q1) OVER {window}")
    return f"CASE WHEN lag(day) OVER {window} = day - 1 THEN CAST({last} AS smallint) END"


def rebuilt_histogram_sql(table: str, group: tuple[str, ...], where: str = "") -> str:
    """SQL: (group, firsts, lasts) counted from the rows of `table` (`where`: which)."""
    columns = ", ".join(group)
    rows = f"SELECT {columns}, {{}} AS quarter, {{}} AS df, {{}} AS dl FROM {table}{where}"
    moves = " UNION ALL ".join(
        (
            rows.format(first_quarter_sql("q0", "q1"), 1, 0),
            rows.format(last_quarter_sql("q0", "q1"), 0, 1),
        )
    )
    return f"WITH moves AS ({moves}) {histogram_sql('moves', group)}"


def _rebuild(kind: int, expression: str) -> str:
    q0, q1 = quarter_bits("quarter")
    return (
        f"INSERT INTO {ACTIVITY} (kind, site_id, key, day, q0, q1, prev, next, prev_last)"
        " SELECT kind, site_id, key, day, q0, q1, lag(day) OVER w, lead(day) OVER w,"
        f" {prev_last_sql('w')} FROM ("
        f" SELECT {kind} AS kind, site_id, key, quarter / {QUARTERS_PER_DAY} AS day,"
        f" bit_or({q0}) AS q0, bit_or({q1}) AS q1 FROM ("
        f" SELECT site_id, md5({expression})::uuid AS key, {QUARTER_SQL.format(t='time')} AS quarter"
        f" FROM event WHERE {expression} IS NOT NULL) AS e GROUP BY 1, 2, 3, 4) AS d"
        " WINDOW w AS (PARTITION BY kind, site_id, key ORDER BY day)"
    )


# Everything made again from every stored event (after a bulk load that bypassed the writer).
REBUILD_SQL = (
    text(f"TRUNCATE {ACTIVITY}, {ACTIVITY_FIRST}, {ACTIVITY_DAY}, {ACTIVITY_LATE}"),
    *(text(_rebuild(kind, expression)) for kind, expression in KINDS.values()),
    text(
        f"INSERT INTO {ACTIVITY_FIRST} (kind, site_id, day, since, n)"
        f" SELECT kind, site_id, day, COALESCE(prev, -1), count(*) FROM {ACTIVITY} GROUP BY 1, 2, 3, 4"
    ),
    text(
        f"INSERT INTO {ACTIVITY_DAY} (kind, site_id, day, firsts, lasts)"
        f" {rebuilt_histogram_sql(ACTIVITY, _DAY_GROUP)}"
    ),
)


async def trim(conn: AsyncConnection, day: int, statements: tuple[TextClause, ...] = TRIM_SQL) -> None:
    """Retention: forget the days before `day` (with `statements` binding it: these tables', or
    page activity's), under the fold lock."""
    await conn.execute(FOLD_LOCK)
    for statement in statements:
        await conn.execute(statement, {"day": day})


@dataclass(frozen=True)
class Span:
    """[start, end) as the activity tables count it: the whole days [lo, hi); the day `first`
    (lo - 1) when the range starts inside it, and `last` (hi) when it ends inside it, each
    with the range's quarters of it; the whole quarters [quarter_lo, quarter_hi) since 1970
    (what unfolded changes must lie in); and the parts of a quarter at either end, which raw
    events answer. A range inside one day is `first` alone, with lo = hi = first + 1."""

    lo: int
    hi: int
    first: int | None
    first_quarters: tuple[int, int]
    last: int | None
    last_quarters: tuple[int, int]
    quarter_lo: int
    quarter_hi: int
    raw: tuple[tuple[datetime, datetime], ...]
    # The quarter of `first` its part starts at, and of `last` its part ends before.
    first_from: int = 0
    last_until: int = 0

    @property
    def adjacent(self) -> bool:
        """Whether the range is the end of one day and the start of the next (a Kathmandu or
        New York day): activity_day's counts, less the keys in both, count it."""
        return self.lo == self.hi and self.first is not None and self.last is not None

    def params(self) -> dict[str, Any]:
        return {
            "first_from": self.first_from,
            "last_until": self.last_until,
            "lo": self.lo,
            "hi": self.hi,
            "first": self.first,
            "first_q0": self.first_quarters[0],
            "first_q1": self.first_quarters[1],
            "last": self.last,
            "last_q0": self.last_quarters[0],
            "last_q1": self.last_quarters[1],
            "quarter_lo": self.quarter_lo,
            "quarter_hi": self.quarter_hi,
            **{
                f"raw{n}_{edge}": bounds[i]
                for n, bounds in enumerate(self.raw)
                for i, edge in enumerate(("start", "end"))
            },
        }


def quarters_of_day(lo: int, hi: int) -> tuple[int, int]:
    """(q0, q1) with the day's quarters [lo, hi) set, q0 as a signed bigint."""
    bits = ((1 << hi) - 1) ^ ((1 << lo) - 1)
    q0, q1 = bits & ((1 << 64) - 1), bits >> 64
    return (q0 - (1 << 64) if q0 >= 1 << 63 else q0), q1


def whole_quarters(start: datetime, end: datetime) -> tuple[int, int, tuple[tuple[datetime, datetime], ...]]:
    """The whole quarter hours of [start, end) as [lo, hi) since 1970 (lo >= hi: none), and the
    parts of a quarter before and after them."""
    lo_at, hi_at = ceil_quarter(start), floor_quarter(end)
    if lo_at >= hi_at:
        return 0, 0, ((start, end),)
    raw = tuple((a, b) for a, b in ((start, lo_at), (hi_at, end)) if a < b)
    return int(lo_at.timestamp()) // QUARTER, int(hi_at.timestamp()) // QUARTER, raw


def span(start: datetime, end: datetime) -> Span | None:
    """The activity tables' reading of [start, end); None when it holds no whole quarter hour
    (raw events count such a range faster)."""
    quarter_lo, quarter_hi, raw = whole_quarters(start, end)
    if quarter_lo >= quarter_hi:
        return None
    per_day = QUARTERS_PER_DAY
    lo, hi = -(-quarter_lo // per_day), quarter_hi // per_day
    if lo > hi:  # inside one day
        day = hi
        quarters = quarters_of_day(quarter_lo - day * per_day, quarter_hi - day * per_day)
        return Span(
            day + 1,
            day + 1,
            day,
            quarters,
            None,
            (0, 0),
            quarter_lo,
            quarter_hi,
            raw,
            quarter_lo - day * per_day,
        )
    first = lo - 1 if quarter_lo < lo * per_day else None
    last = hi if quarter_hi > hi * per_day else None
    return Span(
        lo,
        hi,
        first,
        quarters_of_day(quarter_lo - (lo - 1) * per_day, per_day) if first is not None else (0, 0),
        last,
        quarters_of_day(0, quarter_hi - hi * per_day) if last is not None else (0, 0),
        quarter_lo,
        quarter_hi,
        raw,
        quarter_lo - (lo - 1) * per_day if first is not None else 0,
        quarter_hi - hi * per_day if last is not None else 0,
    )
