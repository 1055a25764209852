"""SQL that keeps the Apache edition's rollups exact. On the Community edition TimescaleDB keeps
its continuous aggregates itself and none of this runs.

- The 15-minute rollups change in the statement that stores (or deletes) events, from the rows
  it really inserted (or deleted): `maintenance_ctes`.
- The hourly and daily tiers are filled by the rollup job (src/api/jobs/rollup_tiers.py) from
  the wide 15-minute rollup, one closed span at a time, and each tier's watermark says how far
  they are complete. Events below a watermark (late events, deletes) change the tiers in the
  same statement as the 15-minute rollups. The statement takes a KEY SHARE lock on the
  watermark rows; the job takes FOR UPDATE on its tier's row before reading the 15-minute
  rollup, so it waits for statements in flight, and a statement that waited reads the
  watermark the job committed. Every event is therefore counted in a tier exactly once: by the
  job (committed before it read) or by its own statement (below the watermark it locked).

Identifiers come only from src/api/events/models.py; nothing here is built from input.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from src.api.events.models import (
    QUARTER_BUCKETS,
    QUARTER_ROLLUPS,
    ROLLUP_DIMENSIONS,
    ROLLUP_SPECS,
    TIERS_BY_NAME,
    EventRollup,
    Rollup,
    Tier,
)

_WIDE = ", ".join(ROLLUP_DIMENSIONS)
TIER_SPECS: tuple[Rollup, ...] = tuple(spec for spec in ROLLUP_SPECS if spec.has_pageviews_column)
assert all(set(spec.dimensions) <= set(ROLLUP_DIMENSIONS) for spec in ROLLUP_SPECS)


def _groups(source: str, sign: int) -> str:
    # The changed rows grouped once by every dimension; each rollup sums these groups (a few
    # hundred rows) instead of scanning the rows again. Sums of counts and sums are exact.
    negate = "-" if sign < 0 else ""
    return f"""rollup_groups AS (
    SELECT {QUARTER_BUCKETS.bucket("time")} AS bucket, {_WIDE},
           {negate}count(*) AS events, {negate}sum(duration) AS duration_sum,
           {negate}count(duration) AS duration_count
    FROM {source}
    GROUP BY bucket, {_WIDE}
)"""


def _upsert(spec: Rollup, select: str) -> str:
    """INSERT … ON CONFLICT that adds the selected deltas to the rollup's rows."""
    dims = ", ".join(spec.dimensions)
    measures: tuple[str, ...] = ("events", "pageviews") if spec.has_pageviews_column else ("events",)
    measures += ("duration_sum", "duration_count")
    updates = ", ".join(f"{m} = r.{m} + excluded.{m}" for m in measures)
    return f"""{spec.name}_change AS (
    INSERT INTO {spec.name} AS r (bucket, {dims}, {", ".join(measures)})
    {select}
    ON CONFLICT (bucket, {dims}) DO UPDATE SET {updates}
)"""


def _sums(spec: Rollup, source: str, bucket: str, where: str = "", *, tier_source: bool = False) -> str:
    """The deltas for `spec` from `source`: rows with `event_type` (changed rows, the wide
    rollup) or, with `tier_source`, a finer tier of the same shape with its `pageviews`."""
    dims = ", ".join(spec.dimensions)
    pageviews = ""
    if spec.has_pageviews_column:
        pageviews = (
            " sum(pageviews)::bigint,"
            if tier_source
            else " COALESCE(sum(events) FILTER (WHERE event_type = 'pageview'), 0)::bigint,"
        )
    return (
        f"SELECT {bucket} AS b, {dims}, sum(events)::bigint,{pageviews}"
        f" sum(duration_sum)::bigint, sum(duration_count)::bigint"
        f" FROM {source}{where} GROUP BY b, {dims} ORDER BY b, {dims}"
    )


def maintenance_ctes(source: str, sign: int = 1) -> str:
    """CTEs (to follow `WITH {source} AS (INSERT/DELETE … RETURNING time, duration, dims)`)
    that apply the changed rows to every rollup: the 15-minute ones always, the tiers where the
    rows lie below their watermark. `sign` is 1 for inserted rows, -1 for deleted ones."""
    ctes = [
        _groups(source, sign),
        "tier_watermark AS (SELECT tier, complete_until FROM rollup_watermark FOR KEY SHARE)",
        # The groups below some tier's watermark, picked out once: usually none (events arrive
        # as they happen), and then the tiers' upserts each read nothing.
        "late_groups AS (SELECT * FROM rollup_groups"
        " WHERE bucket < (SELECT max(complete_until) FROM tier_watermark))",
    ]
    for spec in ROLLUP_SPECS:
        if spec.tier is not None:
            mark = f"(SELECT complete_until FROM tier_watermark WHERE tier = '{spec.tier.name}')"
            where = f" WHERE bucket < {mark}"
            ctes.append(_upsert(spec, _sums(spec, "late_groups", spec.tier.bucket("bucket"), where)))
        else:
            assert spec.name in QUARTER_ROLLUPS
            ctes.append(_upsert(spec, _sums(spec, "rollup_groups", "bucket")))
    return ", ".join(ctes)


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
    result = await conn.execute(text(f"SELECT min(bucket) FROM {EventRollup.__tablename__}"))
    value: datetime | None = result.scalar_one()
    return value


# A tier summed from another's complete rows rather than from the wide 15-minute rollup.
SUMMED_FROM: dict[str, str] = {"1d": "1h"}
assert all(TIERS_BY_NAME[f].phase == TIERS_BY_NAME[t].phase for t, f in SUMMED_FROM.items())


def _source(spec: Rollup) -> str:
    """Hours come from the wide 15-minute rollup, days from the UTC hourly tier of their shape
    (complete there: the job fills days only below the hourly watermark)."""
    assert spec.tier is not None
    finer = SUMMED_FROM.get(spec.tier.name)
    if finer is not None:
        return spec.name.replace(f"_{spec.tier.name}_", f"_{finer}_", 1)
    return EventRollup.__tablename__


async def fill_tiers(conn: AsyncConnection, tier: Tier, start: datetime, end: datetime) -> None:
    """Add [start, end) to every rollup of this tier."""
    bucket = tier.bucket("bucket")
    where = " WHERE bucket >= :start AND bucket < :end"
    for spec in TIER_SPECS:
        if spec.tier == tier:
            source = _source(spec)
            select = _sums(spec, source, bucket, where, tier_source=source != EventRollup.__tablename__)
            statement = f"WITH {_upsert(spec, select)}"
            await conn.execute(text(statement + " SELECT 1"), {"start": start, "end": end})


async def move_watermark(conn: AsyncConnection, tier: str, until: datetime) -> None:
    await conn.execute(
        text("UPDATE rollup_watermark SET complete_until = :until WHERE tier = :tier"),
        {"tier": tier, "until": until},
    )
