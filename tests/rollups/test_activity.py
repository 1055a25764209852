"""The activity tables count exactly what raw events count: unique visitors and sessions over
any range, before and after the fold, after duplicates, late events and deletes; and what the
fold and deletes keep (quarters, links, first-day counts) is what a rebuild from the events
left makes."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.db.schema import TimescaleInfo
from src.api.rollups import activity, pages
from src.api.rollups.activity import KINDS, span
from src.api.rollups.job import FoldPacer, fold
from src.api.rollups.repository import changes_appended

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


def windows(start: datetime, seed: int) -> list[tuple[datetime, datetime, str]]:
    """Ranges over ten days of events from `start`: whole days, ragged ends on and off the
    quarter hours, a Kathmandu day's, one day, inside one day, across one midnight, inside one
    quarter hour — and random ones."""
    rng = random.Random(seed)
    fixed = [
        (start, start + 10 * DAY, "UTC"),
        (start + timedelta(hours=5, minutes=45), start + 8 * DAY + timedelta(hours=3), "UTC"),
        (start + timedelta(hours=5, minutes=7), start + 8 * DAY + timedelta(hours=3, seconds=41), "UTC"),
        (
            start - timedelta(hours=5, minutes=45),
            start + 9 * DAY - timedelta(hours=5, minutes=45),
            "Asia/Kathmandu",
        ),
        (start + 2 * DAY, start + 3 * DAY, "UTC"),
        (start + timedelta(hours=1), start + timedelta(hours=20), "UTC"),
        (start + timedelta(hours=1, minutes=3), start + timedelta(hours=20, minutes=59), "UTC"),
        (start + 3 * DAY - timedelta(hours=5), start + 3 * DAY + timedelta(hours=4), "UTC"),
        (start + timedelta(hours=4, minutes=1), start + timedelta(hours=4, minutes=14), "UTC"),
    ]
    drawn = []
    for _ in range(12):
        lo = start + timedelta(seconds=rng.randrange(10 * 86400))
        hi = lo + timedelta(seconds=rng.randrange(1, 10 * 86400))
        if rng.random() < 0.5:  # on the quarter hours
            lo, hi = (t.replace(minute=t.minute // 15 * 15, second=0) for t in (lo, hi))
        if lo < hi:
            drawn.append((lo, hi, "UTC"))
    return fixed + drawn


async def assert_exact(client: httpx.AsyncClient, site: str, start: datetime, seed: int = 0) -> None:
    for lo, hi, tz in windows(start, seed):
        counted, raw = await summaries(client, site, lo, hi, tz)
        assert counted == raw, (lo, hi, tz)
    counted, raw = await summaries(client, None, start, start + 10 * DAY, "UTC")  # every site
    assert counted == raw


async def assert_kept(engine: AsyncEngine, site: str) -> None:
    """The site's activity rows and first-day counts are what a rebuild from its events makes."""
    async with engine.connect() as conn:
        for kind, expression in KINDS.values():
            rebuilt = (
                await conn.execute(
                    text(
                        "SELECT key, day, q0, q1, lag(day) OVER w, lead(day) OVER w FROM ("
                        f" SELECT key, quarter / 96 AS day, bit_or({activity.quarter_bits('quarter')[0]}),"
                        f" bit_or({activity.quarter_bits('quarter')[1]}) FROM ("
                        f" SELECT md5({expression})::uuid AS key,"
                        f" {activity.QUARTER_SQL.format(t='time')} AS quarter FROM event"
                        f" WHERE site_id = :s AND {expression} IS NOT NULL) AS e GROUP BY 1, 2) AS d(key, day, q0, q1)"
                        " WINDOW w AS (PARTITION BY key ORDER BY day)"
                    ),
                    {"s": site},
                )
            ).all()
            kept = (
                await conn.execute(
                    text(
                        "SELECT key, day, q0, q1, prev, next, prev_last FROM activity"
                        " WHERE kind = :k AND site_id = :s"
                    ),
                    {"k": kind, "s": site},
                )
            ).all()
            # Each row with its key's last quarter the day before.
            bits = {(key, day): (q0, q1) for key, day, q0, q1, _, _ in rebuilt}
            expected = [
                (*row, activity.edges_of(*bits.get((row[0], row[1] - 1), (0, 0)))[1]) for row in rebuilt
            ]
            assert sorted(map(tuple, kept)) == sorted(expected), kind
            histograms = (
                await conn.execute(
                    text("SELECT day, firsts, lasts FROM activity_day WHERE kind = :k AND site_id = :s"),
                    {"k": kind, "s": site},
                )
            ).all()
            counted: dict[int, tuple[list[int], list[int]]] = {}
            for _, day, q0, q1, _, _ in rebuilt:
                first, last = activity.edges_of(q0, q1)
                assert first is not None and last is not None
                found = counted.setdefault(day, ([0] * 96, [0] * 96))
                found[0][first] += 1
                found[1][last] += 1
            assert {day: (f, la) for day, f, la in histograms if any(f) or any(la)} == counted, kind
            firsts = (
                await conn.execute(
                    text(
                        "SELECT day, since, n FROM activity_first WHERE kind = :k AND site_id = :s AND n <> 0"
                    ),
                    {"k": kind, "s": site},
                )
            ).all()
            from_rows = {}
            for _, day, _, _, prev, _ in rebuilt:
                from_rows[(day, -1 if prev is None else prev)] = (
                    from_rows.get((day, -1 if prev is None else prev), 0) + 1
                )
            assert {(d, s): n for d, s, n in firsts} == from_rows, kind


@pytest.mark.parametrize("seed", [1, 2])
async def test_activity_counts_what_raw_events_count(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo, seed: int, clean: None
) -> None:
    # `clean`: the every-site totals below count this test's events alone.
    site = f"act-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 20 * DAY
    first = events(site, start, 10, 800, seed=seed)
    for i in range(0, len(first), 400):
        assert (
            await client.post("/api/events/batch", json={"events": first[i : i + 400]})
        ).status_code == 200
    await assert_exact(client, site, start, seed)  # nothing folded yet: the changes are read beside
    await fold(engine, rollups=not timescale.has_continuous_aggregates)
    await assert_exact(client, site, start, seed)
    await assert_kept(engine, site)
    # Duplicates, late events into the same days (some unfolded while they are counted), deletes.
    assert (await client.post("/api/events/batch", json={"events": first[:100]})).json()["duplicates"] == 100
    late = events(site, start, 10, 200, seed=seed + 10)
    assert (await client.post("/api/events/batch", json={"events": late[:100]})).status_code == 200
    await fold(engine, rollups=not timescale.has_continuous_aggregates)
    assert (await client.post("/api/events/batch", json={"events": late[100:]})).status_code == 200
    for body in random.Random(3).sample(first, 60):
        assert (await client.delete(f"/api/events/{body['id']}")).status_code == 200
    await assert_exact(client, site, start, seed)
    await fold(engine, rollups=not timescale.has_continuous_aggregates)
    await assert_exact(client, site, start, seed)
    await assert_kept(engine, site)
    # The totals really come from the tables: emptied, they count only the ragged edges.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE activity_first SET n = 0 WHERE site_id = :s"), {"s": site})
    counted, raw = await summaries(client, site, start, start + 10 * DAY, "UTC")
    assert counted == {"visitors": 0, "sessions": 0} and raw["visitors"] > 0


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
                text("SELECT count(*) FROM activity WHERE site_id = :s AND kind = 1"),
                {"s": site},
            )
        ).scalar_one()
    assert rows == 1


def test_a_range_is_read_as_whole_days_ragged_days_and_raw_parts_of_a_quarter() -> None:
    start = datetime(2026, 1, 1, 6, 7, tzinfo=UTC)  # day 20454
    read = span(start, start + timedelta(days=40, minutes=-7, seconds=30))
    assert read is not None
    assert (read.lo, read.hi, read.first, read.last) == (20455, 20494, 20454, 20494)
    # The start's day from 06:15 (quarter 25), the end's day until 06:00 (quarter 24).
    assert read.first_quarters == (((1 << 64) - (1 << 25)) - (1 << 64), (1 << 32) - 1)
    assert read.last_quarters == ((1 << 24) - 1, 0)
    assert read.raw == (
        (start, start.replace(minute=15)),
        (start + timedelta(days=40, minutes=-7), start + timedelta(days=40, minutes=-7, seconds=30)),
    )
    inside = span(start, start + timedelta(hours=20))  # 06:15 to 02:00 the next day
    assert inside is not None and (inside.lo, inside.hi, inside.first, inside.last) == (
        20455,
        20455,
        20454,
        20455,
    )
    one_day = span(start, start + timedelta(hours=2))
    assert one_day is not None and (one_day.lo, one_day.hi, one_day.first, one_day.last) == (
        20455,
        20455,
        20454,
        None,
    )
    assert one_day.first_quarters == ((1 << 32) - (1 << 25), 0)
    assert span(start, start + timedelta(minutes=20)) is None  # no whole quarter hour


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


async def test_weekly_and_monthly_visitors_are_counted_per_bucket_from_the_activity_tables(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    """Buckets of a week or more are each a total of their part of the range, counted from the
    activity tables (with the parts of a quarter at their ends read raw): the same rows as raw events, before and after the
    fold, with duplicates, late events and deletes; an empty bucket is no row, as raw."""
    site = f"wide-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 40 * DAY
    first = events(site, start, 18, 900, seed=11) + events(site, start + 25 * DAY, 12, 300, seed=12)
    for i in range(0, len(first), 400):
        assert (
            await client.post("/api/events/batch", json={"events": first[i : i + 400]})
        ).status_code == 200
    ranges = [
        (start + timedelta(hours=7), start + 38 * DAY + timedelta(hours=5), "UTC", "1 week"),
        (start - timedelta(hours=5, minutes=45), start + 39 * DAY, "Asia/Kathmandu", "1 month"),
        (start + timedelta(hours=3), start + 37 * DAY, "America/New_York", "2 weeks"),
        (start + timedelta(hours=2, minutes=5), start + 12 * DAY, "UTC", "1 day"),
        (start - timedelta(hours=5, minutes=45), start + 12 * DAY, "Asia/Kathmandu", "1 day"),
    ]

    async def check() -> None:
        for lo, hi, tz, interval in ranges:
            counted, raw = await _series(client, site, lo, hi, tz, interval)
            assert counted == raw, (tz, interval)
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
    # The weekly counts really come from the tables: emptied, they count only the ragged ends.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE activity_first SET n = 0 WHERE site_id = :s"), {"s": site})
    await fold(engine, rollups=not timescale.has_continuous_aggregates)
    counted, raw = await _series(client, site, *ranges[0])
    assert counted != raw


def test_the_fold_waits_for_a_burst_to_end_but_not_longer_than_its_delay() -> None:
    pacer = FoldPacer(every=5, max_delay=30)  # a burst: over 10,000 changes in 5 s
    assert pacer.due(100, now=0)  # the first look folds
    assert pacer.due(5_000, now=5)  # a trickle: fold
    assert not pacer.due(40_000, now=10)  # a burst: wait
    assert not pacer.due(90_000, now=15)
    assert pacer.due(91_000, now=20)  # it ended: fold
    assert not pacer.due(200_000, now=25)
    assert not pacer.due(300_000, now=45)
    assert pacer.due(400_000, now=50)  # 30 s since the last fold: fold though the burst goes on
    assert FoldPacer(every=5, max_delay=0).due(None, now=0)


async def test_ingest_shows_in_the_count_of_appended_changes(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    async with engine.connect() as conn:
        before = await changes_appended(conn)
    site = f"burst-{uuid.uuid4().hex[:8]}"
    batch = events(site, datetime.now(UTC) - DAY, 1, 300, seed=31)
    assert (await client.post("/api/events/batch", json={"events": batch})).status_code == 200
    for _ in range(60):  # backends report their counts about once a second (10 s when idle)
        async with engine.connect() as conn:
            if await changes_appended(conn) > before:
                return
        await anyio.sleep(0.5)
    raise AssertionError("the ingest's changes never showed in pg_stat_user_tables")


async def test_retention_forgets_the_days_before_the_cutoff_and_the_cutoff_day_the_day_before(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    site = f"trim-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 12 * DAY
    made = events(site, start, 6, 600, seed=31)
    assert (await client.post("/api/events/batch", json={"events": made})).status_code == 200
    await fold(engine, rollups=not timescale.has_continuous_aggregates)
    cutoff = int(start.timestamp()) // 86400 + 3
    tables = {
        "activity": "prev_last",
        "activity_first": None,
        "activity_day": None,
        "page_activity": "prev_last",
        "page_day": None,
    }

    async def rows(table: str, where: str) -> int:
        async with engine.connect() as conn:
            query = f"SELECT count(*) FROM {table} WHERE site_id = :s AND {where}"
            return int((await conn.execute(text(query), {"s": site, "d": cutoff})).scalar_one())

    assert await rows("activity", "day = :d AND prev_last IS NOT NULL") > 0
    assert await rows("page_activity", "day = :d AND prev_last IS NOT NULL") > 0
    async with engine.begin() as conn:
        await activity.trim(conn, cutoff)
        await activity.trim(conn, cutoff, pages.TRIM_SQL)
    for table, column in tables.items():
        assert await rows(table, "day < :d") == 0, table
        assert await rows(table, "day >= :d") > 0, table
        if column:
            assert await rows(table, f"day = :d AND {column} IS NOT NULL") == 0, table
            assert await rows(table, f"day > :d AND {column} IS NOT NULL") > 0, table
