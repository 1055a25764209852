from __future__ import annotations

import dataclasses
import uuid
from datetime import date, timedelta

import httpx
import pytest

from src.api.config import get_settings

pytestmark = pytest.mark.anyio

_today = date.today()
DAY0 = _today - timedelta(days=_today.weekday(), weeks=6)  # a Monday six weeks ago, inside retention


def event(
    user: str | None,
    day: date,
    *,
    site: str = "s",
    event_type: str = "pageview",
    page: str = "/",
    visitor: str | None = None,
    hour: int = 12,
) -> dict[str, object]:
    return {
        "site_id": site,
        "event_type": event_type,
        "page": page,
        "user_id": user,
        "visitor_id": visitor,
        "time": f"{day.isoformat()}T{hour:02d}:00:00Z",
        "id": str(uuid.uuid4()),
    }


async def post(client: httpx.AsyncClient, events: list[dict[str, object]]) -> None:
    response = await client.post("/api/events/batch", json={"events": events})
    assert response.status_code == 200 and response.json()["accepted"] == len(events)


@pytest.mark.usefixtures("clean")
async def test_site_stats_for_a_date(client: httpx.AsyncClient) -> None:
    site = "shop"
    events = [
        event("u1", DAY0, site=site, page="/a"),
        event("u1", DAY0, site=site, page="/a"),
        event(None, DAY0, site=site, page="/b", visitor="v9"),
        event("u2", DAY0, site=site, page="/c", event_type="click"),
        event("u3", DAY0 + timedelta(days=1), site=site, page="/a"),
        event("u4", DAY0, site="other", page="/z"),
    ]
    events += [event(f"x{i}", DAY0, site=site, page=f"/p{i}", hour=1) for i in range(12)]
    await post(client, events)
    body = (await client.get("/stats", params={"site_id": site, "date": DAY0.isoformat()})).json()
    assert body["site_id"] == site and body["date"] == DAY0.isoformat()
    assert body["total_views"] == 3 + 12
    assert body["unique_users"] == 3 + 12  # u1, v9 (no user id), u2 (a click is activity too)
    assert body["top_paths"][0] == {"path": "/a", "views": 2}
    assert len(body["top_paths"]) == 10
    all_time = (await client.get("/stats", params={"site_id": site})).json()
    assert all_time["date"] is None and all_time["total_views"] == 16


@pytest.mark.usefixtures("clean")
async def test_dau_and_top_events(client: httpx.AsyncClient) -> None:
    events = [
        event("u1", DAY0),
        event("u1", DAY0),
        event("u2", DAY0, event_type="signup"),
        event("u1", DAY0 + timedelta(days=2), event_type="click"),
        event("u3", DAY0 + timedelta(days=2), event_type="click"),
    ]
    await post(client, events)
    dau = (
        await client.get(
            "/stats/dau", params={"from_date": DAY0.isoformat(), "to": (DAY0 + timedelta(days=2)).isoformat()}
        )
    ).json()
    assert dau == {
        "data": [
            {"date": DAY0.isoformat(), "unique_users": 2},
            {"date": (DAY0 + timedelta(days=1)).isoformat(), "unique_users": 0},
            {"date": (DAY0 + timedelta(days=2)).isoformat(), "unique_users": 2},
        ]
    }
    top = (
        await client.get(
            "/stats/top-events",
            params={"from_date": DAY0.isoformat(), "to": (DAY0 + timedelta(days=2)).isoformat(), "limit": 2},
        )
    ).json()
    assert top == {"data": [{"event_type": "click", "count": 2}, {"event_type": "pageview", "count": 2}]}
    assert (
        await client.get(
            "/stats/top-events", params={"from_date": "2026-08-03", "to": "2026-08-04", "limit": 101}
        )
    ).status_code == 422
    assert (
        await client.get("/stats/dau", params={"from_date": "2026-08-05", "to": "2026-08-03"})
    ).status_code == 422


@pytest.mark.usefixtures("clean")
async def test_retention_against_a_hand_computed_cohort(client: httpx.AsyncClient) -> None:
    week = timedelta(weeks=1)
    events = [
        event(u, DAY0 + timedelta(days=d)) for u, d in [("a", 0), ("b", 1), ("c", 2), ("d", 6)]
    ]  # cohort: 4
    events += [
        event("a", DAY0 + week),
        event("b", DAY0 + week + timedelta(days=3)),
        event("z", DAY0 + week),
    ]  # 2/4 back
    events += [event("a", DAY0 + 2 * week)]  # 1/4
    events += [event("c", DAY0 + 3 * week), event("d", DAY0 + 3 * week), event("a", DAY0 + 3 * week)]  # 3/4
    await post(client, events)
    body = (
        await client.get(
            "/stats/retention", params={"start_date": DAY0.isoformat(), "windows": 3, "window_type": "week"}
        )
    ).json()
    assert body == {
        "data": [
            {"cohort_date": DAY0.isoformat(), "users_count": 4, "retention_windows": [50.0, 25.0, 75.0]}
        ],
        "window_type": "week",
    }
    daily = (
        await client.get(
            "/stats/retention", params={"start_date": DAY0.isoformat(), "windows": 2, "window_type": "day"}
        )
    ).json()
    assert daily["data"][0]["users_count"] == 1 and daily["data"][0]["retention_windows"] == [0.0, 0.0]
    thirds = [event(u, DAY0 + timedelta(days=30)) for u in "xyz"] + [event("x", DAY0 + timedelta(days=31))]
    await post(client, thirds)
    third = (
        await client.get(
            "/stats/retention",
            params={
                "start_date": (DAY0 + timedelta(days=30)).isoformat(),
                "windows": 1,
                "window_type": "day",
            },
        )
    ).json()
    assert third["data"][0]["retention_windows"] == [33.33]
    empty = (await client.get("/stats/retention", params={"start_date": "2020-01-01"})).json()
    assert empty == {"data": [], "window_type": "week"}
    for bad in (
        {"start_date": "2026-08-03", "windows": 13},
        {"start_date": "2026-08-03", "window_type": "month"},
        {},
    ):
        assert (await client.get("/stats/retention", params=bad)).status_code == 422


async def test_stats_routes_need_an_api_key_when_keys_are_set(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyed = dataclasses.replace(get_settings(), api_keys=("k1",))
    monkeypatch.setattr("src.api.auth.dependencies.get_settings", lambda: keyed)
    params = {"from_date": "2026-08-03", "to": "2026-08-04"}
    assert (await client.get("/stats/dau", params=params)).status_code == 401
    assert (await client.get("/stats/dau", params=params, headers={"x-api-key": "nope"})).status_code == 401
    assert (await client.get("/stats/dau", params=params, headers={"x-api-key": "k1"})).status_code == 200
    assert (await client.get("/stats", headers={"x-api-key": "k1"})).status_code == 200
