"""The rollup job's SQL (Apache edition) and the reads the planner needs to know how far each
rollup answers exactly. Identifiers come only from the catalogue; nothing is built from input."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.rollups import activity, pages
from src.api.rollups.catalogue import CATALOGUE, Tier
from src.api.rollups.maintenance import fold_sql, sums, upsert

_FOLD = text(fold_sql())

# ---- the tier job -------------------------------------------------------------------------


async def lock_watermark(conn: AsyncConnection, tier: str) -> datetime | None:
    """Inside the job's transaction: wait for every statement that read the watermark, then
    hold it until commit. None: the tier has never been filled."""
    result = await conn.execute(
        text("SELECT complete_until FROM rollup_watermark WHERE tier = :tier FOR UPDATE"), {"tier": tier}
    )
    value: datetime | None = result.scalar_one()
    return value


async def oldest_quarter(conn: AsyncConnection) -> datetime | None:
    result = await conn.execute(text(f"SELECT min(bucket) FROM {CATALOGUE.wide.name}"))
    value: datetime | None = result.scalar_one()
    return value


async def first_quarter(conn: AsyncConnection, start: datetime, end: datetime) -> datetime | None:
    """The first 15-minute bucket with events in [start, end), if any."""
    result = await conn.execute(
        text(f"SELECT min(bucket) FROM {CATALOGUE.wide.name} WHERE bucket >= :start AND bucket < :end"),
        {"start": start, "end": end},
    )
    value: datetime | None = result.scalar_one()
    return value


async def fill_tiers(conn: AsyncConnection, tier: Tier, start: datetime, end: datetime) -> None:
    """Add [start, end) to every rollup of this tier."""
    bucket = tier.bucket("bucket")
    where = " WHERE bucket >= :start AND bucket < :end"
    for spec in CATALOGUE.of_tier(tier):
        source = CATALOGUE.source_of(spec)
        select = sums(spec, source.name, bucket, where, tier_source=source.tier is not None)
        statement = f"WITH {upsert(spec, select)}"
        await conn.execute(text(statement + " SELECT 1"), {"start": start, "end": end})


async def fold_late(conn: AsyncConnection | AsyncSession, *, rollups: bool = True) -> int:
    """Inside a transaction: move every late change into the rollups (with `rollups`: the
    Apache edition's) and every activity change into the activity tables; how many were moved. Waits for
    a fold running elsewhere (it commits first, and leaves nothing to move twice)."""
    await conn.execute(activity.FOLD_LOCK)
    moved = int((await conn.execute(activity.FOLD_SQL)).scalar_one())
    await conn.execute(pages.FOLD_SQL)
    if rollups:
        moved += int((await conn.execute(_FOLD)).scalar_one())
    return moved


async def move_watermark(conn: AsyncConnection, tier: str, until: datetime) -> None:
    await conn.execute(
        text("UPDATE rollup_watermark SET complete_until = :until WHERE tier = :tier"),
        {"tier": tier, "until": until},
    )


async def changes_appended(conn: AsyncConnection) -> int:
    """How many activity changes ingest statements have appended so far (every stored event
    appends its keys, on both editions): PostgreSQL's own insert count of `activity_late`, which
    backends report about once a second."""
    found = await conn.execute(
        text("SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = to_regclass(:t)"),
        {"t": activity.ACTIVITY_LATE},
    )
    return int(found.scalar() or 0)


# ---- what the planner reads ---------------------------------------------------------------


# One row at least, whatever the watermarks hold: the late changes' answer must not be lost.
_TIER_STATE = text(
    "SELECT w.tier, w.complete_until, p.late FROM (SELECT EXISTS (SELECT 1 FROM"
    f" {CATALOGUE.late.name} WHERE bucket >= :start AND bucket < :end) AS late) AS p"
    " LEFT JOIN rollup_watermark w ON true"
)


async def tier_state(
    session: AsyncSession, start: datetime, end: datetime
) -> tuple[dict[str, datetime | None], bool]:
    """Apache edition, in one round trip: how far each tier is complete, and whether late
    changes in [start, end) wait to be folded."""
    result = (await session.execute(_TIER_STATE, {"start": start, "end": end})).all()
    marks = {str(row.tier): row.complete_until for row in result if row.tier is not None}
    return marks, bool(result[0].late)


_AGGREGATE_WATERMARKS = text(
    "SELECT user_view_name AS view, CASE WHEN isfinite(t) THEN t END AS materialised_until FROM ("
    " SELECT user_view_name,"
    "  _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(mat_hypertable_id)) AS t"
    " FROM _timescaledb_catalog.continuous_agg) AS marks"
)


async def aggregate_watermarks(session: AsyncSession) -> dict[str, datetime | None]:
    """Community edition: how far each continuous aggregate is materialised (None: not yet)."""
    result = await session.execute(_AGGREGATE_WATERMARKS)
    return {str(row.view): row.materialised_until for row in result}


_PENDING_INVALIDATIONS = text(
    "WITH c AS ("
    " SELECT mat_hypertable_id, raw_hypertable_id,"
    "  LEAST(_timescaledb_functions.cagg_watermark(mat_hypertable_id),"
    "        _timescaledb_functions.to_unix_microseconds(:end)) AS hi,"
    "  _timescaledb_functions.to_unix_microseconds(:start) AS lo"
    " FROM _timescaledb_catalog.continuous_agg WHERE user_view_name = ANY(CAST(:views AS text[])))"
    " SELECT EXISTS (SELECT 1 FROM c"
    "  JOIN _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log l"
    "   ON l.hypertable_id = c.raw_hypertable_id"
    "  WHERE l.greatest_modified_value >= c.lo AND l.lowest_modified_value < c.hi)"
    " OR EXISTS (SELECT 1 FROM c"
    "  JOIN _timescaledb_catalog.continuous_aggs_materialization_invalidation_log l"
    "   ON l.materialization_id = c.mat_hypertable_id"
    "  WHERE l.greatest_modified_value >= c.lo AND l.lowest_modified_value < c.hi)"
)


async def pending_invalidations(
    session: AsyncSession, views: Sequence[str], start: datetime, end: datetime
) -> bool:
    """Community edition: whether rows changed in [start, end) below any of these continuous
    aggregates' watermarks that it has not materialised yet (late inserts, deletes), in one
    round trip. Above the watermark real-time aggregation reads raw rows anyway; below it only
    raw events are exact until the refresh policy runs."""
    result = await session.execute(_PENDING_INVALIDATIONS, {"start": start, "end": end, "views": list(views)})
    return bool(result.scalar())
