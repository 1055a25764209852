"""Page activity counts exactly what raw events count: daily unique visitors by page, with a
page filter and ragged ends (and zones or buckets it leaves to raw events answer the same),
before and after the fold, after duplicates, late events and deletes; and what the fold and
deletes keep is what a rebuild from the events left makes."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.db.schema import TimescaleInfo
from src.api.rollups import pages
from src.api.rollups.activity import edges_of
from src.api.rollups.job import fold
from tests.rollups.test_activity import events

pytestmark = pytest.mark.anyio
DAY = timedelta(days=1)


async def series(
    client: httpx.AsyncClient, site: str, lo: datetime, hi: datetime, tz: str, interval: str, page: list[str]
) -> list[list[dict[str, object]]]:
    answers = []
    for source in ("auto", "raw"):
        params: dict[str, str | list[str]] = {
            "site_id": site,
            "from": lo.isoformat(),
            "to": hi.isoformat(),
            "tz": tz,
            "interval": interval,
            "group_by": "page",
            "metrics": "visitors",
            "source": source,
        }
        if page:
            params["page"] = page
        response = await client.get("/api/stats/timeseries", params=params)
        assert response.status_code == 200, response.text
        answers.append(response.json()["rows"])
    return answers


def ranges(start: datetime) -> list[tuple[datetime, datetime, str, str, list[str]]]:
    return [
        (start, start + 10 * DAY, "UTC", "1 day", []),
        (
            start + timedelta(hours=5, minutes=7),
            start + 9 * DAY + timedelta(hours=2, seconds=9),
            "UTC",
            "1 day",
            [],
        ),
        (start - timedelta(hours=5, minutes=45), start + 9 * DAY, "Asia/Kathmandu", "1 day", []),
        (start + timedelta(hours=3), start + 8 * DAY, "America/New_York", "1 day", ["/1", "/3"]),
        (start, start + 10 * DAY, "UTC", "1 week", []),
        (start + timedelta(minutes=20), start + 10 * DAY, "Asia/Kathmandu", "1 month", ["/2"]),
    ]


async def assert_exact(client: httpx.AsyncClient, site: str, start: datetime) -> None:
    for lo, hi, tz, interval, page in ranges(start):
        counted, raw = await series(client, site, lo, hi, tz, interval, page)
        assert counted == raw, (lo, hi, tz, interval, page)
        assert raw, "some rows"


async def assert_kept(engine: AsyncEngine, site: str) -> None:
    async with engine.connect() as conn:
        q0, q1 = pages.quarter_bits("quarter")
        rebuilt = (
            await conn.execute(
                text(
                    f"SELECT quarter / 96, page, key, bit_or({q0}), bit_or({q1}) FROM ("
                    f" SELECT page, {pages.KEY_SQL} AS key, {pages.QUARTER_SQL.format(t='time')} AS quarter"
                    " FROM event WHERE site_id = :s) AS e GROUP BY 1, 2, 3"
                ),
                {"s": site},
            )
        ).all()
        kept = (
            await conn.execute(
                text("SELECT day, page, key, q0, q1, prev_last FROM page_activity WHERE site_id = :s"),
                {"s": site},
            )
        ).all()
        counts = (
            await conn.execute(
                text(
                    "SELECT day, page, keys, visitors, firsts, lasts, nil_first, nil_last FROM page_day"
                    " WHERE site_id = :s AND keys <> 0"
                ),
                {"s": site},
            )
        ).all()
    # Each row with its key's last quarter on the page the day before (none for the nil key).
    bits = {(day, page, key): (q0, q1) for day, page, key, q0, q1 in rebuilt}
    expected = [
        (
            day,
            page,
            key,
            q0,
            q1,
            None if str(key) == pages.NIL_KEY else edges_of(*bits.get((day - 1, page, key), (0, 0)))[1],
        )
        for day, page, key, q0, q1 in rebuilt
    ]
    assert sorted(map(tuple, kept)) == sorted(expected)
    recounted: dict[tuple[int, str], list[object]] = {}
    for day, page, key, q0, q1 in rebuilt:
        found = recounted.setdefault((day, page), [0, 0, [0] * 96, [0] * 96, None, None])
        first, last = edges_of(q0, q1)
        assert first is not None and last is not None
        found[0] += 1  # type: ignore[operator]
        if str(key) == pages.NIL_KEY:
            found[4:6] = [first, last]
        else:
            found[1] += 1  # type: ignore[operator]
            found[2][first] += 1  # type: ignore[index]
            found[3][last] += 1  # type: ignore[index]
    assert {(d, p): [k, v, f, la, nf, nl] for d, p, k, v, f, la, nf, nl in counts} == recounted


async def test_page_activity_counts_what_raw_events_count(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    site = f"pages-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 20 * DAY
    first = events(site, start, 10, 900, seed=21)
    for i in range(0, len(first), 450):
        assert (
            await client.post("/api/events/batch", json={"events": first[i : i + 450]})
        ).status_code == 200
    await assert_exact(client, site, start)  # unfolded: read beside
    rollups = not timescale.has_continuous_aggregates
    await fold(engine, rollups=rollups)
    await assert_exact(client, site, start)
    await assert_kept(engine, site)
    assert (await client.post("/api/events/batch", json={"events": first[:80]})).json()["duplicates"] == 80
    late = events(site, start, 10, 240, seed=22)
    assert (await client.post("/api/events/batch", json={"events": late[:120]})).status_code == 200
    await fold(engine, rollups=rollups)
    assert (await client.post("/api/events/batch", json={"events": late[120:]})).status_code == 200
    for body in random.Random(23).sample(first, 70):
        assert (await client.delete(f"/api/events/{body['id']}")).status_code == 200
    await assert_exact(client, site, start)
    await fold(engine, rollups=rollups)
    await assert_exact(client, site, start)
    await assert_kept(engine, site)
    # The counts really come from page activity: emptied, the whole days count nothing.
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM page_activity WHERE site_id = :s"), {"s": site})
        await conn.execute(text("UPDATE page_day SET keys = 0, visitors = 0 WHERE site_id = :s"), {"s": site})
    counted, raw = await series(client, site, start, start + 10 * DAY, "UTC", "1 day", [])
    assert counted == [] and raw


def test_buckets_are_pieces_of_utc_days() -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)  # day 20513
    nepal = timedelta(hours=5, minutes=45)
    starts = [day - nepal, day + DAY - nepal]
    read = pages.pieces(starts, day - nepal + timedelta(minutes=5), day + 2 * DAY - nepal)
    assert read is not None and not read.distinct
    # Each Kathmandu day: 18:15 to midnight of one UTC day, then midnight to 18:15 of the next.
    assert read.days == (20512, 20513, 20513, 20514)
    assert read.buckets == (starts[0], starts[0], starts[1], starts[1])
    assert (read.q0[1], read.q1[1]) == ((1 << 64) - 1 - (1 << 64), (1 << 9) - 1)  # quarters 0-72
    # The first bucket starts at 18:20: 18:20-18:30 is raw, the quarters from 18:30.
    assert read.raw == ((starts[0], starts[0] + timedelta(minutes=5), starts[0] + timedelta(minutes=15)),)
    assert (read.q0[0], read.q1[0]) == (0, ((1 << 32) - 1) ^ ((1 << 10) - 1))  # quarters 74-95
    # As quarter ranges; the second piece of each bucket names where the first began.
    assert (read.lo, read.hi, read.prev_lo) == ((74, 0, 73, 0), (96, 73, 96, 73), (None, 74, None, 73))
    week = pages.pieces([day - nepal], day - nepal, day + 7 * DAY - nepal)
    assert week is not None and week.distinct  # parts of eight UTC days
    utc = pages.pieces([day, day + DAY], day, day + 2 * DAY)
    assert utc is not None and not utc.distinct and utc.days == (20513, 20514) and utc.raw == ()
