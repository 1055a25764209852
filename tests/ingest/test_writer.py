from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from src.main import create_app

pytestmark = pytest.mark.anyio


async def stored_ids(engine: AsyncEngine, site: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id FROM event WHERE site_id = :s AND time > now() - interval '1 day'"), {"s": site}
        )
        return {str(r.id) for r in rows}


async def test_concurrent_single_posts_share_commits_and_all_200s_are_stored(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    site = f"burst-{uuid.uuid4().hex[:8]}"
    responses = await asyncio.gather(
        *(client.post("/api/events/", json={"site_id": site, "page": f"/{i}"}) for i in range(300))
    )
    assert all(r.status_code == 200 for r in responses)
    acknowledged = {r.json()["id"] for r in responses}
    assert len(acknowledged) == 300
    assert await stored_ids(engine, site) == acknowledged


async def test_database_outage_is_503_then_recovers(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    writer = app.state.ingest.writer
    real = writer._engine
    # The database goes away: open connections die, new ones cannot be made.
    writer._engine = create_async_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    async with engine.connect() as conn:
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        await conn.commit()
    site = f"outage-{uuid.uuid4().hex[:8]}"
    try:
        down = await client.post("/api/events/", json={"site_id": site, "page": "/"})
        batch = await client.post("/api/events/batch", json={"events": [{"site_id": site, "page": "/"}]})
    finally:
        await writer._engine.dispose()
        writer._engine = real
    for response in (down, batch):
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert "unavailable" in response.json()["error"]
    assert await stored_ids(engine, site) == set()
    up = await client.post("/api/events/", json={"site_id": site, "page": "/"})
    assert up.status_code == 200
    assert await stored_ids(engine, site) == {up.json()["id"]}


async def test_full_queue_is_503_with_retry_after(app: FastAPI, client: httpx.AsyncClient) -> None:
    writer = app.state.ingest.writer
    limit = writer._max_queued
    writer._max_queued = 3
    try:
        response = await client.post("/api/events/batch", json={"events": [{"page": "/"}] * 4})
    finally:
        writer._max_queued = limit
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "queue is full" in response.json()["error"]


async def test_shutdown_with_events_in_flight_loses_none(engine: AsyncEngine) -> None:
    site = f"shutdown-{uuid.uuid4().hex[:8]}"
    second = create_app()
    transport = httpx.ASGITransport(app=second)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        async with second.router.lifespan_context(second):
            tasks = [
                asyncio.create_task(
                    http.post(
                        "/api/events/batch",
                        json={"events": [{"site_id": site, "page": f"/{i}/{j}"} for j in range(50)]},
                    )
                )
                for i in range(40)
            ]
            writer = second.state.ingest.writer
            # Shut down once commits are under way: some requests committed, some queued or
            # mid-commit, some not yet read.
            while writer.committed_events == 0 and writer.queued_events == 0:
                await asyncio.sleep(0.001)
            in_flight = sum(not t.done() for t in tasks)
        responses = await asyncio.gather(*tasks, return_exceptions=True)
    accepted = [r for r in responses if isinstance(r, httpx.Response) and r.status_code == 200]
    refused = [r for r in responses if isinstance(r, httpx.Response) and r.status_code == 503]
    assert len(accepted) + len(refused) == len(tasks)
    assert in_flight > 0
    assert accepted, "some requests should have been accepted before shutdown"
    stored = await stored_ids(engine, site)
    assert len(stored) == sum(r.json()["accepted"] for r in accepted)
