from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.db.schema import TimescaleInfo
from tests.stats.helpers import Made, make_events, post_events, settle, utc

pytestmark = pytest.mark.anyio

START = utc(2026, 10, 30, 0)  # spans the New York DST change on 2026-11-01
HOURS = 24 * 6


@pytest.fixture(scope="module")
async def dataset(app: object) -> tuple[str, list[Made]]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    site = f"stats-{uuid.uuid4().hex[:8]}"
    bodies, made = make_events(site, START, HOURS, 3000)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await post_events(client, bodies)
    await settle(app.state.engine, app.state.timescale)  # type: ignore[attr-defined]
    return site, made


def window(**extra: object) -> dict[str, object]:
    return {"from": START.isoformat(), "to": (START + timedelta(hours=HOURS)).isoformat(), **extra}


def local_day(at: datetime, tz: str) -> datetime:
    local = at.astimezone(ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


async def test_summary_matches_the_rows(client: httpx.AsyncClient, dataset: tuple[str, list[Made]]) -> None:
    site, made = dataset
    body = (await client.get("/api/stats/summary", params=window(site_id=site))).json()
    assert body["events"] == len(made)
    assert body["pageviews"] == sum(m.event_type == "pageview" for m in made)
    assert body["visitors"] == len({m.visitor_id for m in made})
    assert body["sessions"] == len({m.session_id for m in made})
    assert body["avg_duration"] == pytest.approx(sum(m.duration for m in made) / len(made))
    assert body["source"] in ("rollup", "rollup+raw")


async def test_a_summary_of_no_events_is_zeros_on_every_path(
    client: httpx.AsyncClient, dataset: tuple[str, list[Made]]
) -> None:
    nobody = f"empty-{uuid.uuid4().hex[:8]}"
    answers = []
    for source in ("auto", "raw"):
        body = (await client.get("/api/stats/summary", params=window(site_id=nobody, source=source))).json()
        body.pop("source")
        answers.append(body)
    assert answers[0] == answers[1]
    assert answers[0]["events"] == 0 and answers[0]["visitors"] == 0


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu"])
async def test_daily_timeseries_in_each_zone(
    client: httpx.AsyncClient, dataset: tuple[str, list[Made]], tz: str
) -> None:
    site, made = dataset
    response = await client.get(
        "/api/stats/timeseries",
        params=window(
            site_id=site, interval="1 day", tz=tz, metrics="events,visitors,avg_duration", group_by="page"
        ),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tz"] == tz and body["interval"] == "1 day"
    expected: dict[tuple[datetime, str], list[Made]] = defaultdict(list)
    for m in made:
        expected[(local_day(m.time, tz), m.page)].append(m)
    got = {(datetime.fromisoformat(r["bucket"]), r["page"]): r for r in body["rows"]}
    assert got.keys() == expected.keys()
    for key, rows in expected.items():
        assert got[key]["events"] == len(rows)
        assert got[key]["visitors"] == len({m.visitor_id for m in rows})
        assert got[key]["avg_duration"] == pytest.approx(sum(m.duration for m in rows) / len(rows))
    # Buckets carry the zone's own offset (New York changes from -04:00 to -05:00 on Nov 1).
    offsets = {r["bucket"][-6:] for r in body["rows"]}
    expected_offsets = {local_day(m.time, tz).isoformat()[-6:] for m in made}
    assert offsets == expected_offsets


async def test_hourly_buckets_in_kathmandu_start_at_quarter_past(
    client: httpx.AsyncClient, dataset: tuple[str, list[Made]]
) -> None:
    site, made = dataset
    body = (
        await client.get(
            "/api/stats/timeseries",
            params=window(site_id=site, interval="1 hour", tz="Asia/Kathmandu", group_by="os"),
        )
    ).json()
    expected: dict[tuple[datetime, str], int] = defaultdict(int)
    for m in made:
        local = m.time.astimezone(ZoneInfo("Asia/Kathmandu")).replace(minute=0, second=0, microsecond=0)
        expected[(local, m.os)] += 1
    got = {(datetime.fromisoformat(r["bucket"]), r["os"]): r["events"] for r in body["rows"]}
    assert got == dict(expected)
    assert all(
        datetime.fromisoformat(r["bucket"]).astimezone(ZoneInfo("UTC")).minute == 15 for r in body["rows"]
    )


async def test_month_buckets_follow_the_local_calendar(
    client: httpx.AsyncClient, dataset: tuple[str, list[Made]]
) -> None:
    site, made = dataset
    body = (
        await client.get(
            "/api/stats/timeseries", params=window(site_id=site, interval="1 month", tz="America/New_York")
        )
    ).json()
    expected: dict[datetime, int] = defaultdict(int)
    for m in made:
        local = m.time.astimezone(ZoneInfo("America/New_York"))
        expected[local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)] += 1
    got = {datetime.fromisoformat(r["bucket"]): r["events"] for r in body["rows"]}
    assert got == dict(expected)
    assert sorted(r["bucket"] for r in body["rows"]) == [
        "2026-10-01T00:00:00-04:00",
        "2026-11-01T00:00:00-04:00",
    ]


async def test_fill_returns_empty_buckets(client: httpx.AsyncClient, dataset: tuple[str, list[Made]]) -> None:
    site, made = dataset
    params = {
        "site_id": site,
        "interval": "1 day",
        "fill": "true",
        "tz": "America/New_York",
        "from": (START - timedelta(days=3)).isoformat(),
        "to": (START + timedelta(days=9)).isoformat(),
    }
    body = (await client.get("/api/stats/timeseries", params=params)).json()
    buckets = [r["bucket"] for r in body["rows"]]
    assert len(buckets) == len(set(buckets)) == 13  # the first day is a partial one in New York
    assert sum(r["events"] for r in body["rows"]) == len(made)
    assert sum(1 for r in body["rows"] if r["events"] == 0) == 13 - len(
        {local_day(m.time, "America/New_York") for m in made}
    )
    local = [datetime.fromisoformat(b).astimezone(ZoneInfo("America/New_York")) for b in buckets]
    assert all(t.hour == 0 and t.minute == 0 for t in local)


async def test_breakdown_orders_by_first_metric(
    client: httpx.AsyncClient, dataset: tuple[str, list[Made]]
) -> None:
    site, made = dataset
    body = (
        await client.get(
            "/api/stats/breakdown",
            params=window(site_id=site, dimension="referrer_domain", metrics="visitors,events", limit=3),
        )
    ).json()
    visitors: dict[str, set[str]] = defaultdict(set)
    events: dict[str, int] = defaultdict(int)
    for m in made:
        visitors[m.referrer_domain].add(m.visitor_id)
        events[m.referrer_domain] += 1
    expected = sorted(visitors, key=lambda d: (-len(visitors[d]), d))[:3]
    assert [r["referrer_domain"] for r in body["rows"]] == expected
    for row in body["rows"]:
        assert row["visitors"] == len(visitors[row["referrer_domain"]])
        assert row["events"] == events[row["referrer_domain"]]


async def test_filters_are_applied(client: httpx.AsyncClient, dataset: tuple[str, list[Made]]) -> None:
    site, made = dataset
    params = window(site_id=site, page=["/", "/about"], device="mobile")
    body = (await client.get("/api/stats/summary", params=params)).json()
    chosen = [m for m in made if m.page in ("/", "/about") and m.device == "mobile"]
    assert body["events"] == len(chosen)
    assert body["visitors"] == len({m.visitor_id for m in chosen})


async def test_rollup_and_raw_give_identical_rows(
    client: httpx.AsyncClient, dataset: tuple[str, list[Made]]
) -> None:
    site, _ = dataset
    rng = random.Random(11)
    zones = [
        "UTC",
        "America/New_York",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
        "Asia/Tehran",
    ]
    for _ in range(12):
        start = START + timedelta(minutes=rng.randrange(0, 48 * 60))
        end = start + timedelta(minutes=rng.randrange(60, 5 * 24 * 60))
        params = {
            "site_id": site,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "tz": rng.choice(zones),
            "interval": rng.choice(["15 minutes", "1 hour", "3 hours", "1 day", "1 week", "1 month"]),
            "metrics": "events,pageviews,avg_duration",
            "group_by": ",".join(
                rng.sample(["page", "os", "browser", "device", "event_type", "referrer_domain"], 2)
            ),
        }
        if rng.random() < 0.5:
            params["event_type"] = "pageview"
        rollup = await client.get("/api/stats/timeseries", params={**params, "source": "rollup"})
        raw = await client.get("/api/stats/timeseries", params={**params, "source": "raw"})
        assert rollup.status_code == raw.status_code == 200, (rollup.text, params)
        assert rollup.json()["source"].startswith("rollup")
        assert raw.json()["source"] == "raw"
        assert rollup.json()["rows"] == raw.json()["rows"], params


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kathmandu", "Asia/Kolkata"])
@pytest.mark.parametrize(
    ("interval", "group_by"), [("1 hour", "page,os"), ("1 day", "page"), ("1 hour", "os")]
)
async def test_tier_rows_that_are_whole_groups_equal_raw(
    client: httpx.AsyncClient, dataset: tuple[str, list[Made]], tz: str, interval: str, group_by: str
) -> None:
    """Questions whose tier rows are the answer's groups as they are (no re-aggregation), over
    a ragged range, across New York's DST change, with and without a fixed site."""
    site, _ = dataset
    params = window(tz=tz, interval=interval, group_by=group_by, metrics="events,pageviews,avg_duration")
    params["from"] = (START + timedelta(hours=5, minutes=7)).isoformat()
    for scope in ({"site_id": site}, {"page": ["/", "/about", "/pricing"]}):
        rollup = await client.get("/api/stats/timeseries", params={**params, **scope, "source": "rollup"})
        raw = await client.get("/api/stats/timeseries", params={**params, **scope, "source": "raw"})
        assert rollup.status_code == raw.status_code == 200, rollup.text
        assert rollup.json()["rows"] == raw.json()["rows"], (tz, interval, group_by, scope)
        assert raw.json()["rows"]


async def test_planner_uses_raw_when_the_rollup_cannot_answer(
    client: httpx.AsyncClient, dataset: tuple[str, list[Made]]
) -> None:
    site, _ = dataset
    seven = (
        await client.get("/api/stats/timeseries", params=window(site_id=site, interval="7 minutes"))
    ).json()
    assert seven["source"] == "raw"
    aligned = (
        await client.get("/api/stats/timeseries", params=window(site_id=site, interval="1 hour"))
    ).json()
    assert aligned["source"] == "rollup"
    visitors = (
        await client.get("/api/stats/timeseries", params=window(site_id=site, metrics="visitors"))
    ).json()
    assert visitors["source"] == "raw"
    forced = await client.get(
        "/api/stats/timeseries", params=window(site_id=site, interval="7 minutes", source="rollup")
    )
    assert forced.status_code == 422 and "15-minute" in forced.text


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("timeseries", {"interval": "1 fortnight"}, "interval"),
        ("timeseries", {"interval": "1 day; drop table event"}, "interval"),
        ("timeseries", {"metrics": "events,revenue"}, "metrics"),
        ("timeseries", {"group_by": "page,password"}, "group_by"),
        ("timeseries", {"tz": "Nowhere/City"}, "tz"),
        ("timeseries", {"interval": "1 second", "fill": "true"}, "interval"),
        ("breakdown", {"dimension": "ip_address"}, "dimension"),
        ("breakdown", {"limit": "0"}, "limit"),
        ("summary", {"from": "2026-01-02", "to": "2026-01-01"}, "from"),
        ("summary", {"from": "not a date"}, "from"),
        ("summary", {"colour": "blue"}, "colour"),
        ("summary", {"source": "cache"}, "source"),
        ("realtime", {"page": "/"}, "page"),
    ],
)
async def test_bad_parameters_are_422_naming_the_parameter(
    client: httpx.AsyncClient, path: str, params: dict[str, str], name: str
) -> None:
    response = await client.get(f"/api/stats/{path}", params=params)
    assert response.status_code == 422, response.text
    assert name in str(response.json()["detail"])


async def test_realtime_counts_the_last_five_minutes(client: httpx.AsyncClient) -> None:
    site = f"rt-{uuid.uuid4().hex[:8]}"
    events = [{"site_id": site, "page": "/", "visitor_id": f"v{i % 3}"} for i in range(7)]
    old = {
        "site_id": site,
        "page": "/",
        "visitor_id": "old",
        "time": (datetime.now(ZoneInfo("UTC")) - timedelta(minutes=20)).isoformat(),
    }
    assert (await client.post("/api/events/batch", json={"events": [*events, old]})).status_code == 200
    body = (await client.get("/api/stats/realtime", params={"site_id": site})).json()
    assert body["events"] == 7 and body["visitors"] == 3


async def test_community_real_time_aggregation_includes_fresh_rows(
    engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    from sqlalchemy import text

    from tests.conftest import requires_community

    requires_community(timescale)
    site = f"fresh-{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        # A row past the materialised watermark, never refreshed: only real-time aggregation sees it.
        await conn.execute(
            text(
                "INSERT INTO event (id, time, site_id, page) SELECT gen_random_uuid(),"
                " _timescaledb_functions.to_timestamp(_timescaledb_functions.cagg_watermark(mat_hypertable_id))"
                " + interval '1 minute', :site, '/' FROM _timescaledb_catalog.continuous_agg"
                " WHERE user_view_name = 'event_rollup_15m'"
            ),
            {"site": site},
        )
    async with engine.connect() as conn:
        total = (
            await conn.execute(
                text("SELECT sum(events) FROM event_rollup_15m WHERE site_id = :site"), {"site": site}
            )
        ).scalar_one()
    assert total == 1


async def test_late_events_under_the_watermark_stay_exact(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    """Apache: the rollup is updated in the insert's transaction. Community: the planner sees
    the pending invalidation and answers from raw events until the refresh policy runs."""
    site = f"late-{uuid.uuid4().hex[:8]}"
    params = {
        "site_id": site,
        "from": "2026-09-01T00:00:00Z",
        "to": "2026-09-03T00:00:00Z",
        "interval": "1 hour",
    }
    first = [{"site_id": site, "page": "/", "time": "2026-09-01T10:05:00Z", "id": str(uuid.uuid4())}]
    assert (await client.post("/api/events/batch", json={"events": first})).status_code == 200
    await settle(engine, timescale)
    late = {"site_id": site, "page": "/", "time": "2026-09-01T10:20:00Z", "id": str(uuid.uuid4())}
    result = (await client.post("/api/events/batch", json={"events": [late, late, first[0]]})).json()
    assert result == {"accepted": 1, "duplicates": 2, "rejected": []}
    body = (await client.get("/api/stats/timeseries", params=params)).json()
    assert [r["events"] for r in body["rows"]] == [2]
    await settle(engine, timescale)
    rollup = (await client.get("/api/stats/timeseries", params={**params, "source": "rollup"})).json()
    assert rollup["rows"] == body["rows"]


@pytest.mark.parametrize("metrics", ["events", "visitors", "events,visitors"])
async def test_rows_come_in_bucket_then_code_point_order(
    client: httpx.AsyncClient, dataset: tuple[str, list[Made]], metrics: str
) -> None:
    """Bucket, then each dimension by code point with no value last — whichever statements
    answer, and whatever the database's collation."""
    site, made = dataset
    body = (
        await client.get(
            "/api/stats/timeseries",
            params=window(site_id=site, interval="1 day", group_by="referrer_domain,page", metrics=metrics),
        )
    ).json()
    keys = [
        (r["bucket"], r["referrer_domain"] is None, r["referrer_domain"] or "", r["page"])
        for r in body["rows"]
    ]
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys)) > 20
    assert sum(r.get("events", 0) for r in body["rows"]) in (0, len(made))
