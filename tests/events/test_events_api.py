from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.events.test_enrichment import AGENTS

pytestmark = pytest.mark.anyio

WINDOWS_UA = AGENTS[0][0]
IPHONE_UA = AGENTS[2][0]


async def test_create_read_delete_roundtrip(proxied_client: httpx.AsyncClient) -> None:
    payload = {
        "page": "/homepage",
        "ip_address": "198.51.100.4",
        "user_agent": WINDOWS_UA,
        "referrer": "https://www.google.com/",
        "session_id": "s-1",
        "duration": 15,
        "description": "first visit",
    }
    created = await proxied_client.post("/api/events/", json=payload)
    assert created.status_code == 200, created.text
    event = created.json()
    uuid.UUID(event["id"])
    assert event["time"]
    for key, value in payload.items():
        assert event[key] == value
    assert event["os"] == "Windows" and event["browser"] == "Chrome" and event["device"] == "desktop"
    assert event["referrer_domain"] == "google.com"
    assert event["updated_at"]

    for path in (f"/api/events/{event['id']}/", f"/api/events/{event['id']}"):
        read = await proxied_client.get(path)
        assert read.status_code == 200
        assert read.json()["id"] == event["id"]
        assert read.json()["page"] == "/homepage"

    deleted = await proxied_client.delete(f"/api/events/{event['id']}/")
    assert deleted.status_code == 200
    assert "deleted" in deleted.json()["detail"]
    missing = await proxied_client.get(f"/api/events/{event['id']}/")
    assert missing.status_code == 404
    assert "not found" in missing.json()["detail"]
    assert (await proxied_client.delete(f"/api/events/{event['id']}")).status_code == 404


async def test_post_without_trailing_slash_does_not_redirect(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/events", json={"page": "/x"})
    assert response.status_code == 200
    assert response.json()["page"] == "/x"


async def test_backfill_time_and_defaults(client: httpx.AsyncClient) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    response = await client.post("/api/events/", json={"page": "/old", "time": at.isoformat()})
    assert response.status_code == 200
    body = response.json()
    assert datetime.fromisoformat(body["time"]) == at
    assert body["duration"] == 0
    assert body["event_type"] == "pageview" and body["site_id"] == "default"
    # The socket peer stands in for a missing ip_address, the header for a missing user_agent.
    assert body["ip_address"] == "203.0.113.7"
    assert body["user_agent"].startswith("python-httpx")


async def test_buckets_match_values_computed_from_inserted_rows(client: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex[:8]
    pages = [f"/{tag}/a", f"/{tag}/b"]
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    expected: dict[tuple[datetime, str, str], list[int]] = defaultdict(list)
    events = []
    for i in range(60):
        page = pages[i % 2]
        agent, os_name = (WINDOWS_UA, "Windows") if i % 3 else (IPHONE_UA, "iOS")
        at = base + timedelta(minutes=17 * i)
        duration = (i * 7) % 50
        events.append({"page": page, "user_agent": agent, "duration": duration, "time": at.isoformat()})
        expected[(at.replace(minute=0), page, os_name)].append(duration)
    batch = await client.post("/api/events/batch", json={"events": events})
    assert batch.status_code == 200 and batch.json()["accepted"] == 60

    response = await client.get(
        "/api/events/",
        params={"duration": "1 hour", "pages": pages, "from": (base - timedelta(hours=1)).isoformat()},
    )
    assert response.status_code == 200
    rows = response.json()
    got = {
        (datetime.fromisoformat(r["bucket"]), r["page"], r["operating_system"]): (
            r["count"],
            r["avg_duration"],
        )
        for r in rows
    }
    want = {key: (len(v), sum(v) / len(v)) for key, v in expected.items()}
    assert got.keys() == want.keys()
    for key, (count, avg) in want.items():
        assert got[key][0] == count
        assert got[key][1] == pytest.approx(avg)
    ordered = [(r["bucket"], r["page"], r["operating_system"]) for r in rows]
    assert ordered == sorted(ordered)
    assert set(rows[0]) == {"bucket", "page", "operating_system", "avg_duration", "count"}


@pytest.mark.usefixtures("clean")
async def test_default_pages_and_day_buckets(client: httpx.AsyncClient) -> None:
    for page in ("/", "/about", "/not-in-the-default-list"):
        assert (
            await client.post("/api/events/", json={"page": page, "user_agent": IPHONE_UA})
        ).status_code == 200
    rows = (await client.get("/api/events/", params={"duration": "1 day"})).json()
    assert sorted(r["page"] for r in rows) == ["/", "/about"]
    assert all(r["operating_system"] == "iOS" and r["count"] == 1 for r in rows)


@pytest.mark.parametrize(
    "duration", ["30 seconds", "15 minutes", "1 hour", "1 day", "1 week", "1 month", "2 hours", "1 year"]
)
async def test_every_documented_interval_is_accepted(client: httpx.AsyncClient, duration: str) -> None:
    response = await client.get("/api/events/", params={"duration": duration, "pages": "/"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "duration",
    [
        "",
        "1 fortnight",
        "abc",
        "1 day; DROP TABLE event",
        "1 day') --",
        "-1 day",
        "0 days",
        "1 day 2 hours",
        "99999999 days",
        "1.5 hours",
    ],
)
async def test_bad_intervals_are_422_naming_the_parameter(client: httpx.AsyncClient, duration: str) -> None:
    response = await client.get("/api/events/", params={"duration": duration})
    assert response.status_code == 422
    assert "duration" in str(response.json()["detail"])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "page"),
        ({"page": ""}, "page"),
        ({"page": 123}, "page"),
        ({"page": "/x", "duration": "long"}, "duration"),
        ({"page": "/x", "duration": -5}, "duration"),
        ({"page": "/x", "time": "yesterday"}, "time"),
        ({"page": "/x", "time": (datetime.now(UTC) + timedelta(hours=2)).isoformat()}, "time"),
        ({"page": "x" * 5000}, "page"),
        ({"page": "/x", "session_id": "s" * 500}, "session_id"),
        ({"page": "/x\u0000y"}, "page"),
        ({"page": "/x", "properties": "not an object"}, "properties"),
    ],
)
async def test_bad_events_are_422_naming_the_field(
    client: httpx.AsyncClient, payload: dict[str, object], field: str
) -> None:
    response = await client.post("/api/events/", json=payload)
    assert response.status_code == 422, response.text
    assert field in str(response.json()["detail"])


async def test_malformed_body_and_ids(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/events/", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert (await client.get("/api/events/not-a-uuid/")).status_code == 422
    assert (await client.delete("/api/events/not-a-uuid")).status_code == 422
    missing = await client.get(f"/api/events/{uuid.uuid4()}/")
    assert missing.status_code == 404


async def test_injection_attempts_are_stored_as_plain_text(client: httpx.AsyncClient) -> None:
    page = "/'; DROP TABLE event; --"
    created = await client.post("/api/events/", json={"page": page})
    assert created.status_code == 200
    rows = (await client.get("/api/events/", params={"pages": page, "duration": "1 day"})).json()
    assert rows and rows[0]["page"] == page


async def test_range_parameters(client: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    bad = await client.get(
        "/api/events/", params={"from": now.isoformat(), "to": (now - timedelta(days=1)).isoformat()}
    )
    assert bad.status_code == 422
    assert (await client.get("/api/events/", params={"from": "yesterday"})).status_code == 422


async def test_plain_and_fallback_posts_store_the_same_event(proxied_client: httpx.AsyncClient) -> None:
    """The plain case is answered in front of FastAPI (src/api/ingest/single.py); a float, a
    chunked body or an unusual content type goes through the route. All give the same event."""
    at = (datetime.now(UTC) - timedelta(minutes=3)).replace(microsecond=0)
    base = {
        "page": "/same",
        "time": at.isoformat(),
        "referrer": "https://news.ycombinator.com/item",
        "session_id": "s-same",
        "properties": {"plan": "pro"},
    }
    headers = {"user-agent": IPHONE_UA, "x-forwarded-for": "203.0.113.9"}

    async def chunked(body: bytes):  # type: ignore[no-untyped-def]
        yield body

    plain = await proxied_client.post("/api/events/", json={**base, "duration": 15}, headers=headers)
    as_float = await proxied_client.post("/api/events/", json={**base, "duration": 15.0}, headers=headers)
    streamed = await proxied_client.post(
        "/api/events",
        content=chunked(httpx.Request("POST", "/", json={**base, "duration": 15}).content),
        headers={**headers, "content-type": "application/json"},
    )
    texty = await proxied_client.post(
        "/api/events/",
        content=httpx.Request("POST", "/", json={**base, "duration": 15}).content,
        headers={**headers, "content-type": "application/json; charset=UTF-8 "},
    )
    answers = [r.json() for r in (plain, as_float, streamed, texty)]
    assert [r.status_code for r in (plain, as_float, streamed, texty)] == [200] * 4, answers
    ids = {a.pop("id") for a in answers}
    assert len(ids) == 4
    for a in answers:
        for moment in ("received_at", "updated_at"):
            a.pop(moment, None)
    assert all(a == answers[0] for a in answers), answers
    assert answers[0]["os"] == "iOS" and answers[0]["ip_address"] == "203.0.113.9"
    assert answers[0]["time"].startswith(at.isoformat()[:19]) and answers[0]["duration"] == 15
    for event_id in ids:
        stored = (await proxied_client.get(f"/api/events/{event_id}")).json()
        assert stored["page"] == "/same" and stored["referrer_domain"] == "news.ycombinator.com"
