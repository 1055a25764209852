"""How far the rollups answer exactly: the one thing the stats planner asks of them, whatever
the edition.

- Apache: the tiers are complete below their watermarks (the job moves them); the 15-minute
  rollups always (the statement that stores events keeps them) — except for late changes not
  folded yet, which a question then reads from `rollup_late` beside them (`state`).
- Community: continuous aggregates are real-time, so they are exact everywhere, except where
  rows changed below an aggregate's materialisation watermark that its refresh policy has not
  applied yet (late inserts, deletes): there only raw events are exact. Above its watermark an
  aggregate answers by aggregating raw events, so a tier is used only up to its watermark (the
  finer ones, materialised further, answer the rest): a six-hour tier materialised to 06:00
  would otherwise aggregate the raw events of the hours after it on every question.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy.exc import DBAPIError
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.db.schema import TimescaleInfo
from src.api.rollups import repository
from src.api.rollups.catalogue import CATALOGUE

log = logging.getLogger(__name__)
# Usable everywhere.
ALWAYS = datetime.max.replace(tzinfo=UTC)


# Community: aggregate watermarks are read at most this often per process. A stale one only
# moves where the planner switches to finer aggregates: every aggregate is exact anywhere.
WATERMARKS_TTL = 5.0
_marks: tuple[float, dict[str, datetime | None]] | None = None


async def state(
    session: AsyncSession, timescale: TimescaleInfo, start: datetime, end: datetime
) -> tuple[dict[str, datetime | None], bool]:
    """What a plan over [start, end) is made from, in one round trip at most: per tier name,
    the time below which its rollups hold every event (None: nothing yet), and whether late
    changes in the range wait to be folded (Apache: a question over that range reads them
    beside the rollups; never on Community)."""
    if timescale.has_continuous_aggregates:
        return await _materialised_until(session), False
    return await repository.tier_state(session, start, end)


async def _materialised_until(session: AsyncSession) -> dict[str, datetime | None]:
    """Community: per tier, the earliest materialisation watermark of its aggregates; ALWAYS
    (real-time everywhere) when the catalog cannot be read."""
    global _marks
    now = time.monotonic()
    if _marks is None or now - _marks[0] >= WATERMARKS_TTL:
        try:
            views = await repository.aggregate_watermarks(session)
        except DBAPIError as exc:
            log.warning("cannot read continuous-aggregate watermarks: %s", type(exc.orig).__name__)
            await session.rollback()
            return {tier.name: ALWAYS for tier in CATALOGUE.tiers}
        marks: dict[str, datetime | None] = {}
        for tier in CATALOGUE.tiers:
            found = [views.get(rollup.name) for rollup in CATALOGUE.of_tier(tier)]
            marks[tier.name] = None if None in found else min(m for m in found if m is not None)
        _marks = (now, marks)
    return _marks[1]


async def exact_over(
    session: AsyncSession, timescale: TimescaleInfo, relations: Iterable[str], start: datetime, end: datetime
) -> bool:
    """Whether these rollups hold every change in [start, end) (below the times `state` reads)."""
    if not timescale.has_continuous_aggregates:
        return True
    try:
        if await repository.pending_invalidations(session, tuple(relations), start, end):
            return False
    except DBAPIError as exc:  # catalog not readable (say, a managed service): raw is exact
        log.warning("cannot read continuous-aggregate invalidations: %s", type(exc.orig).__name__)
        await session.rollback()
        return False
    return True
