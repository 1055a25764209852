"""SQL that keeps the Apache edition's rollups exact as events are stored and deleted. On the
Community edition TimescaleDB keeps its continuous aggregates itself and none of this runs.

- The 15-minute rollups change in the statement that stores (or deletes) events, from the rows
  it really inserted (or deleted): `maintenance_ctes`.
- The tiers are filled by the rollup job (src/api/rollups/job.py) from the 15-minute rollups,
  one closed span at a time; each tier's watermark says how far they are complete. Events
  below a watermark (late events, deletes) change the tiers in the same statement as the
  15-minute rollups. The statement takes a KEY SHARE lock on the watermark rows; the job takes
  FOR UPDATE on its tier's row before reading the 15-minute rollup, so it waits for statements
  in flight, and a statement that waited reads the watermark the job committed. Every event is
  therefore counted in a tier exactly once: by the job (committed before it read) or by its
  own statement (below the watermark it locked).
"""

from __future__ import annotations

from src.api.rollups.catalogue import CATALOGUE, DIMENSIONS, QUARTER, Rollup, bucket_sql

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
    for spec in CATALOGUE.rollups:
        if spec.tier is not None:
            mark = f"(SELECT complete_until FROM tier_watermark WHERE tier = '{spec.tier.name}')"
            where = f" WHERE bucket < {mark}"
            ctes.append(upsert(spec, sums(spec, "late_groups", spec.tier.bucket("bucket"), where)))
        else:
            ctes.append(upsert(spec, sums(spec, "rollup_groups", "bucket")))
    return ", ".join(ctes)
