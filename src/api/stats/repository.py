"""Aggregation SQL. Every query is bounded by [start, end) and takes its interval as a bound
parameter cast to `interval`; dimension names come only from whitelists."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, text
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.events.schemas import EventBucket

_PAGE_OS_BUCKETS_SQL = text("""
SELECT time_bucket(CAST(:interval AS interval), time) AS bucket,
       page,
       CASE WHEN os IN ('Windows', 'MacOS', 'iOS', 'Android', 'Linux') THEN os ELSE 'Other' END
           AS operating_system,
       avg(duration)::float8 AS avg_duration,
       count(*) AS count
FROM event
WHERE time >= :start AND time < :end AND page IN :pages
GROUP BY bucket, page, operating_system
ORDER BY bucket, page, operating_system
""").bindparams(bindparam("pages", expanding=True))


async def page_os_buckets(
    session: AsyncSession, interval: str, start: datetime, end: datetime, pages: Sequence[str]
) -> list[EventBucket]:
    result = await session.execute(
        _PAGE_OS_BUCKETS_SQL,
        {"interval": interval, "start": start, "end": end, "pages": list(pages)},
    )
    return [EventBucket.model_validate(row._mapping) for row in result]
