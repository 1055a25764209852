"""SITE_AUTHORIZATION=remote against a real HTTP stub of the pixel-management service: the
registry first, then the service; answers cached (positive and negative); when the service is
down, the last known answer, else 503 with Retry-After and nothing stored."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.sites.helpers import ADMIN, add_site, pixel_management_stub, service, stored_rows

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_sites")]


def _name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}.example.com"


async def test_remote_mode_asks_the_service_caches_and_survives_its_outage(engine: AsyncEngine) -> None:
    registered, remote, camel, refused, unknown = (
        _name(n) for n in ("reg", "remote", "camel", "refused", "unknown")
    )
    with pixel_management_stub() as stub:
        stub.domains[remote] = {"client_id": "initech", "privacy_level": "hashed"}
        stub.domains[camel] = {
            "data": {"clientId": 42, "privacyLevel": "strict", "allowedHostnames": ["*.camel.example"]}
        }
        stub.domains[refused] = {"client_id": "x", "enabled": False}
        async with service(
            site_authorization="remote",
            pixel_management_url=stub.url,
            site_cache_seconds=60,
            pixel_management_timeout=0.5,
        ) as (app, http):
            await add_site(http, registered, "acme")
            app.state.site_registry.invalidate()
            # the registry answers for its sites; the service is not asked
            ok = await http.post("/api/events/", json={"site_id": registered, "page": "/"})
            assert ok.status_code == 200 and ok.json()["client_id"] == "acme"
            assert registered not in stub.requests
            # the service answers for the others, and is asked once per domain while cached
            for _ in range(3):
                answer = await http.post(
                    "/collect", json={"siteId": remote, "eventType": "pageview", "path": "/"}
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["client_id"] == "initech"
            assert stub.requests[remote] == 1
            assert (await stored_rows(engine, remote))[0]["ip_address"] is None  # its privacy level: hashed
            named = await http.post(
                "/api/events/",
                json={"site_id": camel, "page": "/"},
                headers={"origin": "https://x.camel.example"},
            )
            assert named.status_code == 200 and named.json()["client_id"] == "42"
            for site, reason in ((refused, "remote_refused"), (unknown, "remote_refused")):
                for _ in range(2):
                    no = await http.post("/api/events/", json={"site_id": site, "page": "/"})
                    assert no.status_code == 403 and no.json()["detail"]["reason"] == reason
                assert stub.requests[site] == 1  # negative answers are cached too
            # CORS: a hostname the service authorizes is an allowed origin
            preflight = await http.options(
                "/collect", headers={"origin": f"https://{remote}", "access-control-request-method": "POST"}
            )
            assert preflight.status_code == 204
            # stats find the client's sites, registered or attributed by the service
            summary = await http.get("/api/stats/summary", params={"client_id": "initech"}, headers=ADMIN)
            assert summary.status_code == 200 and summary.json()["events"] == 3

            stub.stop()  # the service goes away
            app.state.site_authorizer.remote._answers = {
                domain: (answer, float("-inf"))
                for domain, (answer, _) in app.state.site_authorizer.remote._answers.items()
            }  # every cached answer is now stale: it is asked again, and cannot be reached
            still = await http.post("/collect", json={"siteId": remote, "eventType": "pageview", "path": "/"})
            assert (
                still.status_code == 200 and still.json()["client_id"] == "initech"
            )  # the last known answer
            new = _name("new")
            down = await http.post(
                "/api/events/batch",
                json={"events": [{"site_id": remote, "page": "/"}, {"site_id": new, "page": "/"}]},
                headers=ADMIN,
            )
            assert down.status_code == 503 and down.headers["retry-after"] == "5"
            assert new in down.json()["error"]
            single = await http.post("/api/events/", json={"site_id": new, "page": "/"})
            assert single.status_code == 503 and "retry-after" in single.headers
            assert await stored_rows(engine, new) == []
            assert len(await stored_rows(engine, remote)) == 4  # the refused batch stored none of its items

        # a restarted service, the remote still down: the answer stored in site_attribution
        async with service(
            site_authorization="remote",
            pixel_management_url=stub.url,
            site_cache_seconds=60,
            pixel_management_timeout=0.5,
        ) as (_, http):
            again = await http.post("/api/events/", json={"site_id": remote, "page": "/"})
            assert again.status_code == 200 and again.json()["client_id"] == "initech"
            never = await http.post("/api/events/", json={"site_id": _name("never"), "page": "/"})
            assert never.status_code == 503


def test_remote_mode_needs_the_service_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from src.api.config import SettingsError, load_settings

    monkeypatch.setenv("SITE_AUTHORIZATION", "remote")
    monkeypatch.delenv("PIXEL_MANAGEMENT_URL", raising=False)
    with pytest.raises(SettingsError, match="PIXEL_MANAGEMENT_URL"):
        load_settings()
    monkeypatch.setenv("PIXEL_MANAGEMENT_URL", "ftp://x")
    with pytest.raises(SettingsError, match="PIXEL_MANAGEMENT_URL"):
        load_settings()
    monkeypatch.setenv("PIXEL_MANAGEMENT_URL", "https://pixels.example.com/")
    assert load_settings().pixel_management_url == "https://pixels.example.com"
