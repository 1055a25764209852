"""Session metrics and dimensions in the stats API equal the same numbers computed in Python
from an independent sessionisation, in UTC and in Kathmandu (+05:45)."""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.sessions.service import SessionSettings, run
from tests.sessions.reference import Expected, raw_rows, sessionise
from tests.sessions.test_job import post, random_event

pytestmark = pytest.mark.anyio
TIMEOUT = timedelta(minutes=30)


def metrics(items: list[Expected]) -> dict[str, Any]:
    n = len(items)
    return {
        "visits": n,
        "bounce_rate": 100 * sum(s.bounce for s in items) / n if n else None,
        "visit_duration": sum(s.duration for s in items) / n if n else None,
        "views_per_visit": sum(s.pageviews for s in items) / n if n else None,
    }


def close(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name, value in want.items():
        assert (
            got[name] == pytest.approx(value, rel=1e-9, abs=1e-9) if value is not None else got[name] is None
        ), name


@pytest.mark.parametrize("tz", ["UTC", "Asia/Kathmandu"])
async def test_session_metrics_equal_an_independent_count(
    client: httpx.AsyncClient, engine: AsyncEngine, fresh_sessions: None, tz: str
) -> None:
    rng = random.Random(f"stats-{tz}-{uuid.uuid4()}")
    site = f"sstats-{uuid.uuid4().hex[:8]}"
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=4)
    await post(client, [random_event(rng, site, base, 72) for _ in range(300)])
    await run(engine, SessionSettings.of(get_settings(), datetime.now(UTC)))
    sessions = sessionise(await raw_rows(engine, [site]), TIMEOUT)
    zone = ZoneInfo(tz)
    start = (base + timedelta(hours=13)).astimezone(zone).replace(minute=0)
    end = start + timedelta(days=2)
    inside = [s for s in sessions if start <= s.started_at < end]
    assert inside
    window = {"site_id": site, "from": start.isoformat(), "to": end.isoformat(), "tz": tz}

    summary = (await client.get("/api/stats/summary", params=window)).json()
    close(summary, metrics(inside))

    series = await client.get(
        "/api/stats/timeseries",
        params={
            **window,
            "interval": "1 day",
            "metrics": "visits,bounce_rate,visit_duration,views_per_visit",
        },
    )
    assert series.status_code == 200, series.text
    by_day: dict[str, list[Expected]] = defaultdict(list)
    for s in inside:
        local = s.started_at.astimezone(zone)
        by_day[local.replace(hour=0, minute=0, second=0, microsecond=0).isoformat()].append(s)
    rows = series.json()["rows"]
    assert [r["bucket"] for r in rows] == sorted(by_day)
    for row in rows:
        close(row, metrics(by_day[row["bucket"]]))

    # A session dimension counts the sessions' visitors and page views too (the dashboard asks).
    entries = await client.get(
        "/api/stats/breakdown",
        params={**window, "dimension": "entry_page", "metrics": "visitors,pageviews", "limit": 100},
    )
    assert entries.status_code == 200, entries.text
    by_entry: dict[Any, list[Expected]] = defaultdict(list)
    for s in inside:
        by_entry[s.entry_page].append(s)
    got_entries = {r["entry_page"]: r for r in entries.json()["rows"]}
    assert got_entries == {
        page: {
            "entry_page": page,
            "visitors": len({s.visitor for s in items}),
            "pageviews": sum(s.pageviews for s in items),
        }
        for page, items in by_entry.items()
    }
    for dimension in ("entry_page", "exit_page", "utm_source", "utm_campaign", "os"):
        breakdown = await client.get(
            "/api/stats/breakdown",
            params={**window, "dimension": dimension, "metrics": "visits,bounce_rate", "limit": 100},
        )
        assert breakdown.status_code == 200, breakdown.text
        groups: dict[Any, list[Expected]] = defaultdict(list)
        for s in inside:
            groups[getattr(s, dimension)].append(s)
        got = {r[dimension]: r for r in breakdown.json()["rows"]}
        assert set(got) == set(groups)
        for value, items in groups.items():
            close(got[value], {k: v for k, v in metrics(items).items() if k in ("visits", "bounce_rate")})


async def test_session_questions_that_cannot_be_answered_are_422(client: httpx.AsyncClient) -> None:
    bad = [
        ("/api/stats/breakdown", {"dimension": "entry_page", "metrics": "avg_duration"}),
        ("/api/stats/breakdown", {"dimension": "page", "metrics": "visits"}),
        ("/api/stats/timeseries", {"metrics": "visits", "page": "/"}),
        ("/api/stats/timeseries", {"metrics": "visitz"}),
    ]
    for route, params in bad:
        response = await client.get(route, params=params)
        assert response.status_code == 422, (route, params, response.text)
    # A summary with a page filter still answers, with event metrics only.
    summary = await client.get("/api/stats/summary", params={"page": "/"})
    assert summary.status_code == 200 and "visits" not in summary.json()
