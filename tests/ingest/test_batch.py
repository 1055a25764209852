from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from tests.events.test_enrichment import AGENTS

pytestmark = pytest.mark.anyio


async def count_site(engine: AsyncEngine, site: str) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM event WHERE site_id = :s AND time > now() - interval '400 days'"
                    ),
                    {"s": site},
                )
            ).scalar_one()
        )


async def test_batch_stores_valid_items_and_reports_rejects(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    site = f"batch-{uuid.uuid4().hex[:8]}"
    events = [
        {"site_id": site, "page": "/ok-1"},
        {"site_id": site, "duration": "bad"},
        {"site_id": site, "url": "https://example.com/from/url?q=1"},
        "not an object",
        {"site_id": site, "page": "/future", "time": (datetime.now(UTC) + timedelta(hours=3)).isoformat()},
    ]
    response = await client.post("/api/events/batch", json={"events": events})
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2 and body["duplicates"] == 0
    rejected = {r["index"]: r["errors"] for r in body["rejected"]}
    assert set(rejected) == {1, 3, 4}
    assert {e["field"] for e in rejected[1]} == {"page", "duration"}
    assert "future" in rejected[4][0]["message"]
    assert await count_site(engine, site) == 2


async def test_duplicates_within_and_across_requests_are_stored_once(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    site = f"dup-{uuid.uuid4().hex[:8]}"
    at = "2026-11-01T12:00:00Z"
    same = {"id": str(uuid.uuid4()), "time": at, "site_id": site, "page": "/a"}
    other = {"event_id": f"client-key-{site}", "timestamp": at, "site_id": site, "page": "/b"}
    first = (await client.post("/api/events/batch", json={"events": [same, same, other]})).json()
    assert first == {"accepted": 2, "duplicates": 1, "rejected": []}
    retry = (await client.post("/api/events/batch", json={"events": [same, other]})).json()
    assert retry == {"accepted": 0, "duplicates": 2, "rejected": []}
    # Same id at another time is another event (the key is id and time).
    moved = (
        await client.post("/api/events/batch", json={"events": [{**same, "time": "2026-11-01T12:00:01Z"}]})
    ).json()
    assert moved["accepted"] == 1
    assert await count_site(engine, site) == 3


async def test_client_ids_and_timestamp_formats(client: httpx.AsyncClient) -> None:
    site = f"ts-{uuid.uuid4().hex[:8]}"
    expected = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    given = uuid.uuid4()
    forms: list[object] = [
        "2026-03-04T05:06:07Z",
        "2026-03-04T06:06:07+01:00",
        "2026-03-04T05:06:07",
        int(expected.timestamp()),
        int(expected.timestamp() * 1000),
        str(int(expected.timestamp())),
        expected.timestamp(),
    ]
    for i, form in enumerate(forms):
        payload = {"site_id": site, "page": f"/{i}", "timestamp": form}
        if i == 0:
            payload["id"] = str(given)
        response = await client.post("/api/events/", json=payload)
        assert response.status_code == 200, (form, response.text)
        assert datetime.fromisoformat(response.json()["time"]) == expected, form
        if i == 0:
            assert response.json()["id"] == str(given)
    # A non-UUID client id maps to the same UUID every time.
    a = (await client.post("/api/events/", json={"page": "/", "event_id": "order-77"})).json()["id"]
    b = (await client.post("/api/events/", json={"page": "/", "event_id": "order-77"})).json()["id"]
    assert a == b


async def test_future_limit_is_one_hour(client: httpx.AsyncClient) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=50)
    late = datetime.now(UTC) + timedelta(minutes=70)
    assert (
        await client.post("/api/events/", json={"page": "/", "time": soon.isoformat()})
    ).status_code == 200
    response = await client.post("/api/events/", json={"page": "/", "time": late.isoformat()})
    assert response.status_code == 422
    assert "1 hour in the future" in response.text


async def test_batch_limits_and_malformed_bodies(client: httpx.AsyncClient) -> None:
    limit = get_settings().batch_max_events
    too_many = await client.post("/api/events/batch", json={"events": [{"page": "/"}] * (limit + 1)})
    assert too_many.status_code == 400
    assert str(limit) in too_many.json()["error"]
    assert (await client.post("/api/events/batch", json={"nope": []})).status_code == 422
    bad_json = await client.post(
        "/api/events/batch", content=b"{", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and "JSON" in bad_json.json()["error"]
    xml = await client.post("/api/events/batch", content=b"<a/>", headers={"content-type": "application/xml"})
    assert xml.status_code == 415
    big = b'{"events": [' + b'{"page": "/' + b"x" * (get_settings().max_body_bytes) + b'"}]}'
    too_big = await client.post(
        "/api/events/batch", content=big, headers={"content-type": "application/json"}
    )
    assert too_big.status_code == 413 and "larger than" in too_big.json()["error"]


async def test_user_agent_and_ip_precedence(proxied_client: httpx.AsyncClient) -> None:
    ua_header = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
    ua_body = AGENTS[2][0]  # an iPhone
    headers = {
        "user-agent": ua_header,
        "x-forwarded-for": "garbage, 198.51.100.9, 10.0.0.1",
        "x-real-ip": "192.0.2.5",
    }

    async def post(body: dict[str, object], extra: dict[str, str]) -> dict[str, object]:
        response = await proxied_client.post("/api/events/", json={"page": "/", **body}, headers=extra)
        assert response.status_code == 200
        result: dict[str, object] = response.json()
        return result

    both = await post({"user_agent": ua_body, "ip_address": "203.0.113.50"}, headers)
    assert both["os"] == "iOS" and both["device"] == "mobile" and both["ip_address"] == "203.0.113.50"
    from_headers = await post({}, headers)
    assert from_headers["os"] == "Linux" and from_headers["ip_address"] == "198.51.100.9"
    bad_body_ip = await post({"ip_address": "not-an-ip"}, headers)
    assert bad_body_ip["ip_address"] == "198.51.100.9"
    real_ip = await post({}, {"x-real-ip": "192.0.2.5"})
    assert real_ip["ip_address"] == "192.0.2.5"
    peer = await post({}, {"x-forwarded-for": "nonsense"})
    assert peer["ip_address"] == "10.0.0.2"
    bot = await post(
        {"user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}, {}
    )
    assert bot["is_bot"] is True and bot["device"] == "bot"
