"""The canonical /api/stats routes: timeseries, breakdown, summary, realtime."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import ORJSONResponse

from src.api.auth.dependencies import Access, StatsReadDep
from src.api.db.engine import SessionDep, StatsSessionDep, TimescaleDep
from src.api.errors import InvalidParameter
from src.api.sites.repository import client_site_ids
from src.api.sites.service import SiteRegistry
from src.api.stats.params import QueryText, parse_interval, parse_range, parse_timezone
from src.api.stats.question import (
    DIMENSION_SQL,
    EVENT_METRICS,
    FILTERS,
    METRICS,
    SESSION_DIMENSIONS,
    Question,
    Source,
    check_query_names,
    parse_names,
)
from src.api.stats.service import answer, iso, site_filter

# Each route needs a stats:read key for what it reads once any key exists (StatsReadDep, in
# base_question or the route), like /stats/* (the dashboard asks for a key then).
router = APIRouter(prefix="/api/stats", tags=["stats"])

_COMMON = ("site_id", "client_id", "from", "to", "tz", "source", *FILTERS)
_DIMENSIONS = (*DIMENSION_SQL, *SESSION_DIMENSIONS)
TextList = Annotated[list[QueryText] | None, Query(max_length=200)]


async def readable_sites(
    session: SessionDep, access: Access, site_id: str | None, client_id: str | None
) -> dict[str, tuple[str, ...]]:
    """The `site_id` filter that keeps a question to what it may read: the key's sites (403 when
    it asks for another), and with `client_id` the client's sites. {} when nothing restricts it."""
    if site_id is not None:
        access.check_site(site_id)
    allowed = access.sites
    if client_id is not None:
        owned = frozenset(await client_site_ids(session, client_id))
        allowed = owned if allowed is None else allowed & owned
    if allowed is None:
        return {}
    if site_id is not None:
        return {} if site_id in allowed else {"site_id": site_filter(())}
    return {"site_id": site_filter(allowed)}


async def base_question(
    request: Request,
    session: StatsSessionDep,
    access: StatsReadDep,
    site_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    client_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
    tz: Annotated[QueryText | None, Query(max_length=64)] = None,
    source: Source = "auto",
    page: TextList = None,
    event_type: TextList = None,
    os: TextList = None,
    browser: TextList = None,
    device: TextList = None,
    referrer_domain: TextList = None,
) -> Question:
    """What every stats route shares: site, range, zone, filters (each repeatable). Without
    `tz`, a registered site's stats are in the site's own zone, others in UTC."""
    if tz is None and site_id is not None:
        # The registry in memory (SITE_CACHE_SECONDS), as the dashboard reads it: no query.
        registry: SiteRegistry = request.app.state.site_registry
        site = (await registry.sites()).get(site_id)
        zone = site.timezone if site is not None else "UTC"
    else:
        zone = parse_timezone(tz)
    values = {
        "page": page,
        "event_type": event_type,
        "os": os,
        "browser": browser,
        "device": device,
        "referrer_domain": referrer_domain,
    }
    filters = {name: tuple(v) for name, v in values.items() if v}
    filters.update(await readable_sites(session, access, site_id, client_id))
    return Question(
        window=parse_range(start, end, zone), tz=zone, filters=filters, site_id=site_id, source=source
    )


BaseQuestion = Annotated[Question, Depends(base_question)]


def _window(question: Question) -> dict[str, str]:
    return {
        "tz": question.tz,
        "from": iso(question.window.start, question.tz),
        "to": iso(question.window.end, question.tz),
    }


@router.get("/timeseries")
async def timeseries(
    request: Request,
    response: Response,
    session: StatsSessionDep,
    timescale: TimescaleDep,
    base: BaseQuestion,
    interval: Annotated[QueryText, Query(max_length=32)] = "1 hour",
    metrics: Annotated[QueryText | None, Query(max_length=200)] = None,
    group_by: Annotated[QueryText | None, Query(max_length=200)] = None,
    fill: bool = False,
) -> ORJSONResponse:
    check_query_names(request.query_params, (*_COMMON, "interval", "metrics", "group_by", "fill"))
    bucket = parse_interval(interval)
    question = replace(
        base,
        interval=bucket,
        metrics=parse_names(metrics, METRICS, "metrics", ("events",)),
        group_by=parse_names(group_by, _DIMENSIONS, "group_by"),
    )
    result = await answer(session, timescale, question, fill=fill)
    # Thousands of rows: encoded by orjson straight away (buckets are zoned datetimes, written
    # in ISO 8601 with their offset), not walked by FastAPI's encoder first.
    return ORJSONResponse(
        {"interval": bucket.sql, **_window(question), "source": result.source, "rows": result.rows},
        headers=dict(response.headers),  # what dependencies set (a key's X-RateLimit-*)
    )


@router.get("/breakdown")
async def breakdown(
    request: Request,
    response: Response,
    session: StatsSessionDep,
    timescale: TimescaleDep,
    base: BaseQuestion,
    dimension: Annotated[QueryText, Query(max_length=32)] = "page",
    metrics: Annotated[QueryText | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> ORJSONResponse:
    check_query_names(request.query_params, (*_COMMON, "dimension", "metrics", "limit"))
    names = parse_names(dimension, _DIMENSIONS, "dimension")
    if len(names) != 1:
        raise InvalidParameter(
            ("query", "dimension"), f"must be exactly one of: {', '.join(_DIMENSIONS)}", dimension
        )
    (name,) = names
    chosen = parse_names(metrics, METRICS, "metrics", ("events",))
    question = replace(base, metrics=chosen, group_by=(name,))
    result = await answer(session, timescale, question)
    first = chosen[0]
    rows = sorted(result.rows, key=lambda r: (-(r[first] or 0), str(r[name])))[:limit]
    return ORJSONResponse(
        {"dimension": name, **_window(question), "source": result.source, "rows": rows},
        headers=dict(response.headers),  # what dependencies set (a key's X-RateLimit-*)
    )


@router.get("/summary")
async def summary(
    request: Request, session: StatsSessionDep, timescale: TimescaleDep, base: BaseQuestion
) -> dict[str, Any]:
    check_query_names(request.query_params, _COMMON)
    # Sessions have no page or event type to filter by: with those filters, event metrics only.
    pageless = not any(name in base.filters for name in ("page", "event_type"))
    question = replace(base, metrics=METRICS if pageless else EVENT_METRICS)
    result = await answer(session, timescale, question)
    return {**result.rows[0], **_window(question), "source": result.source}


@router.get("/realtime")
async def realtime(
    request: Request,
    session: StatsSessionDep,
    timescale: TimescaleDep,
    access: StatsReadDep,
    site_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    client_id: Annotated[QueryText | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    check_query_names(request.query_params, ("site_id", "client_id"))
    now = datetime.now(UTC)
    question = Question(
        window=parse_range(now - timedelta(minutes=5), now + timedelta(microseconds=1)),
        metrics=("visitors", "events"),
        site_id=site_id,
        filters=await readable_sites(session, access, site_id, client_id),
        source="raw",
    )
    result = await answer(session, timescale, question)
    return {**result.rows[0], **_window(question), "source": result.source}
