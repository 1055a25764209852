"""Aggregation SQL over the rollups (15-minute, hourly and daily) and the raw `event` hypertable.

Statements are assembled only from constant fragments and whitelisted dimension expressions
(src/api/stats/question.py); every value — interval, zone, times, filters — is a bound
parameter, and every statement is bounded by [start, end)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.rollups.activity import (
    ACTIVITY,
    ACTIVITY_DAY,
    ACTIVITY_FIRST,
    ACTIVITY_LATE,
    KINDS,
    QUARTERS_PER_DAY,
    Span,
    quarter_bits,
    slice_sum_sql,
)
from src.api.rollups.catalogue import CATALOGUE, IS_PAGEVIEW, sum_sql
from src.api.rollups.pages import KEY_SQL as PAGE_KEY_SQL
from src.api.rollups.pages import NIL_KEY, PAGE_ACTIVITY, PAGE_ACTIVITY_LATE, PAGE_DAY, Pieces
from src.api.stats.planner import RAW, Plan, Run
from src.api.stats.question import DIMENSION_SQL

# Relations a plan may name, each mapped to itself: SQL only ever holds these constants.
RELATIONS: dict[str, str] = {name: name for name in (*CATALOGUE.names, CATALOGUE.late.name, RAW)}

# Who counts as a visitor: the client's visitor id, else its user id, else address + agent.
VISITOR_KEY = KINDS["visitors"][1]
# Users of the older /stats APIs: user id, else visitor id.
USER_KEY = "COALESCE(user_id, visitor_id)"


def _group_ordinals(bucketed: bool, dims: Sequence[str]) -> str:
    # Column 1 is the bucket (or NULL), the dimensions follow.
    ordinals = (["1"] if bucketed else []) + [str(i + 2) for i in range(len(dims))]
    return f" GROUP BY {', '.join(ordinals)}" if ordinals else ""


def _select_dims(dims: Sequence[str]) -> str:
    return "".join(f", {DIMENSION_SQL[d]} AS {d}" for d in dims)


def _order(dims: Sequence[str]) -> str:
    """The answer's order: bucket, then each dimension by code point (Python's string order,
    whatever the database's collation), NULL last."""
    return " ORDER BY b" + "".join(f', {d} COLLATE "C"' for d in dims)


def _filters_sql(filters: Mapping[str, Sequence[str]], site: bool) -> str:
    clauses = [" AND site_id = :site_id"] if site else []
    for name, values in filters.items():
        if values:
            # One array parameter, not a list of them: the statement text is the same for any
            # number of values (and rows() sends it as it is).
            clauses.append(f" AND {DIMENSION_SQL[name]} = ANY(CAST(:f_{name} AS text[]))")
    return "".join(clauses)


def _runs_sql(
    column: str, index: int, runs: Sequence[Run], params: dict[str, Any], *, lateral: bool = False
) -> tuple[str, str]:
    """(relation prefix, condition) restricting `column` to the runs. One run is a plain range.
    Several are a LATERAL subquery per run (bounds bound as arrays): an index range scan each,
    whatever the planner guesses about the array's size."""
    prefix = f"p{index}"
    if len(runs) == 1 and not lateral:
        params[f"{prefix}_lo"], params[f"{prefix}_hi"] = runs[0]
        return "", f"{column} >= :{prefix}_lo AND {column} < :{prefix}_hi"
    params[f"{prefix}_los"] = [lo for lo, _ in runs]
    params[f"{prefix}_his"] = [hi for _, hi in runs]
    params[f"{prefix}_lo"], params[f"{prefix}_hi"] = runs[0][0], runs[-1][1]
    # With `lateral` (every run inside one bucket), each run's bucket is computed once, as b.
    bucket = ", time_bucket(CAST(:interval AS interval), lo, :tz) AS b" if lateral else ""
    runs_sql = (
        f"(SELECT lo, hi{bucket}"
        f" FROM unnest(CAST(:{prefix}_los AS timestamptz[]), CAST(:{prefix}_his AS timestamptz[]))"
        f" AS runs(lo, hi) OFFSET 0) AS {prefix}, LATERAL"
    )
    # The overall range lets TimescaleDB exclude chunks when it plans.
    return runs_sql, (
        f"{column} >= {prefix}.lo AND {column} < {prefix}.hi"
        f" AND {column} >= :{prefix}_lo AND {column} < :{prefix}_hi"
    )


def _bucket(column: str, *, fixed: bool) -> str:
    """SQL: the question's bucket of `column` (a constant column name). In its zone
    (`:tz`); or, with `fixed` — one UTC offset over the whole range and a fixed-width
    interval — the same buckets counted from `:origin`, the zone's 2000-01-03 00:00 (the
    origin time_bucket uses) as an instant: no row is converted to local time, about a third
    of the cost on a million rows."""
    if fixed:
        return f"time_bucket(CAST(:interval AS interval), {column}, CAST(:origin AS timestamptz))"
    return f"time_bucket(CAST(:interval AS interval), {column}, :tz)"


# What additive_statement returns after (b, dimensions…), in this order.
SUM_COLUMNS: tuple[str, ...] = ("events", "pageviews", "avg_duration")


def additive_statement(
    plan: Plan,
    dims: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    *,
    bucketed: bool,
    site: bool,
    fixed: bool = False,
    utc_buckets: bool = False,
) -> tuple[TextClause, dict[str, Any]]:
    """events, pageviews, avg_duration per (bucket?, dims), in the answer's order; each part of
    the plan from its own relation, summed together; with the parameters of the parts' runs.
    With `utc_buckets`, each bucket is its UTC wall-clock time (a timestamp without zone),
    which loads in a quarter of the time of an instant put in a session zone other than UTC."""
    dim_list = _select_dims(dims)
    where = _filters_sql(filters, site)
    group_by = _group_ordinals(bucketed, dims)
    params: dict[str, Any] = {}
    parts = []
    whole = []  # parts whose rows are groups of the answer as they are (planner.Part.whole_groups)
    # Several parts' groups may share a bucket: each part's rows go unaggregated into one
    # GROUP BY over their union (the raw part of a tiered plan is its ragged ends, under a
    # quarter hour each: few rows); a single part is aggregated on its own.
    several = sum(not part.whole_groups for part in plan.parts) > 1
    for index, part in enumerate(plan.parts):
        spec = part.spec
        column = "time" if spec is None else "bucket"
        per_run = bucketed and part.one_bucket_per_run
        lateral, span = _runs_sql(column, index, part.runs, params, lateral=per_run)
        # OFFSET 0 keeps a LATERAL subquery from being flattened into a join the planner may
        # turn inside out (a scan of the whole range joined with the runs).
        # A rollup row whose events were all deleted stays, at zero: it is no group of the answer.
        kept = "" if spec is None else " AND events <> 0"
        rows = f"SELECT * FROM {RELATIONS[part.relation]} WHERE {span}{where}{kept}" + (
            " OFFSET 0" if lateral else ""
        )
        source = f"{lateral} ({rows}) AS r" if lateral else f"({rows}) AS r"
        if part.whole_groups:
            # Each granule is a whole bucket, so its start is the bucket: nothing to aggregate.
            measures = "events, pageviews, duration_sum, duration_count"
            whole.append(f"SELECT bucket AS b{dim_list}, {measures} FROM {source}")
            continue
        if per_run:  # rows of a run that lies inside one bucket share the run's bucket
            bucket = f"p{index}.b AS b"
        elif bucketed and part.granule_is_bucket:  # each granule is one bucket: its own start
            bucket = "bucket AS b"
        elif bucketed:
            bucket = f"{_bucket(column, fixed=fixed)} AS b"
        else:
            bucket = "NULL AS b"
        if several:  # the part's rows, each with its measures
            if spec is None:
                measures = (
                    f"1::bigint AS events, CASE WHEN {IS_PAGEVIEW} THEN 1 ELSE 0 END::bigint AS pageviews,"
                    " COALESCE(duration, 0)::bigint AS duration_sum,"
                    " CASE WHEN duration IS NULL THEN 0 ELSE 1 END::bigint AS duration_count"
                )
            else:
                row_pageviews = (
                    "pageviews"
                    if spec.has_pageviews_column
                    else f"CASE WHEN {IS_PAGEVIEW} THEN events ELSE 0 END"
                )
                measures = f"events, {row_pageviews} AS pageviews, duration_sum, duration_count"
            parts.append(f"SELECT {bucket}{dim_list}, {measures} FROM {source}")
            continue
        if spec is None:
            measures = (
                f"count(*) AS events, count(*) FILTER (WHERE {IS_PAGEVIEW}) AS pageviews,"
                " COALESCE(sum(duration), 0) AS duration_sum, count(duration) AS duration_count"
            )
        else:
            pageviews = (
                sum_sql("pageviews")
                if spec.has_pageviews_column
                else f"{sum_sql('events')} FILTER (WHERE {IS_PAGEVIEW})"
            )
            # bigint, never NULL.
            measures = (
                f"{sum_sql('events')} AS events, COALESCE({pageviews}, 0) AS pageviews,"
                f" {sum_sql('duration_sum')} AS duration_sum, {sum_sql('duration_count')} AS duration_count"
            )
        parts.append(f"SELECT {bucket}{dim_list}, {measures} FROM {source}{group_by}")
    outer_dims = "".join(f", {d}" for d in dims)
    average = "duration_sum::float8 / NULLIF(duration_count, 0) AS avg_duration"
    if several:
        union = " UNION ALL ".join(f"({p})" for p in parts)
        parts = [
            f"SELECT b{outer_dims}, {sum_sql('events')} AS events, {sum_sql('pageviews')} AS pageviews,"
            f" {sum_sql('duration_sum')} AS duration_sum, {sum_sql('duration_count')} AS duration_count"
            f" FROM ({union}) AS parts GROUP BY b{outer_dims}"
            # A late change can take a rollup row's events back to zero (a delete): no group.
            f" HAVING {sum_sql('events')} <> 0"
        ]
    # Whole-group rows share no bucket with any other part's: they join the sums as they are.
    groups = " UNION ALL ".join(f"({p})" for p in whole + parts)
    bucket = "b AT TIME ZONE 'UTC' AS b" if utc_buckets else "b"
    sql = f"SELECT {bucket}{outer_dims}, events, pageviews, {average} FROM ({groups}) AS sums{_order(dims)}"
    return text(sql), params


# Distinct-count metrics and the key each one counts.
DISTINCT_KEYS: dict[str, str] = {name: expression for name, (_, expression) in KINDS.items()}


def distinct_statement(
    metric: str,
    dims: Sequence[str],
    filters: Mapping[str, Sequence[str]],
    *,
    bucketed: bool,
    site: bool,
    fixed: bool = False,
) -> TextClause:
    """Exact distinct visitors or sessions per (bucket?, dims), always from raw events.

    `SELECT DISTINCT` inside and a plain count outside rather than `count(DISTINCT …)`:
    PostgreSQL can hash the former but always sorts for the latter, which is 1.5-2.5 times
    slower on millions of rows. A NULL key keeps its group (count(k) skips it), as
    count(DISTINCT …) would. `metric` is a key of DISTINCT_KEYS, never input text."""
    key = DISTINCT_KEYS[metric]
    inner_dims = _select_dims(dims)
    outer_dims = "".join(f", {d}" for d in dims)
    where = _filters_sql(filters, site)
    bucket = f"{_bucket('time', fixed=fixed)} AS b" if bucketed else "NULL AS b"
    sql = (
        f"SELECT b{outer_dims}, count(k) AS {metric} FROM ("
        f"SELECT DISTINCT {bucket}{inner_dims}, {key} AS k"
        f" FROM event WHERE time >= :start AND time < :end{where}"
        f") AS keys GROUP BY b{outer_dims}{_order(dims)}"
    )
    return text(sql)


def activity_statement(metric: str, span: Span, *, site: bool) -> TextClause:
    """Exact distinct visitors or sessions over [start, end) from the activity tables
    (src/api/rollups/activity.py; how they count is told there). Params: span.params(), and
    site_id. Returns (NULL, count), like distinct_statement's summary row. `metric` is a key of
    activity.KINDS, never input text.

    For one site: activity_first's counts of the whole days, the rows of the two ragged days
    (`first` and `last`) that their links show are not counted elsewhere, and the other keys —
    unfolded changes, and raw events of the parts of a quarter at the ends, a few at most —
    where no row of theirs meets the range. A range that is the end of one day and the start
    of the next (span.adjacent) is activity_day's counts of last quarters of the first and of
    first quarters of the second, less the second's rows whose `prev_last` lies in the first,
    and those other keys. For all sites (a key may be active on several): the keys of the rows
    that meet the range, united with those."""
    kind, expression = KINDS[metric]
    at_site = " AND site_id = :site_id" if site else ""

    def meets(edge: str, alias: str) -> str:
        return (
            f"{alias}.day = :{edge} AND ({alias}.q0 & CAST(:{edge}_q0 AS bigint) <> 0"
            f" OR {alias}.q1 & CAST(:{edge}_q1 AS bigint) <> 0)"
        )

    edges = [edge for edge in ("first", "last") if getattr(span, edge) is not None]
    others = [
        f"SELECT key FROM {ACTIVITY_LATE} WHERE kind = {kind}"
        f" AND quarter >= :quarter_lo AND quarter < :quarter_hi{at_site}",
        *(
            f"SELECT md5({expression})::uuid AS key FROM event"
            f" WHERE time >= :raw{n}_start AND time < :raw{n}_end{at_site} AND {expression} IS NOT NULL"
            for n in range(len(span.raw))
        ),
    ]
    in_range = " OR ".join(["a.day >= :lo AND a.day < :hi", *(meets(edge, "a") for edge in edges)])
    if not site:
        keys = " UNION ".join(
            [
                f"SELECT key FROM {ACTIVITY} a WHERE a.kind = {kind} AND ({in_range})",
                *others,
            ]
        )
        return text(f"SELECT NULL AS b, count(*) AS {metric} FROM ({keys}) AS keys")
    own = f"a.kind = {kind} AND a.site_id = :site_id"
    distinct = f"SELECT DISTINCT key FROM ({' UNION ALL '.join(others)}) AS u"
    unheld = (
        f"(SELECT count(*) FROM ({distinct}) AS o WHERE NOT EXISTS (SELECT 1 FROM {ACTIVITY} a"
        f" WHERE {own} AND a.key = o.key AND ({in_range})))"
    )
    if span.adjacent:
        # The end of one day and the start of the next: the keys whose last quarter of the
        # first is in the range, those whose first quarter of the second is, less those in both.
        day_row = f"FROM {ACTIVITY_DAY} h WHERE h.kind = {kind} AND h.site_id = :site_id AND h.day = :"
        tail = slice_sum_sql("h.lasts", "CAST(:first_from AS int)", str(QUARTERS_PER_DAY))
        head = slice_sum_sql("h.firsts", "0", "CAST(:last_until AS int)")
        both = (
            f"(SELECT count(*) FROM {ACTIVITY} a WHERE {own} AND a.day = :last AND a.prev_last IS NOT NULL"
            f" AND a.prev_last >= CAST(:first_from AS int) AND {meets('last', 'a')})"
        )
        counts = [
            f"COALESCE((SELECT {tail} {day_row}first), 0)",
            f"COALESCE((SELECT {head} {day_row}last), 0)",
        ]
        return text(f"SELECT NULL AS b, {' + '.join(counts)} - {both} + {unheld} AS {metric}")
    parts = [
        f"(SELECT COALESCE(sum(n), 0)::bigint FROM {ACTIVITY_FIRST} WHERE kind = {kind}"
        " AND site_id = :site_id AND day >= :lo AND day < :hi AND since < :lo)"
    ]
    if span.first is not None:
        parts.append(
            f"(SELECT count(*) FROM {ACTIVITY} a WHERE {own} AND {meets('first', 'a')}"
            " AND (a.next IS NULL OR a.next >= :hi))"
        )
    if span.last is not None:
        counted_first = (
            f" AND (a.prev IS DISTINCT FROM :first OR NOT EXISTS (SELECT 1 FROM {ACTIVITY} p"
            f" WHERE p.kind = {kind} AND p.site_id = :site_id AND p.key = a.key AND {meets('first', 'p')}))"
            if span.first is not None
            else ""
        )
        parts.append(
            f"(SELECT count(*) FROM {ACTIVITY} a WHERE {own} AND {meets('last', 'a')}"
            f" AND (a.prev IS NULL OR a.prev < :lo){counted_first})"
        )
    parts.append(unheld)
    return text(f"SELECT NULL AS b, {' + '.join(parts)} AS {metric}")


def page_visitors_statement(pieces: Pieces, filters: Mapping[str, Sequence[str]]) -> TextClause:
    """Exact distinct visitors per (bucket, page) of one site from page activity
    (src/api/rollups/pages.py), each bucket a UTC day, a part of one, or the end of one and
    the start of the next: page_day's counts of the whole days, slices of its first- and
    last-quarter counts for the parts that start or end a day, less the keys in both parts of
    a two-day bucket, the pages' rows that meet any other part, and the keys of unfolded
    changes and of the raw parts of a quarter hour that no row of the bucket holds. Params:
    pieces.params(), site_id, and the filters' (a page filter only). Rows (bucket, page,
    visitors) in answer order, as distinct_statement's."""

    def page_in(alias: str) -> str:
        return f" AND {alias}page = ANY(CAST(:f_page AS text[]))" if filters.get("page") else ""

    def counted(alias: str) -> str:
        return f"count(*) FILTER (WHERE {alias}key <> '{NIL_KEY}')"

    l0, l1 = quarter_bits("l.quarter")
    pieces_sql = (
        "SELECT * FROM unnest(CAST(:p_days AS int[]), CAST(:p_buckets AS timestamptz[]),"
        " CAST(:p_q0 AS bigint[]), CAST(:p_q1 AS bigint[]), CAST(:p_lo AS int[]), CAST(:p_hi AS int[]),"
        " CAST(:p_prev_lo AS int[])) AS p(day, bucket, q0, q1, lo, hi, prev_lo)"
    )
    meets = "(a.q0 & p.q0 <> 0 OR a.q1 & p.q1 <> 0)"
    whole = f"p.lo = 0 AND p.hi = {QUARTERS_PER_DAY}"
    # A piece that starts or ends the day: page_day's counts of first or last quarters.
    edge = f"(p.lo = 0) <> (p.hi = {QUARTERS_PER_DAY})"
    in_edge = (
        f"CASE WHEN p.lo = 0 THEN {slice_sum_sql('c.firsts', '0', 'p.hi')}"
        f" ELSE {slice_sum_sql('c.lasts', 'p.lo', str(QUARTERS_PER_DAY))} END"
    )
    nil_in_edge = "CASE WHEN p.lo = 0 THEN c.nil_first < p.hi ELSE c.nil_last >= p.lo END"
    found = (
        f"SELECT p.bucket, c.page, c.visitors AS n FROM ({pieces_sql}) AS p JOIN {PAGE_DAY} c"
        f" ON c.site_id = :site_id AND c.day = p.day{page_in('c.')}"
        f" WHERE {whole} AND c.keys > 0"
        f" UNION ALL SELECT bucket, page, n FROM (SELECT p.bucket, c.page, {in_edge} AS n,"
        f" {nil_in_edge} AS nil FROM ({pieces_sql}) AS p JOIN {PAGE_DAY} c"
        f" ON c.site_id = :site_id AND c.day = p.day{page_in('c.')} WHERE {edge}) AS e WHERE n > 0 OR nil"
        f" UNION ALL SELECT p.bucket, a.page, {counted('a.')} FROM ({pieces_sql}) AS p"
        f" JOIN {PAGE_ACTIVITY} a ON a.site_id = :site_id AND a.day = p.day AND {meets}{page_in('a.')}"
        f" WHERE p.lo > 0 AND p.hi < {QUARTERS_PER_DAY} GROUP BY 1, 2"
        # The second piece of a two-day bucket: its keys the first piece counted already.
        f" UNION ALL SELECT p.bucket, a.page, -count(*) FROM ({pieces_sql}) AS p"
        f" JOIN {PAGE_ACTIVITY} a ON a.site_id = :site_id AND a.day = p.day AND a.prev_last IS NOT NULL"
        f" AND a.prev_last >= p.prev_lo AND {meets}{page_in('a.')} WHERE p.prev_lo IS NOT NULL GROUP BY 1, 2"
    )
    others = [
        f"SELECT p.bucket, l.page, l.key FROM {PAGE_ACTIVITY_LATE} l JOIN ({pieces_sql}) AS p"
        f" ON p.day = l.quarter / {QUARTERS_PER_DAY} AND (({l0}) & p.q0 <> 0 OR ({l1}) & p.q1 <> 0)"
        " WHERE l.site_id = :site_id AND l.quarter >= :quarter_lo"
        f" AND l.quarter < :quarter_hi{page_in('l.')}",
        *(
            f"SELECT CAST(:raw{n}_bucket AS timestamptz), page, {PAGE_KEY_SQL} FROM event"
            f" WHERE site_id = :site_id AND time >= :raw{n}_start AND time < :raw{n}_end{page_in('')}"
            for n in range(len(pieces.raw))
        ),
    ]
    unheld = (
        f"SELECT DISTINCT * FROM ({' UNION ALL '.join(others)}) AS o(bucket, page, key)"
        f" WHERE NOT EXISTS (SELECT 1 FROM ({pieces_sql}) AS p JOIN {PAGE_ACTIVITY} a"
        f" ON a.site_id = :site_id AND a.day = p.day AND a.page = o.page AND a.key = o.key AND {meets}"
        " WHERE p.bucket = o.bucket)"
    )
    return text(
        f"SELECT b, page, sum(n)::bigint AS visitors FROM ("
        f"SELECT bucket AS b, page, n FROM ({found}) AS f"
        f" UNION ALL SELECT bucket, page, {counted('')} FROM ({unheld}) AS u GROUP BY 1, 2"
        f") AS c GROUP BY 1, 2{_order(['page'])}"
    )


_ANY_EVENT = {
    site: text(
        "SELECT EXISTS (SELECT 1 FROM event WHERE time >= :start AND time < :end"
        + (" AND site_id = :site_id)" if site else ")")
    )
    for site in (False, True)
}


async def any_event(session: AsyncSession, params: Mapping[str, Any], *, site: bool) -> bool:
    """Whether [start, end) holds any event (of the site)."""
    return bool((await rows(session, _ANY_EVENT[site], params))[0][0])


def fill_statement() -> TextClause:
    """Every bucket of [start, end) in the zone; the session zone makes day and month steps
    follow the local calendar across DST changes."""
    return text(
        "SELECT DISTINCT time_bucket(CAST(:interval AS interval), ts, :tz) AS b"
        " FROM generate_series(time_bucket(CAST(:interval AS interval), CAST(:start AS timestamptz), :tz),"
        " CAST(:end AS timestamptz) - interval '1 microsecond', CAST(:interval AS interval)) AS ts"
        " ORDER BY b"
    )


async def rows(
    session: AsyncSession, statement: TextClause, params: Mapping[str, Any]
) -> Sequence[tuple[Any, ...]]:
    """The result as plain tuples, read in PostgreSQL's binary format on the session's own
    connection and transaction (its zone and statement timeout hold). Answers of thousands of
    rows: binary timestamps and numbers load faster than their text, and the rows skip
    SQLAlchemy's Row objects — together about a third of the 14k-row hourly answer's time
    outside SQL. Errors come back as SQLAlchemy's, as from session.execute."""
    connection = await session.connection()
    compiled = statement.compile(dialect=connection.dialect)
    values = compiled.construct_params(dict(params))
    raw = (await connection.get_raw_connection()).driver_connection
    assert isinstance(raw, psycopg.AsyncConnection)
    try:
        async with raw.cursor(binary=True) as cursor:
            # Never prepared: a prepared statement turns generic after a few runs, and a generic
            # plan of a real-time aggregate's union (Community) took 300 ms where the custom
            # one takes 15; planning these takes about a millisecond.
            await cursor.execute(compiled.string, values, prepare=False)
            return await cursor.fetchall()
    except psycopg.Error as exc:
        raise DBAPIError.instance(compiled.string, values, exc, psycopg.Error) from exc


async def use_zone(session: AsyncSession, tz: str) -> None:
    """Set the transaction's zone (bound, validated beforehand) for calendar arithmetic, and
    turn JIT compilation off for it: it costs these queries half a second to save nothing."""
    await session.execute(
        text("SELECT set_config('timezone', :tz, true), set_config('jit', 'off', true)"), {"tz": tz}
    )


# `sites`: NULL for every site, else the sites a question may read (an API key's, a client's).
_IN_SITES = " AND (CAST(:sites AS text[]) IS NULL OR site_id = ANY(CAST(:sites AS text[])))"
_USERS_SQL = text(
    f"SELECT count(DISTINCT {USER_KEY}) FROM event"
    " WHERE time >= :start AND time < :end AND (CAST(:site_id AS text) IS NULL OR site_id = :site_id)"
    + _IN_SITES
)
_DAILY_USERS_SQL = text(
    f"SELECT time_bucket(INTERVAL '1 day', time) AS day, count(DISTINCT {USER_KEY}) AS users FROM event"
    f" WHERE time >= :start AND time < :end{_IN_SITES} GROUP BY day ORDER BY day"
)
# Users active in each window: window 0 is the cohort, later windows count its returners.
_RETENTION_SQL = text(f"""
WITH activity AS (
    SELECT DISTINCT {USER_KEY} AS user_key,
           floor(extract(epoch FROM time - :start) / extract(epoch FROM CAST(:window AS interval)))::int AS n
    FROM event
    WHERE time >= :start AND time < :end AND {USER_KEY} IS NOT NULL{_IN_SITES}
), cohort AS (SELECT user_key FROM activity WHERE n = 0)
SELECT a.n, count(*) AS users FROM activity a JOIN cohort c USING (user_key) GROUP BY a.n ORDER BY a.n
""")


async def distinct_users(
    session: AsyncSession,
    start: datetime,
    end: datetime,
    site_id: str | None,
    sites: Sequence[str] | None = None,
) -> int:
    params = {"start": start, "end": end, "site_id": site_id, "sites": _array(sites)}
    result = await session.execute(_USERS_SQL, params)
    return int(result.scalar_one())


async def daily_users(
    session: AsyncSession, start: datetime, end: datetime, sites: Sequence[str] | None = None
) -> dict[datetime, int]:
    result = await session.execute(_DAILY_USERS_SQL, {"start": start, "end": end, "sites": _array(sites)})
    return {row.day: int(row.users) for row in result}


def _array(sites: Sequence[str] | None) -> list[str] | None:
    return list(sites) if sites is not None else None


async def retention_counts(
    session: AsyncSession, start: datetime, end: datetime, window: str, sites: Sequence[str] | None = None
) -> dict[int, int]:
    params = {"start": start, "end": end, "window": window, "sites": _array(sites)}
    result = await session.execute(_RETENTION_SQL, params)
    return {int(row.n): int(row.users) for row in result}
