"""API keys: created by the admin API and the CLI, stored only as a hash, scoped, limited to
sites; every read route needs `stats:read` for the site it reads once a key exists, deletes need
`admin`, server-side ingest needs `ingest`, browser collectors stay keyless."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.auth.keys import hash_key
from src.api.config import get_settings
from src.cli import main as cli
from tests.sites.helpers import ADMIN, SECRET_KEY, add_site, service

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_sites")]


def _name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}.example.com"


async def _key(
    http: httpx.AsyncClient, scopes: list[str], sites: list[str] | None = None, limit: int = 0
) -> dict[str, Any]:
    answer = await http.post(
        "/api/keys",
        json={"name": "t", "scopes": scopes, "sites": sites, "hourly_limit": limit},
        headers=ADMIN,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _as(key: dict[str, Any]) -> dict[str, str]:
    return {"x-api-key": key["key"]}


async def test_keys_are_stored_as_hashes_listed_by_prefix_and_revoked(engine: AsyncEngine) -> None:
    async with service() as (_, http):
        created = await _key(http, ["stats:read"])
        key = created["key"]
        assert key.startswith("eak_") and created["prefix"] == key[:12]
        async with engine.connect() as conn:
            row = (
                await conn.execute(text("SELECT row_to_json(k)::text AS r, secret_hash FROM api_key k"))
            ).one()
        assert key not in row.r and row.secret_hash == hash_key(SECRET_KEY, key)
        listed = (await http.get("/api/keys", headers=ADMIN)).json()
        assert [k["prefix"] for k in listed] == [created["prefix"]] and "key" not in listed[0]
        assert (
            await http.get("/api/stats/summary", headers={"authorization": f"Bearer {key}"})
        ).status_code == 200
        used = (await http.get("/api/keys", headers=ADMIN)).json()[0]
        assert used["last_used_at"] is not None
        revoked = await http.delete(f"/api/keys/{created['id']}", headers=ADMIN)
        assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
        assert (await http.get("/api/stats/summary", headers=_as(created))).status_code == 401
        assert (await http.delete(f"/api/keys/{uuid.uuid4()}", headers=ADMIN)).status_code == 404
        bad = await http.post("/api/keys", json={"name": "x", "scopes": ["root"]}, headers=ADMIN)
        assert bad.status_code == 422 and "scopes" in bad.text


async def test_admin_routes_need_an_admin_key_even_when_the_service_is_keyless() -> None:
    async with service(admin_api_key=None) as (_, http):
        answer = await http.get("/api/sites")
        assert answer.status_code == 401 and "ADMIN_API_KEY" in answer.json()["error"]
        # ...while everything else stays as open as it was
        assert (await http.get("/api/stats/summary")).status_code == 200
        assert (await http.post("/api/events/batch", json={"events": [{"page": "/"}]})).status_code == 200


async def test_a_missing_and_a_wrong_key_answer_alike(engine: AsyncEngine) -> None:
    async with service() as (_, http):
        routes = [
            ("GET", "/api/stats/summary"),
            ("GET", "/api/events/"),
            ("GET", "/stats/dau?from_date=2026-11-01&to=2026-11-02"),
            ("DELETE", f"/api/events/{uuid.uuid4()}"),
            ("POST", "/events"),
        ]
        for method, path in routes:
            missing = await http.request(method, path)
            wrong = await http.request(method, path, headers={"x-api-key": "eak_" + "x" * 43})
            bearer = await http.request(method, path, headers={"authorization": "Bearer nope"})
            assert missing.status_code == wrong.status_code == bearer.status_code == 401, path
            assert missing.json() == wrong.json() == bearer.json()
            assert missing.headers["www-authenticate"] == wrong.headers["www-authenticate"]


async def test_scopes_and_cross_site_isolation(engine: AsyncEngine) -> None:
    mine, theirs = _name("mine"), _name("theirs")
    async with service(site_authorization="registry") as (_, http):
        await add_site(http, mine, "acme")
        await add_site(http, theirs, "globex")
        reader = await _key(http, ["stats:read"], [mine])
        ingest = await _key(http, ["ingest"], [mine])
        admin_of_mine = await _key(http, ["admin"], [mine])
        # browser collectors stay keyless (site-authorized)
        own = (await http.post("/api/events/", json={"site_id": mine, "page": "/m"})).json()
        other = (await http.post("/api/events/", json={"site_id": theirs, "page": "/t"})).json()
        assert (
            await http.post("/collect", json={"siteId": theirs, "eventType": "pageview", "path": "/t"})
        ).status_code == 200

        # reads: the key's site only; another site's data is 403; without site_id only its own
        assert (await http.get(f"/api/events/{own['id']}", headers=_as(reader))).json()[
            "ip_address"
        ] == "203.0.113.7"
        assert (await http.get(f"/api/events/{other['id']}", headers=_as(reader))).status_code == 403
        assert (
            await http.get("/api/stats/summary", params={"site_id": theirs}, headers=_as(reader))
        ).status_code == 403
        assert (await http.get("/stats", params={"site_id": theirs}, headers=_as(reader))).status_code == 403
        everything = (await http.get("/api/stats/summary", params={"source": "raw"}, headers=ADMIN)).json()
        scoped = (await http.get("/api/stats/summary", headers=_as(reader))).json()
        assert everything["events"] >= 3 and scoped["events"] == 1
        pages = (
            await http.get("/api/stats/breakdown", params={"dimension": "page"}, headers=_as(reader))
        ).json()
        assert [r["page"] for r in pages["rows"]] == ["/m"]
        buckets = (await http.get("/api/events/", params={"pages": ["/m", "/t"]}, headers=_as(reader))).json()
        assert {b["page"] for b in buckets} == {"/m"}
        assert (
            await http.get(
                "/stats/top-events",
                params={"from_date": "2026-01-01", "to": "2026-12-31"},
                headers=_as(reader),
            )
        ).json()["data"][0]["count"] == 1
        # by client: the client's sites (and nothing of a client the key may not read)
        assert (await http.get("/api/stats/summary", params={"client_id": "globex"}, headers=ADMIN)).json()[
            "events"
        ] == 2
        # (an empty answer's events read None on the rollup path, 0 on the raw one: either is none)
        assert not (
            await http.get("/api/stats/summary", params={"client_id": "globex"}, headers=_as(reader))
        ).json()["events"]

        # scopes: a reader cannot ingest or delete, an ingest key cannot read
        assert (
            await http.post(
                "/api/events/batch", json={"events": [{"site_id": mine, "page": "/"}]}, headers=_as(reader)
            )
        ).status_code == 403
        assert (await http.delete(f"/api/events/{own['id']}", headers=_as(reader))).status_code == 403
        assert (await http.get("/api/stats/summary", headers=_as(ingest))).status_code == 403
        assert (await http.get("/api/sites", headers=_as(reader))).status_code == 403
        # an ingest key sends for its own sites only; in a batch only the foreign items are refused
        batch = (
            await http.post(
                "/api/events/batch",
                json={"events": [{"site_id": mine, "page": "/i"}, {"site_id": theirs, "page": "/i"}]},
                headers=_as(ingest),
            )
        ).json()
        assert batch["accepted"] == 1 and batch["rejected"][0]["errors"][0]["type"] == "site_key"
        interview = {
            "events": [{"event_id": "o-1", "occurred_at": "2026-11-20T10:00:00Z", "site_id": theirs}]
        }
        assert (await http.post("/events", json=interview, headers=_as(ingest))).status_code == 403
        # deletes: admin, and a site-limited admin only its sites' events
        assert (
            await http.delete(f"/api/events/{other['id']}", headers=_as(admin_of_mine))
        ).status_code == 403
        assert (await http.delete(f"/api/events/{own['id']}", headers=_as(admin_of_mine))).status_code == 200
        assert (await http.delete(f"/api/events/{other['id']}", headers=ADMIN)).status_code == 200
        assert [s["site_id"] for s in (await http.get("/api/sites", headers=_as(admin_of_mine))).json()] == [
            mine
        ]


async def test_the_older_api_keys_list_keeps_every_scope() -> None:
    async with service(api_keys=("legacy-key",), admin_api_key=None) as (_, http):
        legacy = {"x-api-key": "legacy-key"}
        assert (await http.get("/api/stats/summary")).status_code == 401
        assert (await http.get("/api/stats/summary", headers=legacy)).status_code == 200
        assert (
            await http.post("/api/events/batch", json={"events": [{"page": "/"}]}, headers=legacy)
        ).status_code == 200
        assert (await http.get("/api/keys", headers=legacy)).status_code == 200
        assert (await http.delete(f"/api/events/{uuid.uuid4()}", headers=legacy)).status_code == 404


async def test_over_the_hourly_limit_answers_429_with_its_headers() -> None:
    async with service() as (_, http):
        limited = await _key(http, ["stats:read"], limit=3)
        answers = [await http.get("/api/stats/realtime", headers=_as(limited)) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
        over = answers[-1]
        assert over.headers["x-ratelimit-limit"] == "3" and 0 < int(over.headers["retry-after"]) <= 3600
        assert int(over.headers["x-ratelimit-reset"]) > 0 and "3 requests per hour" in over.json()["error"]
        # answers the app encodes itself carry the headers too
        timeseries = await http.get(
            "/api/stats/timeseries", headers=_as(await _key(http, ["stats:read"], limit=9))
        )
        assert timeseries.status_code == 200 and timeseries.headers["x-ratelimit-remaining"] == "8"
        # another key has its own window
        other = await _key(http, ["stats:read"], limit=3)
        assert (await http.get("/api/stats/realtime", headers=_as(other))).status_code == 200


async def test_cli_creates_lists_and_revokes_keys(
    engine: AsyncEngine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = dataclasses.replace(get_settings(), secret_key=SECRET_KEY)
    monkeypatch.setattr("src.cli.get_settings", lambda: settings)
    site = _name("cli")
    assert (
        await anyio.to_thread.run_sync(
            cli, ["keys", "create", "--name", "ci", "--scopes", "ingest,stats:read", "--sites", site]
        )
        == 0
    )
    key = capsys.readouterr().out.strip()
    assert key.startswith("eak_")
    assert await anyio.to_thread.run_sync(cli, ["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert key[:12] in listed and key not in listed and f"sites={site}" in listed
    async with service() as (app, http):
        assert (
            await http.get("/api/stats/summary", params={"site_id": site}, headers={"x-api-key": key})
        ).status_code == 200
        assert not (await http.get("/api/stats/summary", headers={"x-api-key": key})).json()["events"]
        assert await anyio.to_thread.run_sync(cli, ["keys", "revoke", key[:12]]) == 0
        app.state.keys.invalidate()  # another process revoked it: this one learns within seconds
        assert (await http.get("/api/stats/summary", headers={"x-api-key": key})).status_code == 401
    with pytest.raises(SystemExit) as refused:
        cli(["keys", "create", "--name", "x", "--scopes", "root"])
    assert refused.value.code == 2 and "--scopes" in capsys.readouterr().err


async def test_a_database_outage_keeps_the_last_known_answers(engine: AsyncEngine) -> None:
    """Queue mode ingests while the database is down: whether keys are required, and the site
    registry, keep their last answers instead of failing the request; with no answer yet the
    outage is the request's 503."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from src.api.auth.service import KeyService
    from src.api.errors import is_unavailable
    from src.api.sites.service import SiteRegistry

    settings = get_settings()
    # Nothing listens on port 1: every connection is refused at once.
    down = create_async_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    try:
        keys = KeyService(engine, settings)
        assert await keys.required(()) is False
        keys.engine, keys._required_at = down, float("-1e9")  # expired, and the database gone
        assert await keys.required(()) is False
        with pytest.raises(Exception) as refused:
            await KeyService(down, settings).required(())
        assert is_unavailable(refused.value)

        async with service() as (_, http):
            await add_site(http, "outage.example.com", "client-outage")
        registry = SiteRegistry(engine, ttl=0)
        assert "outage.example.com" in await registry.sites()
        registry.engine = down
        assert "outage.example.com" in await registry.sites()
        with pytest.raises(Exception) as refused:
            await SiteRegistry(down, ttl=0).sites()
        assert is_unavailable(refused.value)
    finally:
        await down.dispose()
