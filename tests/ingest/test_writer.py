from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from src.api.db.schema import TimescaleInfo
from src.api.events.schemas import EventCreate
from src.api.ingest.rows import RequestContext, build_row
from src.api.ingest.writer import SMALL_FLUSH_ROWS
from tests.stats.helpers import settle
from tests.stats.test_rollup import mismatches

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
    big = [{"site_id": site, "page": f"/{i}", "id": str(uuid.uuid4())} for i in range(300)]
    try:
        down = await client.post("/api/events/", json={"site_id": site, "page": "/"})
        batch = await client.post("/api/events/batch", json={"events": [{"site_id": site, "page": "/"}]})
        # A large batch takes the COPY path; both writers' connections are dead.
        large = [await client.post("/api/events/batch", json={"events": big}) for _ in range(2)]
    finally:
        await writer._engine.dispose()
        writer._engine = real
    for response in (down, batch, *large):
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert "unavailable" in response.json()["error"]
    assert await stored_ids(engine, site) == set()
    up = await client.post("/api/events/", json={"site_id": site, "page": "/"})
    assert up.status_code == 200
    again = await client.post("/api/events/batch", json={"events": big})
    assert again.json() == {"accepted": 300, "duplicates": 0, "rejected": []}
    assert len(await stored_ids(engine, site)) == 301


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


def batch_of(site: str, count: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{site}/{i}")),
            "time": f"2026-11-{1 + i % 20:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "site_id": site,
            "page": f"/p{i % 7}",
            "duration": i % 50,
        }
        for i in range(start, start + count)
    ]


@pytest.fixture
def optimistic(app: FastAPI) -> None:
    """Large flushes start without ON CONFLICT until a duplicate shows up (then, for a while,
    with it): make each test start from the optimistic state."""
    app.state.ingest.writer._conflicts_until = 0.0


@pytest.mark.usefixtures("optimistic")
@pytest.mark.parametrize("size", [20, 300], ids=["values-path", "copy-path"])
async def test_duplicates_are_counted_and_rollups_stay_exact_on_both_write_paths(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo, size: int
) -> None:
    # Flushes of at most SMALL_FLUSH_ROWS rows take one INSERT … VALUES; larger ones COPY.
    assert (size <= SMALL_FLUSH_ROWS) == (size == 20)
    site = f"paths-{uuid.uuid4().hex[:8]}"
    events = batch_of(site, size)
    first = await client.post("/api/events/batch", json={"events": events + events[:5]})
    assert first.json() == {"accepted": size, "duplicates": 5, "rejected": []}
    # A retry of half plus as many new ones: only the new ones are stored.
    half = size // 2
    retry = await client.post(
        "/api/events/batch", json={"events": events[:half] + batch_of(site, half, size)}
    )
    assert retry.json() == {"accepted": half, "duplicates": half, "rejected": []}
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM event WHERE site_id = :s AND time > '2026-10-01'"), {"s": site}
            )
        ).scalar_one()
    assert stored == size + half
    await settle(engine, timescale)
    assert await mismatches(engine, site) == []


@pytest.mark.usefixtures("optimistic")
@pytest.mark.parametrize("size", [1, 100])
async def test_same_events_in_concurrent_requests_are_stored_once(
    client: httpx.AsyncClient, engine: AsyncEngine, size: int
) -> None:
    site = f"race-{uuid.uuid4().hex[:8]}"
    events = batch_of(site, size)
    answers = await asyncio.gather(
        *(client.post("/api/events/batch", json={"events": events}) for _ in range(4))
    )
    bodies = [a.json() for a in answers]
    assert sum(b["accepted"] for b in bodies) == size
    assert sum(b["duplicates"] for b in bodies) == 3 * size
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM event WHERE site_id = :s AND time > '2026-10-01'"), {"s": site}
            )
        ).scalar_one()
    assert stored == size


async def test_writer_submit_contract(app: FastAPI) -> None:
    """submit(rows) -> WriteResult: per row, in order, True when stored now."""
    writer = app.state.ingest.writer
    context = RequestContext(user_agent=None, client_ip=None, received_at=datetime.now(UTC))
    site = f"submit-{uuid.uuid4().hex[:8]}"
    event = EventCreate(page="/", site_id=site, id=uuid.uuid4())
    row = build_row(event, context)
    other = build_row(EventCreate(page="/b", site_id=site), context)
    assert (await writer.submit([row, row, other])).inserted == (True, False, True)
    result = await writer.submit([other, row])
    assert result.inserted == (False, False)
    assert (result.accepted, result.duplicates) == (0, 2)
    assert (await writer.submit([])).inserted == ()


async def test_admission_refuses_before_reading_when_at_capacity(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    ingest = app.state.ingest
    body = {"events": [{"page": "/"}]}
    ingest.in_flight += ingest.max_in_flight
    try:
        full = await client.post("/api/events/batch", json=body)
        collect = await client.post("/collect", json={"path": "/"})
    finally:
        ingest.in_flight -= ingest.max_in_flight
    for response in (full, collect):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert "capacity" in response.json()["error"]
    # Bodies being read count too: while others hold the budget, a new body waits outside.
    budget = app.state.body_budget
    budget.held += budget.limit
    try:
        busy = await client.post("/api/events/batch", json=body)
    finally:
        budget.held -= budget.limit
    assert busy.status_code == 503 and "large requests" in busy.json()["error"]
    assert (ingest.in_flight, budget.held) == (0, 0)
    assert (await client.post("/api/events/batch", json=body)).status_code == 200


async def test_a_request_cancelled_while_waiting_still_commits_its_rows(
    app: FastAPI, engine: AsyncEngine
) -> None:
    writer = app.state.ingest.writer
    context = RequestContext(user_agent=None, client_ip=None, received_at=datetime.now(UTC))
    site = f"cancel-{uuid.uuid4().hex[:8]}"
    gone = build_row(EventCreate(page="/gone", site_id=site), context)
    stays = build_row(EventCreate(page="/stays", site_id=site), context)
    waiting = asyncio.create_task(writer.submit([gone]))
    await asyncio.sleep(0)  # queued, not yet committed
    waiting.cancel()
    assert (await writer.submit([stays])).inserted == (True,)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    expected = {str(gone[0]), str(stays[0])}
    for _ in range(100):  # another writer may still be committing the cancelled request's flush
        if await stored_ids(engine, site) == expected:
            break
        await asyncio.sleep(0.02)
    assert await stored_ids(engine, site) == expected


@pytest.mark.usefixtures("optimistic")
async def test_large_flushes_try_without_on_conflict_and_fall_back_on_a_duplicate(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    writer = app.state.ingest.writer
    site = f"optimistic-{uuid.uuid4().hex[:8]}"
    fresh = await client.post("/api/events/batch", json={"events": batch_of(site, 200)})
    assert fresh.json() == {"accepted": 200, "duplicates": 0, "rejected": []}
    assert writer._conflicts_until == 0.0  # nothing refused: the optimistic statement stood
    # One stored event among new ones: the primary key refuses the flush, which is redone.
    mixed = await client.post("/api/events/batch", json={"events": batch_of(site, 150, 199)})
    assert mixed.json() == {"accepted": 149, "duplicates": 1, "rejected": []}
    assert writer._conflicts_until > 0.0
    await settle(engine, timescale)
    assert await mismatches(engine, site) == []
