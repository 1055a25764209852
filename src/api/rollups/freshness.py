"""How far the rollups answer exactly: the one thing the stats planner asks of them, whatever
the edition.

- Apache: the tiers are complete below their watermarks (the job moves them); the 15-minute
  rollups always (the statement that stores events keeps them) — except for late changes not
  folded yet, which a question then reads from `rollup_late` beside them (`late_pending`).
- Community: continuous aggregates are real-time, so they are usable everywhere, except where
  rows changed below an aggregate's materialisation watermark that its refresh policy has not
  applied yet (late inserts, deletes): there only raw events are exact.
"""

from __future__ import annotations

import logging
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


async def usable_until(session: AsyncSession, timescale: TimescaleInfo) -> dict[str, datetime | None]:
    """Per tier name: its rollups hold every event below this time (None: nothing yet)."""
    if timescale.has_continuous_aggregates:
        return {tier.name: ALWAYS for tier in CATALOGUE.tiers}
    return await repository.tier_watermarks(session)


async def late_pending(
    session: AsyncSession, timescale: TimescaleInfo, start: datetime, end: datetime
) -> bool:
    """Whether late changes in [start, end) wait to be folded (Apache): a question over that
    range reads them beside the rollups."""
    if timescale.has_continuous_aggregates:
        return False
    return await repository.late_pending(session, start, end)


async def exact_over(
    session: AsyncSession, timescale: TimescaleInfo, relations: Iterable[str], start: datetime, end: datetime
) -> bool:
    """Whether these rollups hold every change in [start, end) (below `usable_until`)."""
    if not timescale.has_continuous_aggregates:
        return True
    try:
        for view in relations:
            if await repository.pending_invalidations(session, view, start, end):
                return False
    except DBAPIError as exc:  # catalog not readable (say, a managed service): raw is exact
        log.warning("cannot read continuous-aggregate invalidations: %s", type(exc.orig).__name__)
        await session.rollback()
        return False
    return True
