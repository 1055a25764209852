"""The sessions job's SQL: the change log, windows around changes, sessionisation with window
functions, daily metrics, the watermark and the run history; and the stats API's reads of
sessions. Statements are built only from the constants of this module; every value is bound.

Why a job over plain tables rather than a continuous aggregate: a session is a run of one
visitor's events with no gap over SESSION_TIMEOUT, which needs the previous event (`lag`), and
continuous aggregates cannot hold window functions, on either edition. The job's SQL is plain
PostgreSQL, so both editions give the same answers by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.jobs.retention import trim_activity
from src.api.rollups.activity import KINDS
from src.api.rollups.catalogue import CATALOGUE, IS_PAGEVIEW

# The visitor: visitor id, else user id, else address + User-Agent (the stats API's own key).
VISITOR_KEY = KINDS["visitors"][1]
RUN_HISTORY = 500  # runs kept in session_run

# ---- the change log -----------------------------------------------------------------------

# What the statements that store or delete events need to return for append_cte.
CHANGE_COLUMNS = ("site_id", "time", "event_type", "visitor_id", "user_id", "ip_address", "user_agent")


def append_cte(source: str) -> str:
    """A CTE (after `WITH {source} AS (INSERT/DELETE … RETURNING CHANGE_COLUMNS)`) that appends
    one change per stored row with a visitor to the sessions' change log."""
    return (
        "session_change_append AS (INSERT INTO session_change (site_id, visitor_hash, time, event_type)"
        f" SELECT site_id, md5({VISITOR_KEY})::uuid, time, event_type FROM {source}"
        f" WHERE {VISITOR_KEY} IS NOT NULL)"
    )


_APPEND_ONE = text(
    "INSERT INTO session_change (site_id, visitor_hash, time, event_type)"
    " VALUES (:site_id, md5(CAST(:visitor AS text))::uuid, :time, :event_type)"
)


async def append_change(
    conn: AsyncConnection | AsyncSession, site_id: str, visitor: str | None, time: datetime, event_type: str
) -> None:
    """One change (a deleted event) in the caller's transaction."""
    if visitor is not None:
        await conn.execute(
            _APPEND_ONE, {"site_id": site_id, "visitor": visitor, "time": time, "event_type": event_type}
        )


# ---- the job's state ----------------------------------------------------------------------

JOB_LOCK_KEY = 0x53455353  # "SESS": one sessions run at a time, across workers


async def try_lock(conn: AsyncConnection) -> bool:
    return bool((await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": JOB_LOCK_KEY})).scalar())


async def lock(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": JOB_LOCK_KEY})


async def unlock(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": JOB_LOCK_KEY})


async def read_watermark(conn: AsyncConnection) -> datetime | None:
    value: datetime | None = (
        await conn.execute(text("SELECT watermark FROM session_job WHERE id = 1"))
    ).scalar_one_or_none()
    return value


async def write_watermark(conn: AsyncConnection, mark: datetime | None) -> None:
    await conn.execute(
        text(
            "INSERT INTO session_job (id, watermark) VALUES (1, :mark)"
            " ON CONFLICT (id) DO UPDATE SET watermark = excluded.watermark"
        ),
        {"mark": mark},
    )


# ---- taking changes and the windows around them --------------------------------------------

# Every change of the chosen visitors below the mark, taken (deleted) in the job's snapshot.
# With :event_type, the visitors are those with a change of that type; all of their changes
# are taken, because a visitor's sessions are recomputed from all of its stored events.
_TAKE = text(
    "CREATE TEMP TABLE session_taken ON COMMIT DROP AS"
    " WITH chosen AS (SELECT DISTINCT site_id, visitor_hash FROM session_change"
    "  WHERE time < :mark AND (CAST(:event_type AS text) IS NULL OR event_type = :event_type)),"
    " taken AS (DELETE FROM session_change c USING chosen"
    "  WHERE c.site_id = chosen.site_id AND c.visitor_hash = chosen.visitor_hash AND c.time < :mark"
    "  RETURNING c.site_id, c.visitor_hash, c.time, c.event_type)"
    " SELECT * FROM taken"
)
_TAKE_ALL = text(
    "CREATE TEMP TABLE session_taken ON COMMIT DROP AS"
    " WITH taken AS (DELETE FROM session_change WHERE time < :mark"
    "  RETURNING site_id, visitor_hash, time, event_type) SELECT * FROM taken"
)
# Islands of each visitor's change times: a gap over the timeout starts a new window.
_WINDOWS = text(
    "CREATE TEMP TABLE session_window ON COMMIT DROP AS"
    " SELECT row_number() OVER () AS id, site_id, visitor_hash, min(time) AS lo, max(time) AS hi, 0 AS batch"
    " FROM (SELECT site_id, visitor_hash, time, sum(opens) OVER (PARTITION BY site_id, visitor_hash"
    "   ORDER BY time ROWS UNBOUNDED PRECEDING) AS island"
    "  FROM (SELECT site_id, visitor_hash, time, CASE WHEN time - lag(time) OVER"
    "   (PARTITION BY site_id, visitor_hash ORDER BY time) > CAST(:timeout AS interval) THEN 1 ELSE 0 END"
    "   AS opens FROM session_taken) AS marked) AS islands"
    " GROUP BY site_id, visitor_hash, island"
)
# A window takes in every stored session within the timeout of it (which a change may join,
# split or shorten); repeated until none is left outside, so each window's edges are gaps of
# more than the timeout in the stored sessions and in the events alike.
_EXPAND = text(
    "UPDATE session_window w SET lo = LEAST(w.lo, x.lo), hi = GREATEST(w.hi, x.hi)"
    " FROM (SELECT w2.id, min(s.started_at) AS lo, max(s.ended_at) AS hi"
    "  FROM session_window w2 JOIN session s ON s.site_id = w2.site_id AND s.visitor_hash = w2.visitor_hash"
    "  AND s.started_at <= w2.hi + CAST(:timeout AS interval)"
    "  AND s.ended_at >= w2.lo - CAST(:timeout AS interval)"
    "  GROUP BY w2.id) AS x"
    " WHERE w.id = x.id AND (x.lo < w.lo OR x.hi > w.hi)"
)
# Windows of one visitor within the timeout of each other become one (their sessions may join).
_MERGE = (
    text(
        "CREATE TEMP TABLE session_window_merged ON COMMIT DROP AS"
        " SELECT row_number() OVER () AS id, site_id, visitor_hash, min(lo) AS lo, max(hi) AS hi, 0 AS batch"
        " FROM (SELECT *, sum(opens) OVER (PARTITION BY site_id, visitor_hash ORDER BY lo, hi"
        "   ROWS UNBOUNDED PRECEDING) AS grp"
        "  FROM (SELECT *, CASE WHEN lo > max(hi) OVER (PARTITION BY site_id, visitor_hash ORDER BY lo, hi"
        "    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + CAST(:timeout AS interval)"
        "    THEN 1 ELSE 0 END AS opens FROM session_window) AS marked) AS grouped"
        " GROUP BY site_id, visitor_hash, grp"
    ),
    text("SELECT (SELECT count(*) FROM session_window) - (SELECT count(*) FROM session_window_merged)"),
    text("DROP TABLE session_window"),
    text("ALTER TABLE session_window_merged RENAME TO session_window"),
)
# Batches of windows in time order: each batch's events lie in one narrow span of time, read
# once (windows of one visitor are independent: more than the timeout apart).
_BATCHES = text(
    "UPDATE session_window w SET batch = n.batch FROM (SELECT id,"
    " (row_number() OVER (ORDER BY lo, hi, id) - 1) / CAST(:size AS int) AS batch"
    " FROM session_window) AS n WHERE w.id = n.id"
)
_BATCH_SPAN = text("SELECT min(lo), max(hi) FROM session_window WHERE batch = :batch")
_INDEX_WINDOWS = text("CREATE INDEX ON session_window (batch)")
_ANALYZE_WINDOWS = text("ANALYZE session_window")


async def take_changes(conn: AsyncConnection, mark: datetime, event_type: str | None) -> int:
    statement = _TAKE_ALL if event_type is None else _TAKE
    await conn.execute(statement, {"mark": mark, "event_type": event_type})
    return int((await conn.execute(text("SELECT count(*) FROM session_taken"))).scalar_one())


async def build_windows(conn: AsyncConnection, timeout: timedelta, batch_size: int) -> int:
    """The windows to recompute, numbered into batches of `batch_size` windows; how many
    batches."""
    params = {"timeout": timeout}
    await conn.execute(_WINDOWS, params)
    while True:
        while (await conn.execute(_EXPAND, params)).rowcount:
            pass
        await conn.execute(_MERGE[0], params)
        merged = int((await conn.execute(_MERGE[1])).scalar_one())
        await conn.execute(_MERGE[2])
        await conn.execute(_MERGE[3])
        if not merged:
            break
    await conn.execute(_BATCHES, {"size": batch_size})
    await conn.execute(_INDEX_WINDOWS)
    await conn.execute(_ANALYZE_WINDOWS)
    batches = (await conn.execute(text("SELECT max(batch) FROM session_window"))).scalar_one()
    return 0 if batches is None else int(batches) + 1


# ---- sessionisation -----------------------------------------------------------------------

_UTM = "properties->'attribution'->'utmParams'"


def _utm(name: str) -> str:
    """A UTM value of the session's first event: attribution.utmParams (utm_x or x), else the
    first URL's query (as sent, not percent-decoded), at most 255 characters."""
    return (
        f"left(COALESCE(NULLIF({_UTM}->>'utm_{name}', ''), NULLIF({_UTM}->>'{name}', ''),"
        f" NULLIF(substring(url FROM '[?&]utm_{name}=([^&#]*)'), '')), 255)"
    )


def _sessionise(source: str) -> str:
    """SELECT of the sessions of the events `source` yields (it names `e`, the event), one row
    per session with every column of `session`. Events are ordered by (time, id); a session
    opens at a visitor's first event, after a gap over :timeout, and where the client's
    session id changes (both events carrying one)."""
    return f"""
WITH ev AS (
    SELECT e.site_id, md5({VISITOR_KEY})::uuid AS visitor_hash, {VISITOR_KEY} AS visitor, e.id, e.time,
           e.session_id, e.{IS_PAGEVIEW} AS is_pageview,
           e.page, e.referrer_domain, e.os, e.browser, e.device,
           COALESCE(e.properties->>'interactive', 'true') <> 'false' AS interactive,
           e.properties, e.url
    FROM {source} AND {VISITOR_KEY} IS NOT NULL
), marked AS (
    SELECT ev.*, CASE WHEN lag(time) OVER w IS NULL OR time - lag(time) OVER w > CAST(:timeout AS interval)
                      OR session_id <> lag(session_id) OVER w THEN 1 ELSE 0 END AS opens
    FROM ev WINDOW w AS (PARTITION BY site_id, visitor_hash ORDER BY time, id)
), numbered AS (
    SELECT marked.*, sum(opens) OVER (PARTITION BY site_id, visitor_hash ORDER BY time, id
                                      ROWS UNBOUNDED PRECEDING) AS n
    FROM marked
), grouped AS (
    SELECT site_id, visitor_hash, min(visitor) AS visitor, min(time) AS started_at, max(time) AS ended_at,
           CAST(min(CAST(id AS text)) FILTER (WHERE opens = 1) AS uuid) AS first_event_id,
           min(session_id) FILTER (WHERE opens = 1) AS session_id,
           count(*) AS events, count(*) FILTER (WHERE is_pageview) AS pageviews,
           count(*) FILTER (WHERE NOT is_pageview AND interactive) AS interactions,
           array_agg(page ORDER BY time, id) FILTER (WHERE is_pageview) AS pages,
           min(referrer_domain) FILTER (WHERE opens = 1) AS referrer_domain,
           min({_utm("source")}) FILTER (WHERE opens = 1) AS utm_source,
           min({_utm("medium")}) FILTER (WHERE opens = 1) AS utm_medium,
           min({_utm("campaign")}) FILTER (WHERE opens = 1) AS utm_campaign,
           min(os) FILTER (WHERE opens = 1) AS os, min(browser) FILTER (WHERE opens = 1) AS browser,
           min(device) FILTER (WHERE opens = 1) AS device
    FROM numbered GROUP BY site_id, visitor_hash, n
)
SELECT site_id, visitor_hash, started_at, first_event_id, ended_at, visitor, session_id,
       extract(epoch FROM ended_at - started_at)::float8 AS duration, events, pageviews,
       pages[1] AS entry_page, pages[array_upper(pages, 1)] AS exit_page,
       pageviews = 1 AND interactions = 0 AS bounce, referrer_domain, utm_source, utm_medium,
       utm_campaign, os, browser, device, now() AS updated_at
FROM grouped"""


SESSION_COLUMNS = (
    "site_id, visitor_hash, started_at, first_event_id, ended_at, visitor, session_id, duration, events,"
    " pageviews, entry_page, exit_page, bounce, referrer_domain, utm_source, utm_medium, utm_campaign,"
    " os, browser, device, updated_at"
)
_KEY = ("site_id", "visitor_hash", "started_at", "first_event_id")
_VALUES = [c.strip() for c in SESSION_COLUMNS.split(",") if c.strip() not in (*_KEY, "updated_at")]

# The UTC start days the run touched, per site: their daily metrics are recomputed.
_DAYS = text("CREATE TEMP TABLE session_days (site_id varchar(128), day date) ON COMMIT DROP")
_DAY_OF = "(started_at AT TIME ZONE 'UTC')::date"

# One batch of windows: the events of each window (bounded by it and by the mark), sessionised.
_BATCH_NEW = text(
    "CREATE TEMP TABLE session_new ON COMMIT DROP AS"
    + _sessionise(
        "session_window w JOIN event e ON e.site_id = w.site_id AND e.time >= w.lo AND e.time <= w.hi"
        f" AND md5({VISITOR_KEY})::uuid = w.visitor_hash WHERE w.batch = :batch"
        " AND e.time >= :batch_lo AND e.time <= :batch_hi AND e.time < :mark"
    )
)
_FULL_NEW = text(
    "CREATE TEMP TABLE session_new ON COMMIT DROP AS"
    + _sessionise("event e WHERE e.time >= :since AND e.time < :mark")
)
# Stored sessions of the batch's windows that the new ones do not replace: deleted.
_BATCH_DELETE = text(
    "WITH gone AS (DELETE FROM session s USING session_window w"
    " WHERE w.batch = :batch AND s.site_id = w.site_id AND s.visitor_hash = w.visitor_hash"
    " AND s.started_at >= w.lo AND s.started_at <= w.hi"
    " AND NOT EXISTS (SELECT 1 FROM session_new n WHERE n.site_id = s.site_id"
    "  AND n.visitor_hash = s.visitor_hash AND n.started_at = s.started_at"
    "  AND n.first_event_id = s.first_event_id)"
    f" RETURNING s.site_id, {_DAY_OF.replace('started_at', 's.started_at')} AS day),"
    " noted AS (INSERT INTO session_days SELECT site_id, day FROM gone)"
    " SELECT count(*) FROM gone"
)
_FULL_DELETE = text(
    f"WITH gone AS (DELETE FROM session RETURNING site_id, {_DAY_OF} AS day),"
    " noted AS (INSERT INTO session_days SELECT DISTINCT site_id, day FROM gone)"
    " SELECT count(*) FROM gone"
)
# New sessions inserted, changed ones updated (unchanged ones are left as they are).
_UPSERT = text(
    f"WITH put AS (INSERT INTO session AS s ({SESSION_COLUMNS}) SELECT {SESSION_COLUMNS} FROM session_new"
    f" ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*_VALUES, "updated_at"))
    + " WHERE ("
    + ", ".join(f"s.{c}" for c in _VALUES)
    + ") IS DISTINCT FROM ("
    + ", ".join(f"excluded.{c}" for c in _VALUES)
    + f") RETURNING s.site_id, {_DAY_OF.replace('started_at', 's.started_at')} AS day,"
    " (s.xmax = 0) AS created),"
    " noted AS (INSERT INTO session_days SELECT site_id, day FROM put)"
    " SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created) FROM put"
)
_DROP_NEW = text("DROP TABLE session_new")


async def start_days(conn: AsyncConnection) -> None:
    await conn.execute(_DAYS)


async def sessionise_batch(
    conn: AsyncConnection, batch: int | None, mark: datetime, since: datetime, timeout: timedelta
) -> tuple[int, int, int]:
    """Replace the stored sessions of one batch of windows (None: of every event, a full run)
    by those of the events; (created, updated, deleted)."""
    params = {"batch": batch, "mark": mark, "since": since, "timeout": timeout}
    if batch is None:
        deleted = int((await conn.execute(_FULL_DELETE)).scalar_one())
        await conn.execute(_FULL_NEW, params)
    else:
        span = (await conn.execute(_BATCH_SPAN, {"batch": batch})).one()
        await conn.execute(_BATCH_NEW, {**params, "batch_lo": span[0], "batch_hi": span[1]})
        deleted = int((await conn.execute(_BATCH_DELETE, params)).scalar_one())
    row = (await conn.execute(_UPSERT)).one()
    await conn.execute(_DROP_NEW)
    return int(row[0]), int(row[1]), deleted


# ---- daily metrics ------------------------------------------------------------------------

_DAILY_SELECT = (
    "SELECT s.site_id, {day} AS day, count(DISTINCT s.visitor_hash)::int AS visitors,"
    " count(*)::int AS sessions,"
    " sum(pageviews)::bigint AS pageviews, sum(events)::bigint AS events,"
    " count(*) FILTER (WHERE bounce)::int AS bounces,"
    " 100 * (count(*) FILTER (WHERE bounce))::float8 / count(*) AS bounce_rate,"
    " avg(duration)::float8 AS avg_session_duration, sum(duration)::float8 AS total_duration,"
    " (sum(pageviews))::float8 / count(*) AS pages_per_session,"
    " now() AS updated_at FROM session s"
)
_DAILY_COLUMNS = (
    "site_id, day, visitors, sessions, pageviews, events, bounces, bounce_rate, avg_session_duration,"
    " total_duration, pages_per_session, updated_at"
)
_DAILY_REFRESH = (
    text(
        "CREATE TEMP TABLE session_days_distinct ON COMMIT DROP AS"
        " SELECT DISTINCT site_id, day FROM session_days"
    ),
    text(
        "DELETE FROM session_daily_metric m USING session_days_distinct d"
        " WHERE m.site_id = d.site_id AND m.day = d.day"
    ),
    text(
        f"INSERT INTO session_daily_metric ({_DAILY_COLUMNS})"
        + _DAILY_SELECT.format(day="d.day")
        + " JOIN session_days_distinct d ON s.site_id = d.site_id"
        " AND s.started_at >= d.day::timestamp AT TIME ZONE 'UTC'"
        " AND s.started_at < (d.day + 1)::timestamp AT TIME ZONE 'UTC'"
        " GROUP BY s.site_id, d.day"
    ),
    text("SELECT count(*) FROM session_days_distinct"),
    text("DROP TABLE session_days_distinct"),
    text("DROP TABLE session_days"),
)


async def refresh_daily(conn: AsyncConnection) -> int:
    """Recompute the daily metrics of the days noted in session_days; how many (site, day)."""
    for statement in _DAILY_REFRESH[:3]:
        await conn.execute(statement)
    count = int((await conn.execute(_DAILY_REFRESH[3])).scalar_one())
    for statement in _DAILY_REFRESH[4:]:
        await conn.execute(statement)
    return count


_DAY_RECOMPUTE = (
    text("DELETE FROM session_daily_metric WHERE day = :day"),
    text(
        f"INSERT INTO session_daily_metric ({_DAILY_COLUMNS})"
        + _DAILY_SELECT.format(day="CAST(:day AS date)")
        + " WHERE s.started_at >= CAST(:day AS date)::timestamp AT TIME ZONE 'UTC'"
        " AND s.started_at < (CAST(:day AS date) + 1)::timestamp AT TIME ZONE 'UTC'"
        " GROUP BY s.site_id"
    ),
)
_DAY_READ = text(
    f'SELECT {_DAILY_COLUMNS} FROM session_daily_metric WHERE day = :day ORDER BY site_id COLLATE "C"'
)


async def recompute_day(conn: AsyncConnection, day: date) -> list[dict[str, Any]]:
    for statement in _DAY_RECOMPUTE:
        await conn.execute(statement, {"day": day})
    return [dict(row._mapping) for row in await conn.execute(_DAY_READ, {"day": day})]


# ---- runs ---------------------------------------------------------------------------------


async def insert_run(
    conn: AsyncConnection, run_id: UUID, trigger: str, event_type: str | None, started_at: datetime
) -> None:
    await conn.execute(
        text(
            "INSERT INTO session_run (id, trigger, event_type, status, started_at)"
            " VALUES (:id, :trigger, :event_type, 'running', :started_at)"
        ),
        {"id": run_id, "trigger": trigger, "event_type": event_type, "started_at": started_at},
    )


async def finish_run(
    conn: AsyncConnection,
    run_id: UUID,
    status: str,
    finished_at: datetime,
    duration: float,
    result: dict[str, Any] | None,
    error: str | None,
) -> None:
    await conn.execute(
        text(
            "UPDATE session_run SET status = :status, finished_at = :finished_at,"
            " duration_seconds = :duration,"
            " result = CAST(:result AS jsonb), error = :error WHERE id = :id"
        ),
        {
            "id": run_id,
            "status": status,
            "finished_at": finished_at,
            "duration": duration,
            "result": None if result is None else _json(result),
            "error": error,
        },
    )
    await conn.execute(
        text(
            "DELETE FROM session_run WHERE started_at < (SELECT started_at FROM session_run"
            " ORDER BY started_at DESC OFFSET :keep LIMIT 1)"
        ),
        {"keep": RUN_HISTORY},
    )


def _json(value: dict[str, Any]) -> str:
    return orjson.dumps(value, default=str).decode()


_RUN_COLUMNS = "id, trigger, event_type, status, started_at, finished_at, duration_seconds, result, error"


async def last_run(conn: AsyncConnection) -> dict[str, Any] | None:
    row = (
        await conn.execute(text(f"SELECT {_RUN_COLUMNS} FROM session_run ORDER BY started_at DESC LIMIT 1"))
    ).first()
    return None if row is None else dict(row._mapping)


async def run_by_id(conn: AsyncConnection, run_id: UUID) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            text(f"SELECT {_RUN_COLUMNS} FROM session_run WHERE id = :id"),
            {"id": run_id},
        )
    ).first()
    return None if row is None else dict(row._mapping)


async def pending_by_type(conn: AsyncConnection) -> dict[str, int]:
    result = await conn.execute(
        text(
            "SELECT event_type, count(*) FROM session_change GROUP BY event_type"
            ' ORDER BY event_type COLLATE "C"'
        )
    )
    return {str(row[0]): int(row[1]) for row in result}


async def oldest_pending(conn: AsyncConnection) -> datetime | None:
    value: datetime | None = (await conn.execute(text("SELECT min(time) FROM session_change"))).scalar()
    return value


async def table_counts(conn: AsyncConnection) -> tuple[int, int]:
    row = (
        await conn.execute(
            text("SELECT (SELECT count(*) FROM session), (SELECT count(*) FROM session_daily_metric)")
        )
    ).one()
    return int(row[0]), int(row[1])


_RECENT = text(
    f"SELECT {SESSION_COLUMNS} FROM session WHERE started_at >= :since"
    " AND (CAST(:site_id AS text) IS NULL OR site_id = :site_id)"
    " AND (CAST(:sites AS text[]) IS NULL OR site_id = ANY(CAST(:sites AS text[])))"
    " ORDER BY started_at DESC, first_event_id DESC LIMIT :limit"
)


async def recent_sessions(
    conn: AsyncConnection, limit: int, since: datetime, site_id: str | None, sites: list[str] | None
) -> Sequence[dict[str, Any]]:
    """The latest sessions (of `site_id`, and of `sites` when a key is scoped to them)."""
    params = {"limit": limit, "since": since, "site_id": site_id, "sites": sites}
    result = await conn.execute(_RECENT, params)
    return [dict(row._mapping) for row in result]


# ---- cleanup ------------------------------------------------------------------------------


async def drop_event_chunks(conn: AsyncConnection, older_than: datetime) -> list[str]:
    """drop_chunks on `event` (whole chunks, as retention does); the chunks' names."""
    result = await conn.execute(
        text("SELECT drop_chunks('event', older_than => CAST(:older AS timestamptz))"), {"older": older_than}
    )
    return [str(row[0]) for row in result]


async def trim_after_drop(conn: AsyncConnection, older_than: datetime) -> None:
    """After raw chunks went: the rollups' chunks before the same time go too (so no rollup
    answers for events that are gone; on Community the continuous aggregates'), and the
    activity tables forget the days before the oldest event left."""
    for name in CATALOGUE.names:
        known = (
            await conn.execute(
                text(
                    "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = :t"
                    " UNION ALL SELECT 1 FROM timescaledb_information.continuous_aggregates"
                    " WHERE view_name = :t"
                ),
                {"t": name},
            )
        ).first()
        if known is not None:
            await conn.execute(
                text("SELECT drop_chunks(CAST(:t AS regclass), older_than => CAST(:older AS timestamptz))"),
                {"t": name, "older": older_than},
            )
    await trim_activity(conn)


async def events_before(conn: AsyncConnection, moment: datetime) -> int:
    """Events a cleanup at `moment` would drop, counted in the chunks that lie wholly before it."""
    result = await conn.execute(
        text(
            "SELECT COALESCE(sum(n), 0) FROM (SELECT (SELECT count(*) FROM event"
            " WHERE time >= c.range_start AND time < c.range_end) AS n"
            " FROM timescaledb_information.chunks c"
            " WHERE c.hypertable_name = 'event' AND c.range_end <= :moment) AS counts"
        ),
        {"moment": moment},
    )
    return int(result.scalar_one())


# ---- what the stats API reads --------------------------------------------------------------

# Session metrics and their SQL over `session` rows (sums are exact; ratios of sums).
SESSION_METRICS: dict[str, str] = {
    "visits": "count(*)",
    # A percentage, as Plausible's (and the dashboard's).
    "bounce_rate": "CASE WHEN count(*) > 0 THEN 100 * (count(*) FILTER (WHERE bounce))::float8"
    " / count(*) END",
    "visit_duration": "avg(duration)::float8",
    "views_per_visit": "CASE WHEN count(*) > 0 THEN (sum(pageviews))::float8 / count(*) END",
    # Grouped by a session dimension, these count the sessions' own (Plausible's entry pages:
    # unique visitors who entered there, and the page views of their visits).
    "visitors": "count(DISTINCT visitor_hash)",
    "pageviews": "COALESCE(sum(pageviews), 0)::bigint",
    "events": "COALESCE(sum(events), 0)::bigint",
}
# Dimensions that only sessions have.
SESSION_DIMENSIONS: dict[str, str] = {
    "entry_page": "entry_page",
    "exit_page": "exit_page",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
}
# Dimensions and filters the sessions share with events (the session's first event's).
SHARED_DIMENSIONS: dict[str, str] = {
    "site_id": "site_id",
    "os": "os",
    "browser": "browser",
    "device": "device",
    "referrer_domain": "referrer_domain",
    "operating_system": (
        "CASE WHEN os IN ('Windows', 'MacOS', 'iOS', 'Android', 'Linux') THEN os ELSE 'Other' END"
    ),
}


_TOTALS = {
    "visits": "COALESCE(sum(n), 0)::bigint",
    "bounce_rate": "100 * sum(bounces)::float8 / NULLIF(sum(n), 0)",
    "visit_duration": "sum(total)::float8 / NULLIF(sum(n), 0)",
    "views_per_visit": "sum(views)::float8 / NULLIF(sum(n), 0)",
}


def session_total_statement(metrics: Sequence[str], *, site: bool) -> TextClause:
    """Session metrics over [start, end) without buckets, groups or filters: the daily metrics
    of the whole UTC days [day_lo, day_hi) (dates; [mid_lo, mid_hi) as instants), and the
    sessions of the ragged ends. The daily rows are the sums of exactly the stored sessions
    (the job keeps both in one transaction), so the answer is the rows' own."""
    at_site = " AND site_id = :site_id" if site else ""
    measures = ", ".join(f"{_TOTALS[m]} AS {m}" for m in metrics)
    return text(
        f"SELECT NULL AS b, {measures} FROM ("
        "SELECT count(*) AS n, count(*) FILTER (WHERE bounce) AS bounces, sum(pageviews) AS views,"
        " sum(duration) AS total FROM session WHERE ((started_at >= :start AND started_at < :mid_lo)"
        f" OR (started_at >= :mid_hi AND started_at < :end)){at_site}"
        " UNION ALL SELECT sum(sessions), sum(bounces), sum(pageviews), sum(total_duration)"
        " FROM session_daily_metric"
        f" WHERE day >= CAST(:day_lo AS date) AND day < CAST(:day_hi AS date){at_site}"
        ") AS parts"
    )


def session_statement(
    metrics: Sequence[str],
    dims: Sequence[str],
    filters: Sequence[str],
    *,
    bucketed: bool,
    site: bool,
) -> TextClause:
    """Session metrics per (bucket of the start?, dims) over sessions started in [start, end),
    below the job's watermark; rows (b, dims…, metrics…) in the answer's order. Names come from
    the mappings above, values (`f_<name>` lists) are bound."""
    expressions = {**SHARED_DIMENSIONS, **SESSION_DIMENSIONS}
    bucket = "time_bucket(CAST(:interval AS interval), started_at, :tz)" if bucketed else "NULL"
    dim_sql = "".join(f", {expressions[d]} AS {d}" for d in dims)
    measures = ", ".join(f"{SESSION_METRICS[m]} AS {m}" for m in metrics)
    where = " AND site_id = :site_id" if site else ""
    where += "".join(f" AND {expressions[name]} = ANY(CAST(:f_{name} AS text[]))" for name in filters)
    ordinals = (["1"] if bucketed else []) + [str(i + 2) for i in range(len(dims))]
    group = f" GROUP BY {', '.join(ordinals)}" if ordinals else ""
    order = " ORDER BY b" + "".join(f', {d} COLLATE "C"' for d in dims)
    sql = (
        f"SELECT {bucket} AS b{dim_sql}, {measures} FROM session"
        " WHERE started_at >= :start AND started_at < :end"
        " AND started_at < COALESCE((SELECT watermark FROM session_job WHERE id = 1), '-infinity')"
        f"{where}{group}{order}"
    )
    return text(sql)
