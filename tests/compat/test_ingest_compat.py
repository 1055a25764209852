from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings

pytestmark = pytest.mark.anyio


async def rows_for(engine: AsyncEngine, site: str) -> list[dict[str, object]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT id, event_type, page, url, session_id, visitor_id, user_id, properties FROM event"
                " WHERE site_id = :s AND time > now() - interval '400 days' ORDER BY event_type"
            ),
            {"s": site},
        )
        return [dict(r._mapping) for r in result]


async def test_collect_batch_children_inherit_and_parent_is_stored(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    site = f"collect-{uuid.uuid4().hex[:8]}"
    body = {
        "eventType": "batch",
        "sessionId": "sess-1",
        "visitorId": "vis-1",
        "siteId": site,
        "url": "https://shop.example/cart?step=2",
        "path": "/cart",
        "attribution": {"utm_source": "mail"},
        "campaign": "xmas",
        "events": [
            {"eventType": "click", "eventData": {"button": "buy"}},
            {"eventType": "scroll", "url": "https://shop.example/other", "eventData": {"depth": 80}},
        ],
    }
    response = await client.post("/collect", json=body)
    assert response.status_code == 200
    result = response.json()
    assert result["status"] == "success"
    assert result["events_processed"] == 3
    assert result["message"] == "3 event(s) received and stored"
    assert result["timestamp"]
    rows = {r["event_type"]: r for r in await rows_for(engine, site)}
    assert set(rows) == {"batch", "click", "scroll"}
    assert str(rows["batch"]["id"]) == result["event_id"]
    assert rows["batch"]["properties"] == {"attribution": {"utm_source": "mail"}, "campaign": "xmas"}
    assert rows["click"]["page"] == "/cart" and rows["click"]["session_id"] == "sess-1"
    assert rows["click"]["visitor_id"] == "vis-1" and rows["click"]["properties"] == {"button": "buy"}
    assert rows["scroll"]["page"] == "/other" and rows["scroll"]["url"] == "https://shop.example/other"


async def test_collect_single_and_query_parameter_fallback(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    site = f"collectq-{uuid.uuid4().hex[:8]}"
    single = await client.post(
        "/collect", json={"eventType": "pageview", "siteId": site, "path": "/p", "timestamp": 1763900000000}
    )
    assert single.status_code == 200 and single.json()["events_processed"] == 1
    fallback = await client.post(f"/collect?eventType=signup&siteId={site}&url=https://a.example/join")
    assert fallback.status_code == 200
    rows = {r["event_type"]: r for r in await rows_for(engine, site)}
    assert rows["signup"]["page"] == "/join"
    assert rows["pageview"]["page"] == "/p"


async def test_collect_errors_have_reasons(client: httpx.AsyncClient) -> None:
    invalid = await client.post("/collect", content=b"{oops", headers={"content-type": "application/json"})
    assert invalid.status_code == 400 and "not valid JSON" in invalid.json()["error"]
    wrong_type = await client.post(
        "/collect", content=b"a=b", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert wrong_type.status_code == 415 and "application/json" in wrong_type.json()["error"]
    big = b'{"path": "/' + b"x" * get_settings().max_body_bytes + b'"}'
    too_big = await client.post("/collect", content=big, headers={"content-type": "application/json"})
    assert too_big.status_code == 413
    bad_child = await client.post(
        "/collect", json={"eventType": "batch", "path": "/", "events": [{"duration": -1}]}
    )
    assert bad_child.status_code == 422
    assert bad_child.json()["detail"][0]["index"] == 1
    assert "duration" in bad_child.json()["error"]
    empty = await client.post("/collect")
    assert empty.status_code == 422


async def test_collect_preflight(client: httpx.AsyncClient) -> None:
    bare = await client.options("/collect")
    assert bare.status_code == 204
    cors = await client.options(
        "/collect",
        headers={
            "origin": "https://site.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        },
    )
    assert cors.status_code == 200
    assert cors.headers["access-control-allow-origin"] in ("*", "https://site.example")


async def test_queued_event_shape(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    site = f"queued-{uuid.uuid4().hex[:8]}"
    response = await client.post(
        "/event",
        json={
            "site_id": site,
            "event_type": "signup",
            "path": "/join",
            "user_id": "u-1",
            "timestamp": "2026-11-20T10:00:00Z",
        },
    )
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    rows = await rows_for(engine, site)
    assert len(rows) == 1 and str(rows[0]["id"]) == response.json()["event_id"]
    assert rows[0]["page"] == "/join" and rows[0]["user_id"] == "u-1"
    assert (await client.post("/event", json={"site_id": site, "timestamp": "soon"})).status_code == 422


async def test_interview_events_are_idempotent(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    site = f"interview-{uuid.uuid4().hex[:8]}"
    events = [
        {
            "event_id": f"{site}-{i}",
            "occurred_at": "2026-11-20T10:00:00Z",
            "user_id": i,
            "event_type": "login",
            "properties": {"n": i},
            "site_id": site,
        }
        for i in range(5)
    ]
    for _ in range(2):
        response = await client.post("/events", json={"events": events})
        assert response.status_code == 200
        assert response.json() == {
            "status": "accepted",
            "message": "Events queued for processing",
            "events_count": 5,
        }
    rows = await rows_for(engine, site)
    assert len(rows) == 5
    assert {r["user_id"] for r in rows} == {str(i) for i in range(5)}


async def test_interview_validation(client: httpx.AsyncClient) -> None:
    limit = get_settings().batch_max_events
    many = [
        {"event_id": str(i), "occurred_at": "2026-11-20T10:00:00Z", "event_type": "x"}
        for i in range(limit + 1)
    ]
    too_many = await client.post("/events", json={"events": many})
    assert too_many.status_code == 400 and str(limit) in too_many.json()["error"]
    missing = await client.post("/events", json={"events": [{"event_type": "x"}]})
    assert missing.status_code == 422
    assert {e["field"] for e in missing.json()["detail"][0]["errors"]} == {"event_id", "occurred_at"}
    assert (await client.post("/events", json={"events": []})).status_code == 422


async def test_interview_api_keys(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from src.api import config

    keyed = dataclasses.replace(get_settings(), api_keys=("secret-1", "secret-2"))
    monkeypatch.setattr(config, "get_settings", lambda: keyed)
    monkeypatch.setattr("src.api.auth.dependencies.get_settings", lambda: keyed)
    body = {
        "events": [{"event_id": str(uuid.uuid4()), "occurred_at": "2026-11-20T10:00:00Z", "event_type": "x"}]
    }
    missing = await client.post("/events", json=body)
    assert missing.status_code == 401 and "missing" in missing.json()["error"]
    wrong = await client.post("/events", json=body, headers={"x-api-key": "nope"})
    assert wrong.status_code == 401 and "invalid" in wrong.json()["error"]
    ok = await client.post("/events", json=body, headers={"x-api-key": "secret-2"})
    assert ok.status_code == 200


async def test_collect_beacon_and_large_batches(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    site = f"beacon-{uuid.uuid4().hex[:8]}"
    # navigator.sendBeacon posts text/plain; the body is JSON all the same.
    beacon = await client.post(
        "/collect",
        content=f'{{"eventType": "pageview", "siteId": "{site}", "path": "/b", "duration": "15"}}'.encode(),
        headers={"content-type": "text/plain;charset=UTF-8"},
    )
    assert beacon.status_code == 200, beacon.text
    children = [{"eventType": "scroll", "eventData": {"depth": i}} for i in range(150)]
    batch = await client.post(
        "/collect",
        json={"eventType": "batch", "siteId": site, "sessionId": "s", "path": "/long", "events": children},
    )
    assert batch.status_code == 200
    assert batch.json()["events_processed"] == 151
    rows = await rows_for(engine, site)
    assert len(rows) == 152
    scrolls = [r for r in rows if r["event_type"] == "scroll"]
    assert {r["properties"]["depth"] for r in scrolls} == set(range(150))
    assert all(r["page"] == "/long" and r["session_id"] == "s" for r in scrolls)
    parent = next(r for r in rows if r["event_type"] == "batch")
    assert str(parent["id"]) == batch.json()["event_id"]
    async with engine.connect() as conn:
        duration = (
            await conn.execute(
                text(
                    "SELECT duration FROM event WHERE site_id = :s AND page = '/b' AND time > now() - interval '1 day'"
                ),
                {"s": site},
            )
        ).scalar_one()
    assert duration == 15


async def test_collect_invalid_child_stores_nothing(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    site = f"allornone-{uuid.uuid4().hex[:8]}"
    children = [{"eventType": "ok"}] * 80 + [{"eventType": "bad", "duration": "long"}]
    response = await client.post(
        "/collect", json={"eventType": "batch", "siteId": site, "path": "/", "events": children}
    )
    assert response.status_code == 422
    assert response.json()["error"].startswith("events[81] is invalid: duration")
    assert await rows_for(engine, site) == []


async def test_queued_event_without_path(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    site = f"queued-nopath-{uuid.uuid4().hex[:8]}"
    response = await client.post("/event", json={"site_id": site, "event_type": "heartbeat", "user_id": 9})
    assert response.status_code == 200
    rows = await rows_for(engine, site)
    assert [(r["page"], r["user_id"], str(r["id"])) for r in rows] == [("", "9", response.json()["event_id"])]
