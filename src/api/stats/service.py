"""Answers aggregation questions, choosing the rollup or the raw events as the source."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.db.timescale import TimescaleInfo
from src.api.events.schemas import EventBucket
from src.api.stats import repository
from src.api.stats.params import BucketInterval, TimeRange


async def page_os_buckets(
    session: AsyncSession,
    timescale: TimescaleInfo,
    interval: BucketInterval,
    window: TimeRange,
    pages: Sequence[str],
) -> list[EventBucket]:
    return await repository.page_os_buckets(session, interval.sql, window.start, window.end, pages)
