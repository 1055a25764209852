"""The sessions job against an independent sessionisation (tests/sessions/reference.py):
after random inserts, late inserts, duplicates and deletes, on either edition."""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.sessions.service import SessionSettings, run
from tests.sessions.reference import daily as expected_daily
from tests.sessions.reference import raw_rows, sessionise, stored_daily, stored_sessions

pytestmark = pytest.mark.anyio
TIMEOUT = timedelta(minutes=30)
TYPES = ("pageview", "page_view", "$pageview", "click", "scroll", "signup")
PAGES = ("/", "/a", "/b", "/pricing", "/docs")


def config() -> SessionSettings:
    return SessionSettings.of(get_settings(), datetime.now(UTC))


def random_event(rng: random.Random, site: str, base: datetime, span_hours: float) -> dict[str, Any]:
    kind = rng.random()
    event: dict[str, Any] = {
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
        "site_id": site,
        "event_type": rng.choice(TYPES),
        "time": (base + timedelta(seconds=rng.uniform(0, span_hours * 3600))).isoformat(),
    }
    if kind < 0.6:
        event["visitor_id"] = f"v{rng.randrange(6)}"
    elif kind < 0.8:
        event["user_id"] = f"u{rng.randrange(3)}"
    else:
        event["user_agent"] = rng.choice(("Mozilla/5.0 (Windows NT 10.0) Chrome/120.0", "curl/8"))
    if rng.random() < 0.3:
        event["session_id"] = f"s{rng.randrange(3)}"
    if rng.random() < 0.15:
        event["url"] = f"https://x.example/p?utm_source=src{rng.randrange(2)}&utm_medium=m"
    else:
        event["page"] = rng.choice(PAGES)
    if rng.random() < 0.2:
        event["referrer"] = rng.choice(("https://www.google.com/", "https://news.example/x"))
    properties: dict[str, Any] = {}
    if rng.random() < 0.1:
        properties["attribution"] = {
            "utmParams": {"utm_source": "mail", "utm_campaign": f"c{rng.randrange(2)}"}
        }
    if rng.random() < 0.1:
        properties["interactive"] = False
    if properties:
        event["properties"] = properties
    return event


async def post(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), 500):
        response = await client.post("/api/events/batch", json={"events": events[start : start + 500]})
        assert response.status_code == 200, response.text
        assert not response.json()["rejected"]


async def check(engine: AsyncEngine, sites: list[str]) -> None:
    expected = sessionise(await raw_rows(engine, sites), TIMEOUT)
    found = await stored_sessions(engine, sites)
    if len(found) != len(expected):
        extra, missing = set(found) - set(expected), set(expected) - set(found)
        raise AssertionError(
            f"stored but not expected: {sorted(extra, key=str)[:3]}; missing: {sorted(missing, key=str)[:3]}"
        )
    for got, want in zip(found, expected, strict=True):
        assert got == want
    want_daily = expected_daily(expected)
    got_daily = await stored_daily(engine, sites)
    assert set(got_daily) == set(want_daily)
    for key, values in want_daily.items():
        for name, value in values.items():
            assert math.isclose(got_daily[key][name], value, rel_tol=1e-9, abs_tol=1e-9), (key, name)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_incremental_runs_equal_a_from_scratch_sessionisation(
    client: httpx.AsyncClient, engine: AsyncEngine, fresh_sessions: None, seed: int
) -> None:
    rng = random.Random(seed)
    sites = [f"sess-{seed}-{uuid.uuid4().hex[:6]}", f"sess-{seed}-{uuid.uuid4().hex[:6]}"]
    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(days=3)
    stored: list[dict[str, Any]] = []
    # First: a day of events, and the first (full) run.
    first = [random_event(rng, rng.choice(sites), base, 24) for _ in range(150)]
    await post(client, first)
    stored += first
    result = await run(engine, config(), batch_size=7)
    assert result is not None and result.full
    await check(engine, sites)
    for round_ in range(5):
        # New events after the last ones, late events inside the past, duplicates, deletes.
        new = [
            random_event(rng, rng.choice(sites), base + timedelta(hours=24 + 6 * round_), 6)
            for _ in range(60)
        ]
        late = [random_event(rng, rng.choice(sites), base, 24 + 6 * round_) for _ in range(25)]
        duplicates = rng.sample(stored, 10)
        await post(client, new + late + duplicates)
        stored += new + late
        for victim in rng.sample(stored, 8):
            response = await client.delete(f"/api/events/{victim['id']}")
            assert response.status_code == 200
            stored.remove(victim)
        if round_ == 2:
            # One type first (all changes of its visitors), then the rest.
            typed = await run(engine, config(), event_type="click", batch_size=3)
            assert typed is not None and not typed.full
        result = await run(engine, config(), batch_size=rng.choice((1, 5, 1000)))
        assert result is not None and not result.full
        assert result.events_processed > 0
        await check(engine, sites)
    # Nothing waits: a run changes nothing.
    idle = await run(engine, config())
    assert idle is not None and idle.events_processed == 0
    assert idle.sessions_created == idle.sessions_updated == idle.sessions_deleted == 0


async def test_a_late_event_joins_two_sessions_and_a_delete_splits_them(
    client: httpx.AsyncClient, engine: AsyncEngine, fresh_sessions: None
) -> None:
    site = f"sess-join-{uuid.uuid4().hex[:6]}"
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    times = [start, start + timedelta(minutes=50)]  # 50 minutes apart: two sessions
    events = [
        {"site_id": site, "visitor_id": "v", "page": "/", "time": t.isoformat(), "id": str(uuid.uuid4())}
        for t in times
    ]
    await post(client, events)
    await run(engine, config())
    assert len(await stored_sessions(engine, [site])) == 2
    bridge = {
        "site_id": site,
        "visitor_id": "v",
        "page": "/mid",
        "time": (start + timedelta(minutes=25)).isoformat(),
        "id": str(uuid.uuid4()),
    }
    await post(client, [bridge])
    joined = await run(engine, config())
    assert joined is not None and joined.sessions_deleted == 1 and joined.sessions_updated == 1
    (session,) = await stored_sessions(engine, [site])
    assert session.events == 3 and session.entry_page == "/" and session.exit_page == "/"
    assert session.duration == 3000 and not session.bounce
    assert (await client.delete(f"/api/events/{bridge['id']}")).status_code == 200
    split = await run(engine, config())
    assert split is not None and split.sessions_created == 1
    assert [s.events for s in await stored_sessions(engine, [site])] == [1, 1]
    await check(engine, [site])


async def test_deleting_an_id_stored_at_two_times_reopens_both_sessions(
    client: httpx.AsyncClient, engine: AsyncEngine, fresh_sessions: None
) -> None:
    """The key is (id, time): DELETE /api/events/{id} deletes every row of the id, and each is
    a change (found by the randomized test: its seeded ids recur across runs)."""
    sites = [f"sess-twice-{uuid.uuid4().hex[:6]}", f"sess-twice-{uuid.uuid4().hex[:6]}"]
    shared = str(uuid.uuid4())
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    events = [
        {
            "id": shared,
            "site_id": site,
            "visitor_id": "v",
            "page": "/",
            "time": (start + timedelta(hours=n)).isoformat(),
        }
        for n, site in enumerate(sites)
    ]
    await post(client, events)
    await run(engine, config())
    assert len(await stored_sessions(engine, sites)) == 2
    assert (await client.delete(f"/api/events/{shared}")).status_code == 200
    result = await run(engine, config())
    assert result is not None and result.sessions_deleted == 2
    assert await stored_sessions(engine, sites) == []
    await check(engine, sites)
