"""The rollup job (Apache edition): fills the hourly, six-hourly and daily tiers from the 15-minute rollups
once a span is closed, and moves each tier's watermark on. On Community the continuous
aggregates' own refresh policies do this. See src/api/rollups/maintenance.py for why every
event counts exactly once in a tier."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.metrics import instruments as metrics
from src.api.rollups import repository
from src.api.rollups.catalogue import CATALOGUE, DAY, HOUR, SIX_HOURS, floor_to

log = logging.getLogger(__name__)
# A span is closed this long after it ends: events a few minutes late still reach the tiers
# through the job, not through the (slightly dearer) late path of the ingest statement.
CLOSE_AFTER = timedelta(minutes=5)
# The most one transaction fills while it holds the watermark (and ingest statements wait).
_STEP: dict[int, timedelta] = {HOUR: timedelta(hours=6), SIX_HOURS: timedelta(days=2), DAY: timedelta(days=7)}


async def advance_tiers(engine: AsyncEngine, now: datetime | None = None) -> dict[str, datetime | None]:
    """Fill every closed span of every tier; returns the watermarks it leaves. Safe to run from
    several workers at once: the watermark row lock serialises them."""
    now = now or datetime.now(UTC)
    result: dict[str, datetime | None] = {}
    for tier in CATALOGUE.tiers:  # hours come first: days are summed from complete UTC hours
        granule, phase = tier.granule, tier.phase
        target = floor_to(now - CLOSE_AFTER, granule, phase)
        finer_mark = result.get(tier.summed_from) if tier.summed_from else None
        if finer_mark is not None:
            target = min(target, floor_to(finer_mark, granule, phase))
        while True:
            async with engine.begin() as conn:
                mark = await repository.lock_watermark(conn, tier.name)
                # Late changes first: this span is filled from the 15-minute rollups, which must
                # hold every change committed before the lock (src/api/rollups/maintenance.py).
                await repository.fold_late(conn)
                if mark is None:
                    oldest = await repository.oldest_quarter(conn)
                    mark = min(floor_to(oldest, granule, phase), target) if oldest else target
                    await repository.move_watermark(conn, tier.name, mark)
                if mark < target:
                    # Spans without events are skipped, not stepped through: a database whose
                    # oldest event is a year old is not filled six hours per transaction.
                    first = await repository.first_quarter(conn, mark, target)
                    mark = target if first is None else max(mark, floor_to(first, granule, phase))
                    await repository.move_watermark(conn, tier.name, mark)
                if mark >= target:
                    result[tier.name] = mark
                    break
                until = min(mark + _STEP[granule], target)
                await repository.fill_tiers(conn, tier, mark, until)
                await repository.move_watermark(conn, tier.name, until)
                log.debug("rollup tier=%s filled_until=%s", tier.name, until.isoformat())
    return result


async def fold(engine: AsyncEngine, *, rollups: bool = True) -> int:
    """Move late changes into the rollups (Apache: `rollups`) and activity changes into the
    activity tables now; how many were moved."""
    async with engine.begin() as conn:
        return await repository.fold_late(conn, rollups=rollups)


# Changes appended per second of the fold interval above which ingest is in a burst (about 700
# events a second: each appends two or three).
BURST_CHANGES_PER_SECOND = 2_000


class FoldPacer:
    """When the fold loop folds: at every look, but while changes arrive faster than a burst's
    rate since the last look, not until `max_delay` seconds after the last fold."""

    def __init__(self, every: float, max_delay: float) -> None:
        self.burst = BURST_CHANGES_PER_SECOND * every
        self.max_delay = max_delay
        self.seen: int | None = None
        self.last: float | None = None

    def due(self, appended: int | None, now: float) -> bool:
        """`appended`: changes_appended now (None: not read, fold); `now`: a monotonic clock."""
        seen, self.seen = self.seen, appended
        in_burst = appended is not None and seen is not None and appended - seen > self.burst
        if in_burst and self.last is not None and now - self.last < self.max_delay:
            return False
        self.last = now
        return True


async def run_fold_loop(engine: AsyncEngine, every: float, *, rollups: bool, max_delay: float = 0) -> None:
    """Fold every `every` seconds. Questions read unfolded changes beside the rollups and
    activity tables, so folding often keeps those reads small; it is not needed for exactness.

    During a burst of ingest (a backfill, an import, a flush of offline clients) the fold waits
    until it ends, or until `max_delay` seconds have passed since the last fold (0: never
    waits): the fold of a late burst's changes costs about what storing them did, and on a
    busy machine it would take that from the requests still coming."""
    pacer = FoldPacer(every, max_delay)
    while True:
        try:
            appended = None
            if max_delay > 0:
                async with engine.connect() as conn:
                    appended = await repository.changes_appended(conn)
            if pacer.due(appended, time.monotonic()):
                with metrics.job_run("fold"):
                    folded = await fold(engine, rollups=rollups)
                if folded:
                    log.debug("rollup fold changes=%d", folded)
        except (DBAPIError, OSError) as exc:
            log.warning("rollup fold failed: %s", type(exc).__name__)
        await asyncio.sleep(every)


def rollup_lag(marks: dict[str, datetime | None], now: datetime) -> float:
    """Seconds the least advanced tier's watermark trails now (0 with no watermark yet)."""
    known = [mark for mark in marks.values() if mark is not None]
    return (now - min(known)).total_seconds() if known else 0.0


async def run_rollup_loop(engine: AsyncEngine, every: float) -> None:
    while True:
        try:
            with metrics.job_run("rollup"):
                marks = await advance_tiers(engine)
            metrics.set_job_lag("rollup", rollup_lag(marks, datetime.now(UTC)))
        except (DBAPIError, OSError) as exc:
            log.warning("rollup job failed: %s", type(exc).__name__)
        await asyncio.sleep(every)
