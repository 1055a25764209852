"""SITE_AUTHORIZATION=registry: only registered, enabled sites are stored, each event carries its
site's client_id, browser origins must be the site's hostnames, and CORS names exactly those."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.sites.audit import decision_counts
from tests.sites.helpers import ADMIN, add_site, service, stored_rows

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_sites")]


def _name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}.example.com"


async def test_off_mode_accepts_every_site_with_a_null_client(client: httpx.AsyncClient) -> None:
    site = _name("any")
    answer = await client.post("/collect", json={"eventType": "pageview", "siteId": site, "path": "/"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["client_id"] is None
    preflight = await client.options(
        "/collect", headers={"origin": "https://anywhere.example", "access-control-request-method": "POST"}
    )
    assert preflight.headers["access-control-allow-origin"] == "*"


async def test_sites_admin_api(engine: AsyncEngine) -> None:
    site = _name("shop")
    async with service(site_authorization="registry") as (_, http):
        assert (await http.get("/api/sites")).status_code == 401
        assert (await http.get("/api/sites", headers={"x-api-key": "wrong"})).status_code == 401
        created = await add_site(
            http, site, "acme", allowed_hostnames=["*.acme.example"], privacy_level="hashed"
        )
        assert created["allowed_hostnames"] == ["*.acme.example"] and created["privacy_level"] == "hashed"
        plain = await add_site(http, _name("blog"), "acme")
        assert plain["allowed_hostnames"] == [plain["site_id"]]  # its own domain by default
        assert plain["privacy_level"] == "standard" and plain["timezone"] == "UTC"
        again = await http.post("/api/sites", json={"site_id": site, "client_id": "x"}, headers=ADMIN)
        assert again.status_code == 409
        bad = await http.post(
            "/api/sites",
            json={"site_id": "x", "client_id": "c", "allowed_hostnames": ["not a host"]},
            headers=ADMIN,
        )
        assert bad.status_code == 422 and "allowed_hostnames" in bad.text
        zone = await http.post(
            "/api/sites", json={"site_id": "y", "client_id": "c", "timezone": "Mars/Base"}, headers=ADMIN
        )
        assert zone.status_code == 422 and "timezone" in zone.text
        listed = (await http.get("/api/sites", headers=ADMIN)).json()
        assert {s["site_id"] for s in listed} == {site, plain["site_id"]}
        patched = await http.patch(
            f"/api/sites/{site}", json={"privacy_level": "strict", "timezone": "Europe/Berlin"}, headers=ADMIN
        )
        assert patched.status_code == 200 and patched.json()["privacy_level"] == "strict"
        assert (await http.get(f"/api/sites/{site}", headers=ADMIN)).json()["timezone"] == "Europe/Berlin"
        # the site's zone is its dashboard's default; an unregistered site's is UTC
        assert '"default_tz": "Europe/Berlin"' in (await http.get(f"/dashboard/{site}")).text
        assert '"default_tz": "UTC"' in (await http.get("/dashboard/elsewhere.example")).text
        assert (await http.get("/api/sites/nope.example", headers=ADMIN)).status_code == 404
        deleted = await http.delete(f"/api/sites/{site}", headers=ADMIN)
        assert deleted.status_code == 200 and deleted.json()["disabled_at"] is not None
        enabled = await http.patch(f"/api/sites/{site}", json={"enabled": True}, headers=ADMIN)
        assert enabled.json()["disabled_at"] is None


async def test_every_ingest_route_refuses_unregistered_and_disabled_sites(engine: AsyncEngine) -> None:
    site, stranger = _name("shop"), _name("stranger")
    async with service(site_authorization="registry") as (_, http):
        await add_site(http, site, "acme")
        routes = [
            ("/api/events/", lambda s: {"site_id": s, "page": "/"}),  # the fast path
            ("/api/events/", lambda s: {"site_id": s, "page": "/", "duration": 1.0}),  # pydantic's path
            ("/collect", lambda s: {"eventType": "pageview", "siteId": s, "path": "/"}),
            ("/event", lambda s: {"site_id": s, "event_type": "signup", "path": "/"}),
            (
                "/events",
                lambda s: {
                    "events": [
                        {"event_id": str(uuid.uuid4()), "occurred_at": "2026-11-20T10:00:00Z", "site_id": s}
                    ]
                },
            ),
        ]
        for path, body in routes:
            refused = await http.post(path, json=body(stranger), headers=ADMIN)
            assert refused.status_code == 403, (path, refused.text)
            assert stranger in refused.json()["error"]
            assert refused.json()["detail"]["reason"] == "unknown_site"
            accepted = await http.post(path, json=body(site), headers=ADMIN)
            assert accepted.status_code == 200, (path, accepted.text)
        assert await stored_rows(engine, stranger) == []
        rows = await stored_rows(engine, site)
        assert len(rows) == len(routes) and {r["client_id"] for r in rows} == {"acme"}

        # the collector's answer names the client, as the replaced system's did
        collected = await http.post("/collect", json={"eventType": "pageview", "siteId": site, "path": "/x"})
        assert collected.json()["client_id"] == "acme"
        single = await http.post("/api/events/", json={"site_id": site, "page": "/y"})
        assert single.json()["client_id"] == "acme"

        # deleting disables: new events are refused, stored events stay
        assert (await http.delete(f"/api/sites/{site}", headers=ADMIN)).status_code == 200
        disabled = await http.post("/api/events/", json={"site_id": site, "page": "/"})
        assert disabled.status_code == 403 and disabled.json()["detail"]["reason"] == "disabled_site"
        assert len(await stored_rows(engine, site)) == len(routes) + 2
    counts = decision_counts()
    assert counts[(stranger, "", False, "unknown_site")] >= len(routes)
    assert counts[(site, "", True, "granted")] >= len(routes)


async def test_a_mixed_batch_refuses_only_the_unauthorized_items(engine: AsyncEngine) -> None:
    site, other, stranger = _name("shop"), _name("blog"), _name("stranger")
    async with service(site_authorization="registry") as (_, http):
        await add_site(http, site, "acme")
        await add_site(http, other, "globex")
        items = [
            {"site_id": site, "page": "/a"},
            {"site_id": stranger, "page": "/b"},
            {"site_id": other, "page": "/c"},
            {"site_id": site},  # invalid: no page
            {"site_id": stranger, "page": "/d", "duration": 2.0},
        ]
        answer = await http.post("/api/events/batch", json={"events": items}, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["accepted"] == 2
        assert [(r["index"], r["errors"][0]["field"]) for r in result["rejected"]] == [
            (1, "site_id"),
            (3, "page"),
            (4, "site_id"),
        ]
        assert result["rejected"][0]["errors"][0]["type"] == "site_unknown_site"
        assert stranger in result["rejected"][0]["errors"][0]["message"]
        assert [r["client_id"] for r in await stored_rows(engine, site)] == ["acme"]
        assert [r["client_id"] for r in await stored_rows(engine, other)] == ["globex"]
        assert await stored_rows(engine, stranger) == []
        # A large batch validates in a worker thread: the same decisions there.
        many = [{"site_id": site if i % 2 else stranger, "page": f"/{i}"} for i in range(400)]
        big = (await http.post("/api/events/batch", json={"events": many}, headers=ADMIN)).json()
        assert big["accepted"] == 200 and {r["index"] % 2 for r in big["rejected"]} == {0}


async def test_browser_origins_must_be_the_sites_hostnames(engine: AsyncEngine) -> None:
    site = _name("shop")
    async with service(site_authorization="registry") as (_, http):
        await add_site(http, site, "acme", allowed_hostnames=[site, "*.acme.example"])
        for origin, allowed in (
            (f"https://{site}", True),
            ("https://www.acme.example:8443", True),
            ("https://acme.example.evil.example", False),
            ("https://evil.example", False),
            ("null", False),
        ):
            answer = await http.post(
                "/api/events/", json={"site_id": site, "page": "/"}, headers={"origin": origin}
            )
            assert answer.status_code == (200 if allowed else 403), (origin, answer.text)
            if not allowed:
                assert answer.json()["detail"]["reason"] == "origin"
            collected = await http.post(
                "/collect",
                json={"siteId": site, "eventType": "pageview", "path": "/"},
                headers={"origin": origin},
            )
            assert collected.status_code == (200 if allowed else 403)
        # no Origin (a server sending): not a browser, so no origin to check
        assert (await http.post("/api/events/", json={"site_id": site, "page": "/"})).status_code == 200
        assert len(await stored_rows(engine, site)) == 5


async def test_cors_allows_exactly_the_origins_of_authorized_sites() -> None:
    site, gone = _name("shop"), _name("gone")
    async with service(site_authorization="registry") as (_, http):
        await add_site(http, site, "acme", allowed_hostnames=[site, "*.acme.example"])
        await add_site(http, gone, "acme")
        await http.delete(f"/api/sites/{gone}", headers=ADMIN)
        request_headers = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        }
        for origin in (f"https://{site}", "http://app.acme.example"):
            preflight = await http.options("/collect", headers={"origin": origin, **request_headers})
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == origin
            assert "POST" in preflight.headers["access-control-allow-methods"]
            read = await http.get("/healthz", headers={"origin": origin})
            assert read.headers["access-control-allow-origin"] == origin
        for origin in ("https://evil.example", f"https://{gone}", "https://acme.example"):
            preflight = await http.options("/api/events/1", headers={"origin": origin, **request_headers})
            assert preflight.status_code == 403, origin
            assert "access-control-allow-origin" not in preflight.headers
            read = await http.get("/healthz", headers={"origin": origin})
            assert read.status_code == 200 and "access-control-allow-origin" not in read.headers
        bare = await http.options("/collect")
        assert bare.status_code == 204 and "access-control-allow-origin" not in bare.headers


async def test_a_sites_stats_default_to_its_own_zone(engine: AsyncEngine) -> None:
    site = _name("zoned")
    async with service(site_authorization="registry") as (_, http):
        await add_site(http, site, "acme", timezone="Asia/Kathmandu")
        at = "2026-11-20T20:00:00+00:00"  # 01:45 on the 21st in Kathmandu, the 20th in UTC
        answer = await http.post(
            "/api/events/batch", json={"events": [{"site_id": site, "page": "/", "time": at}]}, headers=ADMIN
        )
        assert answer.status_code == 200, answer.text
        window = {"site_id": site, "from": "2026-11-19T00:00:00Z", "to": "2026-11-23T00:00:00Z"}
        days = {"interval": "1 day", "metrics": "events", **window}
        own = (await http.get("/api/stats/timeseries", params=days, headers=ADMIN)).json()
        assert own["tz"] == "Asia/Kathmandu"
        assert [row["bucket"][:10] for row in own["rows"]] == ["2026-11-21"]
        utc = (await http.get("/api/stats/timeseries", params={**days, "tz": "UTC"}, headers=ADMIN)).json()
        assert [row["bucket"][:10] for row in utc["rows"]] == ["2026-11-20"]
        unregistered = {**window, "site_id": _name("unregistered")}
        other = (await http.get("/api/stats/summary", params=unregistered, headers=ADMIN)).json()
        assert other["tz"] == "UTC"
