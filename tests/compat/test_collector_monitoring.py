"""The collector systems' first curl examples, /events/recent and /events/count."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.db.schema import TimescaleInfo
from src.api.rollups.catalogue import CATALOGUE
from src.api.rollups.job import advance_tiers

pytestmark = pytest.mark.anyio


async def test_custom_event_without_page_is_stored_with_the_empty_page(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    site = f"custom-{uuid.uuid4().hex[:8]}"
    body = {"eventType": "test", "sessionId": "test_session", "visitorId": "test_visitor", "siteId": site}
    response = await client.post("/collect", json=body)
    assert response.status_code == 200, response.text
    batch = {
        "eventType": "batch",
        "sessionId": "s",
        "siteId": site,
        "events": [{"eventType": "click", "eventData": {"x": 1}}, {"eventType": "scroll"}],
    }
    response = await client.post("/collect", json=batch)
    assert response.status_code == 200, response.text
    assert response.json()["events_processed"] == 3
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT event_type, page, url FROM event WHERE site_id = :s ORDER BY event_type"),
                {"s": site},
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        ("batch", "", None),
        ("click", "", None),
        ("scroll", "", None),
        ("test", "", None),
    ]
    # Counted in events and in the page breakdown, under the empty page.
    breakdown = await client.get("/api/stats/breakdown", params={"site_id": site, "dimension": "page"})
    assert breakdown.json()["rows"] == [{"page": "", "events": 4}]
    # The original route still requires a page.
    refused = await client.post("/api/events/", json={"site_id": site, "event_type": "x"})
    assert refused.status_code == 422


async def test_a_url_without_path_still_gives_the_page(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    site = f"custom-{uuid.uuid4().hex[:8]}"
    response = await client.post(
        "/collect", json={"eventType": "x", "siteId": site, "url": "https://a.example/p/q"}
    )
    assert response.status_code == 200
    async with engine.connect() as conn:
        page = (
            await conn.execute(text("SELECT page FROM event WHERE site_id = :s"), {"s": site})
        ).scalar_one()
    assert page == "/p/q"


async def test_page_view_spellings_count_in_the_queued_stats(client: httpx.AsyncClient) -> None:
    site = f"queued-{uuid.uuid4().hex[:8]}"
    for kind in ("page_view", "pageview", "$pageview", "click"):
        body = {"site_id": site, "event_type": kind, "path": "/home", "user_id": "u1"}
        assert (await client.post("/event", json=body)).status_code == 200
    stats = (await client.get("/stats", params={"site_id": site})).json()
    assert stats["total_views"] == 3
    assert stats["top_paths"] == [{"path": "/home", "views": 3}]


async def test_recent_events_newest_first_in_the_collector_shape(client: httpx.AsyncClient) -> None:
    site = f"recent-{uuid.uuid4().hex[:8]}"
    for n in range(3):
        body = {
            "eventType": f"e{n}",
            "siteId": site,
            "visitorId": "v",
            "path": f"/p{n}",
            "eventData": {"n": n},
        }
        assert (await client.post("/collect", json=body)).status_code == 200
    response = await client.get("/events/recent", params={"site_id": site, "limit": 2})
    assert response.status_code == 200
    items = response.json()
    assert [i["eventType"] for i in items] == ["e2", "e1"]
    first = items[0]
    assert set(first) == {
        "id",
        "eventType",
        "sessionId",
        "visitorId",
        "siteId",
        "url",
        "path",
        "eventData",
        "time",
        "client_id",
        "created_at",
    }
    assert first["path"] == "/p2" and first["eventData"] == {"n": 2} and first["client_id"] is None
    assert first["siteId"] == site and first["visitorId"] == "v"
    for bad in ("0", "1001", "x"):
        assert (await client.get("/events/recent", params={"limit": bad})).status_code == 422


async def test_event_count_is_exact_for_a_site_and_a_range(client: httpx.AsyncClient) -> None:
    site = f"count-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=5)
    events = [
        {"site_id": site, "page": "/", "time": (start + timedelta(hours=7 * i)).isoformat()}
        for i in range(10)
    ]
    assert (await client.post("/api/events/batch", json={"events": events})).status_code == 200
    whole = (await client.get("/events/count", params={"site_id": site})).json()
    assert whole["count"] == 10 and whole["site_id"] == site and whole["from"] and whole["to"]
    part = await client.get(
        "/events/count",
        params={"site_id": site, "from": start.isoformat(), "to": (start + timedelta(hours=21)).isoformat()},
    )
    assert part.json()["count"] == 3  # hours 0, 7, 14
    backwards = await client.get(
        "/events/count", params={"from": start.isoformat(), "to": (start - timedelta(hours=1)).isoformat()}
    )
    assert backwards.status_code == 422
    too_wide = await client.get("/events/count", params={"to": "7309-10-11T15:08:32-22:37"})
    assert too_wide.status_code == 422 and "10 years" in too_wide.text


async def test_every_page_view_spelling_counts_in_pageviews_on_every_path(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    site = f"synonyms-{uuid.uuid4().hex[:8]}"
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    events = [
        {"site_id": site, "event_type": kind, "page": "/", "time": (day + timedelta(hours=h)).isoformat()}
        for h, kind in enumerate(("pageview", "page_view", "$pageview", "click"))
    ]
    assert (await client.post("/api/events/batch", json={"events": events})).status_code == 200
    if not timescale.has_continuous_aggregates:
        await advance_tiers(engine)  # the hourly and daily tiers, with their pageviews column
    else:  # late events: a forced rollup answer waits for the aggregates' refresh
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for name in CATALOGUE.names:
                await conn.execute(
                    text("CALL refresh_continuous_aggregate(CAST(:v AS regclass), :lo, :hi)"),
                    {"v": name, "lo": day - timedelta(days=1), "hi": day + timedelta(days=2)},
                )
    window = {"site_id": site, "from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    for source in ("raw", "rollup", "auto"):
        summary = (await client.get("/api/stats/summary", params={**window, "source": source})).json()
        assert (summary["events"], summary["pageviews"]) == (4, 3), source
        series = await client.get(
            "/api/stats/timeseries",
            params={**window, "source": source, "interval": "1 day", "metrics": "pageviews"},
        )
        assert [r["pageviews"] for r in series.json()["rows"]] == [3], source
    top = await client.get(
        "/stats/top-events",
        params={"from_date": day.date().isoformat(), "to": day.date().isoformat(), "limit": 100},
    )
    kinds = {r["event_type"] for r in top.json()["data"]}
    assert {"pageview", "page_view", "$pageview", "click"} <= kinds
