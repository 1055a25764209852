"""The collector systems' monitoring routes: GET /events/recent and GET /events/count."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from src.api.auth.dependencies import StatsReadDep
from src.api.config import get_settings
from src.api.db.engine import SessionDep, TimescaleDep
from src.api.errors import InvalidParameter
from src.api.rollups.catalogue import ceil_quarter
from src.api.stats.params import MAX_RANGE, QueryText, TimeRange, check_year
from src.api.stats.question import Question
from src.api.stats.router import readable_sites
from src.api.stats.service import answer

router = APIRouter(prefix="/events", tags=["compat"])


class RecentEvent(BaseModel):
    """A stored event in the collector's camelCase shape."""

    model_config = ConfigDict(populate_by_name=True)

    id: uuid.UUID
    event_type: str = Field(serialization_alias="eventType")
    session_id: str | None = Field(serialization_alias="sessionId")
    visitor_id: str | None = Field(serialization_alias="visitorId")
    site_id: str = Field(serialization_alias="siteId")
    url: str | None
    path: str
    event_data: dict[str, Any] | None = Field(serialization_alias="eventData")
    time: datetime
    client_id: str | None
    created_at: datetime


class EventCount(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    count: int
    site_id: str | None
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")


# Newest by arrival among events whose time lies in the last hour, widened to a day, a week,
# then the retention while fewer than `limit` are found: the read is bounded in time, and the
# usual case (events arriving now) reads only the newest chunk.
_SPANS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), None)
_RECENT = text(
    "SELECT id, event_type, session_id, visitor_id, site_id, url, page AS path, properties AS event_data,"
    " time, client_id, received_at AS created_at FROM event"
    " WHERE time >= :since AND time < :until AND (CAST(:site_id AS text) IS NULL OR site_id = :site_id)"
    " AND (CAST(:sites AS text[]) IS NULL OR site_id = ANY(CAST(:sites AS text[])))"
    " ORDER BY received_at DESC, id DESC LIMIT :limit"
)


@router.get("/recent", response_model=list[RecentEvent], response_model_by_alias=True)
async def recent_events(
    session: SessionDep,
    access: StatsReadDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    site_id: Annotated[QueryText | None, Query(max_length=128)] = None,
) -> list[RecentEvent]:
    # A key scoped to some sites reads only theirs.
    scoped = await readable_sites(session, access, site_id or None, None)
    sites = list(scoped["site_id"]) if "site_id" in scoped else None
    now = datetime.now(UTC)
    oldest = get_settings().stored_since(now)
    until = now + timedelta(hours=2)  # event times may lie up to an hour ahead
    rows: list[Any] = []
    for span in _SPANS:
        since = max(now - span, oldest) if span is not None else oldest
        params = {"since": since, "until": until, "site_id": site_id or None, "sites": sites, "limit": limit}
        rows = list((await session.execute(_RECENT, params)).mappings())
        if len(rows) >= limit or since == oldest:
            break
    return [RecentEvent.model_validate(dict(row)) for row in rows]


@router.get("/count", response_model=EventCount, response_model_by_alias=True)
async def count_events(
    session: SessionDep,
    access: StatsReadDep,
    timescale: TimescaleDep,
    site_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> EventCount:
    """Exact, from the rollups (the planner reads raw events only for ragged edges)."""
    now = datetime.now(UTC)
    for value, name in ((start, "from"), (end, "to")):
        if value is not None:
            check_year(value, name)
    begin = _aware(start) if start else get_settings().stored_since(now)
    finish = _aware(end) if end else ceil_quarter(now + timedelta(hours=1))
    if begin >= finish:
        raise InvalidParameter(("query", "from"), "must be before 'to'", begin.isoformat())
    if finish - begin > MAX_RANGE:
        raise InvalidParameter(("query", "from"), "the range must be at most 10 years", begin.isoformat())
    window = TimeRange(start=begin, end=finish)
    scoped = await readable_sites(session, access, site_id or None, None)
    question = Question(window=window, metrics=("events",), site_id=site_id or None, filters=scoped)
    result = await answer(session, timescale, question)
    count = int(result.rows[0]["events"]) if result.rows else 0
    return EventCount(count=count, site_id=site_id or None, start=begin, end=finish)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
