"""The ETL system's routes (/etl/*) over the sessions job."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.sessions import repository

pytestmark = pytest.mark.anyio


async def post(client: httpx.AsyncClient, site: str, start: datetime) -> None:
    events = [
        {
            "site_id": site,
            "visitor_id": "v1",
            "page": page,
            "time": (start + timedelta(minutes=m)).isoformat(),
            "url": f"https://s.example{page}?utm_source=news&utm_medium=mail&utm_campaign=c1",
            "referrer": "https://www.google.com/",
        }
        for m, page in ((0, "/"), (5, "/a"), (9, "/b"))
    ]
    events += [
        {"site_id": site, "visitor_id": "v2", "page": "/", "time": start.isoformat()},
        {
            "site_id": site,
            "visitor_id": "v2",
            "event_type": "click",
            "page": "/x",
            "time": (start + timedelta(hours=2)).isoformat(),
        },
    ]
    response = await client.post("/api/events/batch", json={"events": events})
    assert response.status_code == 200 and response.json()["accepted"] == 5


async def test_run_sync_status_recent_sessions_and_daily_metrics(
    client: httpx.AsyncClient, engine: AsyncEngine, fresh_sessions: None
) -> None:
    site = f"etl-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0) - timedelta(days=2)
    await post(client, site, start)
    status = (await client.get("/etl/status")).json()
    assert status["pending_events"]["pageview"] >= 4 and status["watermark"] is None
    result = await client.post("/etl/run-sync", params={"batch_size": 1000})
    assert result.status_code == 200
    body = result.json()
    assert body["status"] == "completed"
    assert body["events_processed"] >= 5 and body["sessions_created"] >= 3
    for name in ("sessions_updated", "daily_metrics_updated", "duration_seconds"):
        assert name in body
    status = (await client.get("/etl/status")).json()
    assert status["pending_total"] == 0 and status["sessions"] >= 3 and status["watermark"]
    assert status["last_run"]["status"] == "completed" and status["lag_seconds"] >= 0
    recent = (await client.get("/etl/recent-sessions", params={"limit": 50, "site_id": site})).json()
    by_visitor = {(s["visitor"], s["events"]): s for s in recent}
    first = by_visitor[("v1", 3)]
    assert first["entry_page"] == "/" and first["exit_page"] == "/b" and first["duration"] == 540
    assert first["utm_source"] == "news" and first["utm_medium"] == "mail" and first["utm_campaign"] == "c1"
    assert first["referrer_domain"] == "google.com" and first["bounce"] is False
    v2 = sorted((s for s in recent if s["visitor"] == "v2"), key=lambda s: s["started_at"])
    assert [(s["pageviews"], s["bounce"]) for s in v2] == [(1, True), (0, False)]
    day = start.date().isoformat()
    daily = await client.post("/etl/calculate-daily-metrics", params={"target_date": day})
    assert daily.status_code == 200
    (metrics,) = [m for m in daily.json()["metrics"] if m["site_id"] == site]
    # v1: one session of 3 pageviews; v2: a bounce at 01:00 and a custom event at 03:00.
    assert metrics["sessions"] == 3 and metrics["visitors"] == 2 and metrics["pageviews"] == 4
    assert metrics["bounces"] == 1 and metrics["bounce_rate"] == pytest.approx(100 / 3)
    assert metrics["pages_per_session"] == pytest.approx(4 / 3)
    assert metrics["avg_session_duration"] == pytest.approx(540 / 3)
    assert (
        await client.post("/etl/calculate-daily-metrics", params={"target_date": "nope"})
    ).status_code == 422


async def test_process_one_type_and_background_runs(
    client: httpx.AsyncClient, engine: AsyncEngine, fresh_sessions: None
) -> None:
    site = f"etl-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    await post(client, site, start)
    assert (await client.post("/etl/run-sync")).status_code == 200  # the full first run
    await post(client, f"{site}-b", start)
    typed = (await client.post("/etl/process/click")).json()
    assert typed["status"] == "completed" and typed["events_processed"] == 2  # v2's two events
    pending = (await client.get("/etl/status")).json()["pending_events"]
    assert pending == {"pageview": 3}
    # A run holds the lock: a background run is refused, not started twice.
    async with engine.connect() as conn:
        await repository.lock(conn)
        await conn.commit()
        refused = await client.post("/etl/run")
        await repository.unlock(conn)
        await conn.commit()
    assert refused.status_code == 409 and refused.json()["status"] == "already_running"
    started = await client.post("/etl/run")
    assert started.status_code == 202 and started.json()["status"] == "started"
    run_id = started.json()["run_id"]
    for _ in range(100):
        last = (await client.get("/etl/status")).json()["last_run"]
        if last["run_id"] == run_id and last["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert last["status"] == "completed" and last["result"]["events_processed"] == 3


async def test_cleanup_refuses_bad_days_and_keeps_unprocessed_events(
    client: httpx.AsyncClient, engine: AsyncEngine, fresh_sessions: None
) -> None:
    assert (await client.post("/etl/cleanup", params={"retention_days": 0})).status_code == 422
    # Never run: nothing is processed, so nothing is dropped.
    answer = (await client.post("/etl/cleanup", params={"retention_days": 1})).json()
    assert answer["chunks_dropped"] == 0 and answer["dropped_before"] is None
    # Far older than any other test's events: the drop takes only this test's chunks.
    site = f"etl-{uuid.uuid4().hex[:8]}"
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1500)
    await post(client, site, old - timedelta(days=10))
    await post(client, site, old)
    await client.post("/etl/run-sync")
    sessions_before = (await client.get("/etl/status")).json()["sessions"]
    # An unprocessed old event holds the cleanup back to its time.
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO session_change VALUES (:s, md5('x')::uuid, :t, 'pageview')"),
            {"s": site, "t": old - timedelta(days=5)},
        )
    held = (await client.post("/etl/cleanup", params={"retention_days": 30})).json()
    assert datetime.fromisoformat(held["dropped_before"]) == old - timedelta(days=5)
    # At least this test's five (schemathesis may have stored a few that old in other sites).
    assert held["chunks_dropped"] >= 1 and held["events_dropped"] >= 5
    async with engine.connect() as conn:
        kept = (
            await conn.execute(text("SELECT count(*) FROM event WHERE site_id = :s"), {"s": site})
        ).scalar_one()
    assert kept == 5  # the events at `old`, after the held-back limit
    assert (await client.get("/etl/status")).json()["sessions"] == sessions_before


async def test_etl_routes_that_change_data_need_a_key_when_keys_are_set(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyed = dataclasses.replace(get_settings(), api_keys=("k1",))
    monkeypatch.setattr("src.api.auth.dependencies.get_settings", lambda: keyed)
    for route in ("/etl/run-sync", "/etl/run", "/etl/process/click", "/etl/cleanup"):
        assert (await client.post(route)).status_code == 401, route
    assert (await client.get("/etl/status")).status_code == 401
    assert (await client.get("/etl/status", headers={"x-api-key": "k1"})).status_code == 200
