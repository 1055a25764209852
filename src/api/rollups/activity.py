"""Activity masks: who was active on which UTC days, for exact unique visitors and sessions in
milliseconds (both editions alike).

`activity` holds one row per (site, kind, key, block of 64 days) whose `days` bigint has bit i
set when the key had an event on day `64 * block + i` (days since 1970-01-01 UTC). A kind is
what is counted: visitors (the stats API's visitor key: visitor id, else user id, else address
+ User-Agent) or sessions (the session id). Keys are kept as md5 UUIDs of their text, so rows
are narrow; two keys share a UUID with probability about n² / 2¹²⁹ (10⁻²⁶ for a billion keys).

A question's distinct count over whole UTC days is then the number of distinct keys among the
rows of its one or two blocks whose `days` meet the range's mask: some 10⁵ narrow rows where raw
events are 10⁶ wide ones. Ragged edges are read from raw events, and the three sets are united
before counting, so the number is the raw events' own (src/api/stats/repository.py).

Kept exact:
- the statement that stores events appends (site, kind, key, day) of the rows it really
  inserted to `activity_late` (one plain insert: duplicates add nothing, late events land on
  their day); the fold ORs them into `activity` (with the rollups' fold, every
  ROLLUP_FOLD_INTERVAL, and before every recount); questions read unfolded ones beside it;
- a delete folds, then recomputes its key's bit for the day from the raw events left.
- retention clears days older than EVENTS_RETENTION.
"""

from __future__ import annotations

from sqlalchemy import text

from src.api.rollups.maintenance import FOLD_LOCK_KEY

ACTIVITY = "activity"
ACTIVITY_LATE = "activity_late"
BLOCK_DAYS = 64

# What each kind counts, as SQL over an event row (NULL: not counted): the one definition of a
# visitor and a session, which the raw distinct counts (src/api/stats/repository.py) use too.
KINDS: dict[str, tuple[int, str]] = {
    "visitors": (1, "COALESCE(visitor_id, user_id, ip_address || ' ' || COALESCE(user_agent, ''))"),
    "sessions": (2, "session_id"),
}
# The columns of an event row these need (the ingest statement returns them).
KEY_COLUMNS = ("site_id", "time", "visitor_id", "user_id", "ip_address", "user_agent", "session_id")

DAY_SQL = "floor(extract(epoch FROM {t}) / 86400)::int"


def _keys(source: str) -> str:
    """(site_id, kind, key, day) of each counted key of the rows of `source`. Not made distinct
    here: the fold groups them anyway, and hashing every batch's keys costs more than
    appending the few repeats."""
    selects = " UNION ALL ".join(
        f"SELECT site_id, {kind}::smallint AS kind, md5({expression})::uuid AS key,"
        f" {DAY_SQL.format(t='time')} AS day FROM {source} WHERE {expression} IS NOT NULL"
        for kind, expression in KINDS.values()
    )
    return selects


def append_cte(source: str) -> str:
    """A CTE (after `WITH {source} AS (INSERT … RETURNING KEY_COLUMNS)`) that appends the
    inserted rows' keys to activity_late."""
    return f"activity_change AS (INSERT INTO {ACTIVITY_LATE} (site_id, kind, key, day) {_keys(source)})"


FOLD_SQL = text(
    f"WITH moved AS (DELETE FROM {ACTIVITY_LATE} RETURNING site_id, kind, key, day),"
    f" grouped AS (SELECT site_id, kind, key, day / {BLOCK_DAYS} AS block,"
    f" bit_or(1::bigint << (day % {BLOCK_DAYS})) AS days FROM moved GROUP BY 1, 2, 3, 4),"
    f" applied AS (INSERT INTO {ACTIVITY} AS a (site_id, kind, block, key, days)"
    " SELECT site_id, kind, block, key, days FROM grouped"
    " ON CONFLICT (site_id, kind, block, key) DO UPDATE SET days = a.days | excluded.days)"
    " SELECT count(*) FROM moved"
)
FOLD_LOCK = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=FOLD_LOCK_KEY)

# After a delete (and a fold): the deleted row's key loses that day's bit unless another event
# of the site still has the key on that day. The bound values are the deleted row's.
RECOUNT_SQL = {
    name: text(
        f"UPDATE {ACTIVITY} SET days = days & ~(1::bigint << (CAST(:day AS int) % {BLOCK_DAYS}))"
        f" WHERE site_id = :site_id AND kind = {kind} AND block = CAST(:day AS int) / {BLOCK_DAYS}"
        " AND key = md5(CAST(:key AS text))::uuid AND NOT EXISTS (SELECT 1 FROM event"
        " WHERE site_id = :site_id AND time >= :day_start AND time < :day_end"
        f" AND {expression} = :key)"
    )
    for name, (kind, expression) in KINDS.items()
}

# Retention: days before the cutoff day are cleared, blocks wholly before it deleted.
_CUT = f"((1::bigint << (CAST(:day AS int) % {BLOCK_DAYS})) - 1)"
TRIM_SQL = (
    text(f"DELETE FROM {ACTIVITY} WHERE block < CAST(:day AS int) / {BLOCK_DAYS}"),
    text(
        f"UPDATE {ACTIVITY} SET days = days & ~{_CUT}"
        f" WHERE block = CAST(:day AS int) / {BLOCK_DAYS} AND days & {_CUT} <> 0"
    ),
    text(f"DELETE FROM {ACTIVITY_LATE} WHERE day < CAST(:day AS int)"),
)

# The masks made again from every stored event (after a bulk load that bypassed the writer).
REBUILD_SQL = (
    text(f"TRUNCATE {ACTIVITY}, {ACTIVITY_LATE}"),
    *(
        text(
            f"INSERT INTO {ACTIVITY} (kind, block, site_id, key, days)"
            f" SELECT {kind}, day / {BLOCK_DAYS}, site_id, k, bit_or(1::bigint << (day % {BLOCK_DAYS}))"
            f" FROM (SELECT DISTINCT site_id, md5({expression})::uuid AS k, {DAY_SQL.format(t='time')} AS day"
            f" FROM event WHERE {expression} IS NOT NULL) AS keys GROUP BY 2, 3, 4"
        )
        for kind, expression in KINDS.values()
    ),
)
