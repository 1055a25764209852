"""/stats routes of the replaced systems, answered by the same engine as /api/stats.

- GET /stats?site_id=&date=YYYY-MM-DD: views are pageview events, users distinct user_id
  falling back to visitor_id, top 10 paths; no date means all retained time.
- GET /stats/dau, /stats/top-events, /stats/retention: the interview API's shapes.
Once any API key exists these routes need a `stats:read` key, and answer only for its sites."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from src.api.auth.dependencies import Access, StatsReadDep
from src.api.config import get_settings
from src.api.db.engine import SessionDep, StatsSessionDep, TimescaleDep
from src.api.errors import InvalidParameter
from src.api.rollups.catalogue import PAGEVIEW_TYPES, ceil_quarter
from src.api.stats import repository
from src.api.stats.params import QueryText, TimeRange, check_year
from src.api.stats.question import Question
from src.api.stats.router import readable_sites
from src.api.stats.service import answer

router = APIRouter(prefix="/stats", tags=["compat"])


def _sites(scoped: dict[str, tuple[str, ...]]) -> list[str] | None:
    return list(scoped["site_id"]) if "site_id" in scoped else None


async def _scope(
    session: SessionDep, access: Access, site_id: str | None, client_id: str | None
) -> list[str] | None:
    """The sites a raw question reads (None: every site), `site_id` included."""
    scoped = _sites(await readable_sites(session, access, site_id, client_id))
    if site_id is None:
        return scoped
    return [site_id] if scoped is None else [s for s in scoped if s == site_id] or [""]


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def _days(start: date, end: date, start_name: str = "from_date", end_name: str = "to") -> TimeRange:
    check_year(start, start_name)
    check_year(end, end_name)
    if end < start:
        raise InvalidParameter(("query", end_name), "must not be before from_date", end.isoformat())
    if (end - start).days > 3660:
        raise InvalidParameter(("query", end_name), "the range must be at most 10 years", end.isoformat())
    return TimeRange(start=_day_start(start), end=_day_start(end) + timedelta(days=1))


@router.get("")
async def site_stats(
    session: StatsSessionDep,
    timescale: TimescaleDep,
    access: StatsReadDep,
    site_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    client_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    day: Annotated[date | None, Query(alias="date")] = None,
) -> dict[str, Any]:
    scoped = await readable_sites(session, access, site_id, client_id)
    if day is not None:
        window = _days(day, day, "date", "date")
    else:
        now = datetime.now(UTC)
        window = TimeRange(start=get_settings().stored_since(now), end=ceil_quarter(now + timedelta(hours=1)))
    paths = await answer(
        session,
        timescale,
        Question(
            window=window,
            metrics=("events",),
            group_by=("page",),
            site_id=site_id,
            filters={"event_type": PAGEVIEW_TYPES, **scoped},
        ),
    )
    top = sorted(paths.rows, key=lambda r: (-r["events"], r["page"]))[:10]
    users = await repository.distinct_users(session, window.start, window.end, site_id, _sites(scoped))
    return {
        "site_id": site_id,
        "date": day.isoformat() if day else None,
        "total_views": sum(r["events"] for r in paths.rows),
        "unique_users": users,
        "top_paths": [{"path": r["page"], "views": r["events"]} for r in top],
    }


@router.get("/dau")
async def daily_active_users(
    session: StatsSessionDep,
    access: StatsReadDep,
    from_date: date,
    to: date,
    site_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    client_id: Annotated[QueryText | None, Query(max_length=128)] = None,
) -> dict[str, list[dict[str, Any]]]:
    window = _days(from_date, to)
    sites = await _scope(session, access, site_id, client_id)
    counts = await repository.daily_users(session, window.start, window.end, sites)
    days = (to - from_date).days + 1
    data = []
    for offset in range(days):
        day = _day_start(from_date + timedelta(days=offset))
        data.append({"date": day.date().isoformat(), "unique_users": counts.get(day, 0)})
    return {"data": data}


@router.get("/top-events")
async def top_events(
    session: StatsSessionDep,
    timescale: TimescaleDep,
    access: StatsReadDep,
    from_date: date,
    to: date,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    site_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    client_id: Annotated[QueryText | None, Query(max_length=128)] = None,
) -> dict[str, list[dict[str, Any]]]:
    window = _days(from_date, to)
    scoped = await readable_sites(session, access, site_id, client_id)
    question = Question(window=window, group_by=("event_type",), site_id=site_id, filters=scoped)
    result = await answer(session, timescale, question)
    rows = sorted(result.rows, key=lambda r: (-r["events"], r["event_type"]))[:limit]
    return {"data": [{"event_type": r["event_type"], "count": r["events"]} for r in rows]}


@router.get("/retention")
async def retention(
    session: StatsSessionDep,
    access: StatsReadDep,
    start_date: date,
    windows: Annotated[int, Query(ge=1, le=12)] = 3,
    window_type: Literal["week", "day"] = "week",
    site_id: Annotated[QueryText | None, Query(max_length=128)] = None,
    client_id: Annotated[QueryText | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    """The cohort is the users active in the window starting at start_date; retention_windows
    gives, for each of the `windows` windows after it, the percentage of the cohort active again."""
    check_year(start_date, "start_date")
    step = timedelta(weeks=1) if window_type == "week" else timedelta(days=1)
    start = _day_start(start_date)
    sites = await _scope(session, access, site_id, client_id)
    counts = await repository.retention_counts(
        session, start, start + step * (windows + 1), "1 week" if window_type == "week" else "1 day", sites
    )
    cohort = counts.get(0, 0)
    if cohort == 0:
        return {"data": [], "window_type": window_type}
    percentages = [round(100 * counts.get(n, 0) / cohort, 2) for n in range(1, windows + 1)]
    return {
        "data": [
            {"cohort_date": start_date.isoformat(), "users_count": cohort, "retention_windows": percentages}
        ],
        "window_type": window_type,
    }
