"""SQL that keeps the Apache edition's rollups exact as events are stored and deleted. On the
Community edition TimescaleDB keeps its continuous aggregates itself and none of this runs.

- The statement that stores (or deletes) events groups the rows it really inserted (or
  deleted) by 15-minute bucket and every dimension, once: `maintenance_ctes`.
- Groups of the moment — at or above every tier's watermark, which is where events arrive —
  are upserted into the 15-minute rollups in that statement. The tiers above them are filled
  later by the rollup job (src/api/rollups/job.py), one closed span at a time, from the
  15-minute rollups; each tier's watermark says how far it is complete.
- Late groups — below some tier's watermark: backfills, imports, offline clients, deletes of
  old events — are *appended* to `rollup_late` with a mask of the tiers whose watermark lay
  above them, and the statement upserts nothing. Ingest speed then does not depend on the
  events' age: one plain insert of groups instead of some thousand upserts into each of 22
  tables. The fold (`fold_sql`) moves them into the 15-minute rollups and the masked tiers,
  in the background (ROLLUP_FOLD_INTERVAL) and at the start of every job transaction.

Why every event counts exactly once. The statement takes a KEY SHARE lock on the watermark
rows; the job takes FOR UPDATE on its tier's row, then folds, then reads the 15-minute rollups,
so it waits for statements in flight, and a statement that waited reads the watermark the job
committed. A group at or above a tier's watermark reaches that tier through the job, which
reads it from the 15-minute rollups: inline there, or folded before the job read. A group below
it is in the tier's mask: the job never fills that span again, the fold adds it. Folds run one
at a time (an advisory lock) and delete what they add, in one transaction. Until a change is
folded, the stats planner reads it from `rollup_late` beside the rollups it belongs to
(src/api/stats/planner.py), so answers are exact at every moment.
"""

from __future__ import annotations

from src.api.rollups.catalogue import CATALOGUE, DIMENSIONS, IS_PAGEVIEW, QUARTER, Rollup, bucket_sql

_WIDE = ", ".join(DIMENSIONS)


def _groups(source: str, sign: int) -> str:
    # The changed rows grouped once by every dimension; each rollup sums these groups (a few
    # hundred rows) instead of scanning the rows again. Sums of counts and sums are exact.
    negate = "-" if sign < 0 else ""
    return f"""rollup_groups AS (
    SELECT {bucket_sql("time", QUARTER)} AS bucket, {_WIDE},
           {negate}count(*) AS events, {negate}sum(duration) AS duration_sum,
           {negate}count(duration) AS duration_count
    FROM {source}
    GROUP BY bucket, {_WIDE}
)"""


def upsert(spec: Rollup, select: str) -> str:
    """A CTE: INSERT … ON CONFLICT that adds the selected deltas to the rollup's rows."""
    dims = ", ".join(spec.dimensions)
    measures = spec.measures
    updates = ", ".join(f"{m} = r.{m} + excluded.{m}" for m in measures)
    return f"""{spec.name}_change AS (
    INSERT INTO {spec.name} AS r (bucket, {dims}, {", ".join(measures)})
    {select}
    ON CONFLICT (bucket, {dims}) DO UPDATE SET {updates}
)"""


def sums(spec: Rollup, source: str, bucket: str, where: str = "", *, tier_source: bool = False) -> str:
    """The deltas for `spec` from `source`: rows with `event_type` (changed rows, the wide
    rollup) or, with `tier_source`, a finer tier of the same shape with its `pageviews`."""
    dims = ", ".join(spec.dimensions)
    pageviews = ""
    if spec.has_pageviews_column:
        pageviews = (
            " sum(pageviews)::bigint,"
            if tier_source
            else f" COALESCE(sum(events) FILTER (WHERE {IS_PAGEVIEW}), 0)::bigint,"
        )
    return (
        f"SELECT {bucket} AS b, {dims}, sum(events)::bigint,{pageviews}"
        f" sum(duration_sum)::bigint, sum(duration_count)::bigint"
        f" FROM {source}{where} GROUP BY b, {dims} ORDER BY b, {dims}"
    )


def maintenance_ctes(source: str, sign: int = 1) -> str:
    """CTEs (to follow `WITH {source} AS (INSERT/DELETE … RETURNING time, duration, dims)`)
    that apply the changed rows: groups of the moment to the 15-minute rollups, late groups to
    `rollup_late`. `sign` is 1 for inserted rows, -1 for deleted ones."""
    marks = {
        tier.name: f"(SELECT complete_until FROM tier_watermark WHERE tier = '{tier.name}')"
        for tier in CATALOGUE.tiers
    }
    mask = " | ".join(
        f"CASE WHEN bucket < {marks[tier.name]} THEN {CATALOGUE.tier_bit(tier)} ELSE 0 END"
        for tier in CATALOGUE.tiers
    )
    late = CATALOGUE.late
    columns = ", ".join(("bucket", *late.dimensions, *late.measures))
    ctes = [
        _groups(source, sign),
        "tier_watermark AS (SELECT tier, complete_until FROM rollup_watermark FOR KEY SHARE)",
        # Below the highest watermark is late; with no tier filled yet nothing is.
        "late_mark AS (SELECT max(complete_until) AS mark FROM tier_watermark)",
        f"""{late.name}_change AS (
    INSERT INTO {late.name} ({columns}, tiers)
    SELECT {columns}, ({mask})::smallint FROM rollup_groups
    WHERE bucket < (SELECT mark FROM late_mark)
)""",
    ]
    current = " WHERE bucket >= (SELECT mark FROM late_mark) OR (SELECT mark FROM late_mark) IS NULL"
    for spec in CATALOGUE.quarter_rollups:
        ctes.append(upsert(spec, sums(spec, "rollup_groups", "bucket", current)))
    return ", ".join(ctes)


# Folds run one at a time; any constant works, the same in every worker.
FOLD_LOCK_KEY = 0x464F4C44  # "FOLD"


def fold_sql() -> str:
    """One statement: take every late change (deleting it) and add it to the 15-minute rollups
    and to the tiers in its mask. Run it after pg_advisory_xact_lock(FOLD_LOCK_KEY), in the
    transaction that commits it; it returns the number of changes folded."""
    late = CATALOGUE.late
    dims = ", ".join(late.dimensions)
    ctes = [
        f"folded AS (DELETE FROM {late.name} RETURNING *)",
        f"fold_groups AS (SELECT bucket, {dims}, tiers, sum(events) AS events,"
        " sum(duration_sum) AS duration_sum, sum(duration_count) AS duration_count"
        f" FROM folded GROUP BY bucket, {dims}, tiers)",
    ]
    for spec in CATALOGUE.quarter_rollups:
        ctes.append(upsert(spec, sums(spec, "fold_groups", "bucket")))
    for spec in CATALOGUE.tier_rollups:
        assert spec.tier is not None
        where = f" WHERE tiers & {CATALOGUE.tier_bit(spec.tier)} <> 0"
        ctes.append(upsert(spec, sums(spec, "fold_groups", spec.tier.bucket("bucket"), where)))
    return "WITH " + ", ".join(ctes) + " SELECT count(*) FROM folded"
