"""The activity masks count exactly what raw events count: unique visitors and sessions over
any range, before and after the fold, after duplicates, late events and deletes."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.db.schema import TimescaleInfo
from src.api.rollups.activity import BLOCK_DAYS
from src.api.rollups.job import fold
from src.api.stats.params import TimeRange
from src.api.stats.question import Question
from src.api.stats.service import _activity_params

pytestmark = pytest.mark.anyio
DAY = timedelta(days=1)


def events(site: str, start: datetime, days: int, count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    made = []
    for _ in range(count):
        visitor = rng.randrange(60)
        body: dict[str, object] = {
            "id": str(uuid.uuid4()),
            "site_id": site,
            "page": f"/{rng.randrange(5)}",
            "time": (start + timedelta(seconds=rng.randrange(days * 86400))).isoformat(),
            "session_id": f"s{visitor}-{rng.randrange(3)}" if rng.random() < 0.9 else None,
        }
        kind = rng.random()
        if kind < 0.6:
            body["visitor_id"] = f"v{visitor}"
        elif kind < 0.8:
            body["user_id"] = f"u{visitor}"
        # else: the peer address and User-Agent are the visitor
        made.append(body)
    return made


async def summaries(
    client: httpx.AsyncClient, site: str | None, start: datetime, end: datetime, tz: str
) -> list[dict[str, object]]:
    answers = []
    for source in ("auto", "raw"):
        params = {"from": start.isoformat(), "to": end.isoformat(), "tz": tz, "source": source}
        if site:
            params["site_id"] = site
        response = await client.get("/api/stats/summary", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        answers.append({"visitors": body["visitors"], "sessions": body["sessions"]})
    return answers


async def assert_exact(client: httpx.AsyncClient, site: str, start: datetime) -> None:
    windows = [
        (start, start + 10 * DAY, "UTC"),  # whole days
        (start + timedelta(hours=5, minutes=45), start + 8 * DAY + timedelta(hours=3), "UTC"),  # ragged
        (
            start - timedelta(hours=5, minutes=45),
            start + 9 * DAY - timedelta(hours=5, minutes=45),
            "Asia/Kathmandu",
        ),
        (start + 2 * DAY, start + 3 * DAY, "UTC"),  # one day
        (start + timedelta(hours=1), start + timedelta(hours=20), "UTC"),  # no whole day: raw
    ]
    for lo, hi, tz in windows:
        masks, raw = await summaries(client, site, lo, hi, tz)
        assert masks == raw, (lo, hi, tz)


def ten_days(where: str) -> datetime:
    """The start of ten days of events: inside one block of the masks, or across two (5 days
    each side of the newest block boundary at least 5 days ago)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if where == "one block":
        return today - 20 * DAY
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    boundary = epoch + ((today - 5 * DAY - epoch).days // BLOCK_DAYS) * BLOCK_DAYS * DAY
    return boundary - 5 * DAY


@pytest.mark.parametrize("where", ["one block", "two blocks"])
async def test_masks_count_what_raw_events_count(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo, where: str
) -> None:
    site = f"act-{uuid.uuid4().hex[:8]}"
    start = ten_days(where)
    first_day = (start - datetime(1970, 1, 1, tzinfo=UTC)).days
    assert (first_day // BLOCK_DAYS == (first_day + 9) // BLOCK_DAYS) == (where == "one block")
    first = events(site, start, 10, 800, seed=1)
    for i in range(0, len(first), 400):
        assert (
            await client.post("/api/events/batch", json={"events": first[i : i + 400]})
        ).status_code == 200
    await assert_exact(client, site, start)  # nothing folded yet: the changes are read beside
    await fold(engine, rollups=not timescale.has_continuous_aggregates)
    await assert_exact(client, site, start)
    # Duplicates, late events into the same days, and deletes.
    assert (await client.post("/api/events/batch", json={"events": first[:100]})).json()["duplicates"] == 100
    late = events(site, start, 10, 200, seed=2)
    assert (await client.post("/api/events/batch", json={"events": late})).status_code == 200
    for body in random.Random(3).sample(first, 60):
        assert (await client.delete(f"/api/events/{body['id']}")).status_code == 200
    await assert_exact(client, site, start)
    await fold(engine, rollups=not timescale.has_continuous_aggregates)
    await assert_exact(client, site, start)
    # The totals really come from the masks: emptied, they count only the ragged edges.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE activity SET days = 0 WHERE site_id = :s"), {"s": site})
    masks, raw = await summaries(client, site, start, start + 10 * DAY, "UTC")
    assert masks == {"visitors": 0, "sessions": 0} and raw["visitors"] > 0


async def test_a_delete_clears_the_day_only_when_nothing_else_remains(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    site = f"actdel-{uuid.uuid4().hex[:8]}"
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 5 * DAY
    lone = {
        "id": str(uuid.uuid4()),
        "site_id": site,
        "page": "/",
        "visitor_id": "lone",
        "time": (day + timedelta(hours=3)).isoformat(),
    }
    twice = [
        {
            "id": str(uuid.uuid4()),
            "site_id": site,
            "page": "/",
            "visitor_id": "twice",
            "time": (day + timedelta(hours=h)).isoformat(),
        }
        for h in (4, 9)
    ]
    assert (await client.post("/api/events/batch", json={"events": [lone, *twice]})).json()["accepted"] == 3

    async def visitors() -> int:
        params = {"site_id": site, "from": day.isoformat(), "to": (day + DAY).isoformat()}
        answer = (await client.get("/api/stats/summary", params=params)).json()
        return int(answer["visitors"])

    assert await visitors() == 2
    assert (await client.delete(f"/api/events/{twice[0]['id']}")).status_code == 200
    assert await visitors() == 2  # "twice" still has an event that day
    assert (await client.delete(f"/api/events/{lone['id']}")).status_code == 200
    assert await visitors() == 1
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT count(*) FROM activity WHERE site_id = :s AND kind = 1 AND days <> 0"),
                {"s": site},
            )
        ).scalar_one()
    assert rows == 1


def test_the_masks_of_a_range_are_its_whole_utc_days() -> None:
    start = datetime(2026, 1, 1, 6, tzinfo=UTC)  # day 20454, block 319 (days 20416-20479)
    question = Question(window=TimeRange(start, start + timedelta(days=40)), metrics=("visitors",))
    params = _activity_params(question)
    assert params is not None
    assert (params["day_lo"], params["day_hi"]) == (20455, 20494)
    assert params["blocks"] == [319, 320]
    assert params["masks"][0] == sum(1 << (d - 20416) for d in range(20455, 20480)) - (1 << 64) * (
        20479 - 20416 == 63
    )
    assert params["masks"][1] == sum(1 << (d - 20480) for d in range(20480, 20494))
    assert (
        _activity_params(
            Question(window=TimeRange(start, start + timedelta(hours=20)), metrics=("visitors",))
        )
        is None
    )


async def _series(
    client: httpx.AsyncClient, site: str, lo: datetime, hi: datetime, tz: str, interval: str
) -> list[object]:
    answers = []
    for source in ("auto", "raw"):
        params = {
            "site_id": site,
            "from": lo.isoformat(),
            "to": hi.isoformat(),
            "tz": tz,
            "interval": interval,
            "metrics": "visitors,sessions",
            "source": source,
        }
        response = await client.get("/api/stats/timeseries", params=params)
        assert response.status_code == 200, response.text
        answers.append(response.json()["rows"])
    return answers


async def test_weekly_and_monthly_visitors_are_counted_per_bucket_from_the_masks(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    """Buckets of a week or more are each a total of their part of the range, counted from the
    masks (with their ragged ends read raw): the same rows as raw events, before and after the
    fold, with duplicates, late events and deletes; an empty bucket is no row, as raw."""
    site = f"wide-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 40 * DAY
    first = events(site, start, 18, 900, seed=11) + events(site, start + 25 * DAY, 12, 300, seed=12)
    for i in range(0, len(first), 400):
        assert (
            await client.post("/api/events/batch", json={"events": first[i : i + 400]})
        ).status_code == 200
    windows = [
        (start + timedelta(hours=7), start + 38 * DAY + timedelta(hours=5), "UTC", "1 week"),
        (start - timedelta(hours=5, minutes=45), start + 39 * DAY, "Asia/Kathmandu", "1 month"),
        (start + timedelta(hours=3), start + 37 * DAY, "America/New_York", "2 weeks"),
    ]

    async def check() -> None:
        for lo, hi, tz, interval in windows:
            masks, raw = await _series(client, site, lo, hi, tz, interval)
            assert masks == raw, (tz, interval)
            assert raw, "some buckets"

    await check()
    await fold(engine, rollups=not timescale.has_continuous_aggregates)
    await check()
    assert (await client.post("/api/events/batch", json={"events": first[:50]})).json()["duplicates"] == 50
    late = events(site, start + 3 * DAY, 5, 150, seed=13)
    assert (await client.post("/api/events/batch", json={"events": late})).status_code == 200
    for body in random.Random(14).sample(first, 40):
        assert (await client.delete(f"/api/events/{body['id']}")).status_code == 200
    await check()
    # The weekly counts really come from the masks: emptied, they count only the ragged ends.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE activity SET days = 0 WHERE site_id = :s"), {"s": site})
    await fold(engine, rollups=not timescale.has_continuous_aggregates)
    masks, raw = await _series(client, site, *windows[0])
    assert masks != raw
