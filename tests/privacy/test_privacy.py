"""Privacy levels: with `hashed` no raw IP reaches the table on any ingest route and visitors
still count within a day; with `strict` no redacted value does either. Checked by searching the
stored rows' every column, not by reading the one column the code writes."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.imports.reader import EventFile
from src.api.imports.service import ImportOptions, import_records
from src.api.privacy.redaction import REDACTED, redact_url, redact_value
from src.api.privacy.salts import DailySalts
from src.api.privacy.service import apply_privacy, visitor_hash
from tests.sites.helpers import ADMIN, add_site, service, stored_rows

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_sites")]

IP = "198.51.100.77"
AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
# Forwarded by a trusted proxy: the tests' peer is 10.0.0.2 (private network, trusted).
HEADERS = {"x-forwarded-for": IP, "user-agent": AGENT}
SECRETS = ("bob@acme.example", "+44 20 7946 0958", "4111 1111 1111 1111", "s3cr3t-t0ken", "hunter2", "k-123")
EMAIL, PHONE, CARD, TOKEN, PASSWORD, KEY = SECRETS


def _name(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}.example.com"


def _bodies(site: str) -> list[tuple[str, dict[str, object]]]:
    url = f"https://{site}/checkout?email={EMAIL}&token={TOKEN}&q=shoes"
    properties = {
        "note": f"call {PHONE}",
        "card": f"pay with {CARD}",
        "password": PASSWORD,
        "nested": [{"api_key": KEY}],
    }
    event = {
        "site_id": site,
        "url": url,
        "referrer": f"https://mail.example/?auth={TOKEN}",
        "properties": properties,
    }
    return [
        ("/api/events/", {**event}),
        ("/api/events/", {**event, "duration": 1.0}),  # through pydantic
        ("/api/events/batch", {"events": [event, {**event, "page": f"/u/{EMAIL}"}]}),
        ("/collect", {"siteId": site, "eventType": "pageview", "url": url, "eventData": properties}),
        ("/event", {"site_id": site, "event_type": "signup", "path": f"/welcome?password={PASSWORD}"}),
        (
            "/events",
            {
                "events": [
                    {
                        "event_id": str(uuid.uuid4()),
                        "occurred_at": datetime.now(UTC).isoformat(),
                        "site_id": site,
                        "properties": properties,
                    }
                ]
            },
        ),
    ]


async def _post_everywhere(http: httpx.AsyncClient, site: str) -> int:
    count = 0
    for path, body in _bodies(site):
        answer = await http.post(path, json=body, headers={**HEADERS, **ADMIN})
        assert answer.status_code == 200, (path, answer.text)
        assert IP not in answer.text, path
        events = body.get("events")
        count += len(events) if isinstance(events, list) else 1
    return count


async def test_hashed_stores_no_ip_and_counts_visitors_within_the_day(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    site, other = _name("hashed"), _name("hashed-too")
    async with service(site_authorization="registry") as (app, _):
        transport = httpx.ASGITransport(app=app, client=("10.0.0.2", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            await add_site(http, site, "acme", privacy_level="hashed")
            await add_site(http, other, "acme", privacy_level="hashed")
            count = await _post_everywhere(http, site)
            # A trusted sender's body ip_address is dropped as well.
            claimed = await http.post(
                "/api/events/", json={"site_id": site, "page": "/", "ip_address": "192.0.2.55"}, headers=ADMIN
            )
            assert claimed.status_code == 200
            await http.post("/api/events/", json={"site_id": other, "page": "/"}, headers=HEADERS)
            rows = await stored_rows(engine, site)
            assert len(rows) == count + 1
            for row in rows:
                assert row["ip_address"] is None
                assert IP not in str(row) and "192.0.2.55" not in str(row)
            visitors = {r["visitor_id"] for r in rows if r["user_agent"] == AGENT}
            assert len(visitors) == 1 and len(next(iter(visitors))) == 32  # one visitor, by hash
            # the hash is per site: the same address on another site is another visitor
            assert (await stored_rows(engine, other))[0]["visitor_id"] not in visitors
            summary = await http.get("/api/stats/summary", params={"site_id": site}, headers=ADMIN)
            assert (
                summary.json()["visitors"] == 2
            )  # the forwarded browser, and the trusted sender's agentless event
            # privacy does not touch what it must not: hashed keeps URLs as sent
            assert any(TOKEN in (r["url"] or "") for r in rows)
            # a refused event of the same visitor is logged by site and reason, not by address
            refused = await http.post(
                "/api/events/", json={"site_id": "unknown.example", "page": "/"}, headers=HEADERS
            )
            assert refused.status_code == 403
    assert "unknown.example" in caplog.text and IP not in caplog.text


async def test_strict_redacts_before_storage_on_every_route(engine: AsyncEngine) -> None:
    site = _name("strict")
    async with service(site_authorization="off", default_privacy_level="strict") as (_, http):
        count = await _post_everywhere(http, site)
        rows = await stored_rows(engine, site)
        assert len(rows) == count
        for row in rows:
            stored = str(row)
            for secret in (IP, *SECRETS):
                assert secret not in stored, (secret, row)
            assert row["client_id"] is None  # authorization is off: strict comes from DEFAULT_PRIVACY_LEVEL
        assert any(REDACTED in (r["url"] or "") and "q=shoes" in r["url"] for r in rows)
        assert any(r["page"] == f"/u/{REDACTED}" for r in rows)


def test_redaction_keeps_what_is_not_personal() -> None:
    assert (
        redact_url("/p?email=a&token=b&api_key=c&q=1")
        == f"/p?email={REDACTED}&token={REDACTED}&api_key={REDACTED}&q=1"
    )
    assert (
        redact_url("/orders/2026-12-01?ts=1764590000000&price=19.99")
        == "/orders/2026-12-01?ts=1764590000000&price=19.99"
    )
    assert redact_url("/card/4111-1111-1111-1111") == f"/card/{REDACTED}"
    assert redact_url("/card/4111-1111-1111-1112") == "/card/4111-1111-1111-1112"  # fails Luhn
    assert redact_value({"a": ["x@y.io", 3, {"secret": "s", "ok": "fine"}]}) == {
        "a": [REDACTED, 3, {"secret": REDACTED, "ok": "fine"}]
    }


def test_apply_privacy_is_a_pure_function_for_exports() -> None:
    event = {
        "site_id": "s",
        "ip_address": IP,
        "user_agent": AGENT,
        "visitor_id": None,
        "user_id": None,
        "url": f"/?email={EMAIL}",
        "page": "/",
        "referrer": None,
        "description": f"by {EMAIL}",
        "properties": {"e": EMAIL},
    }
    assert apply_privacy(event, "standard") == event
    hashed = apply_privacy(event, "hashed", salt=b"x" * 32)
    assert hashed["ip_address"] is None and hashed["visitor_id"] == visitor_hash(b"x" * 32, "s", IP, AGENT)
    assert hashed["url"] == event["url"] and event["ip_address"] == IP  # a copy; the input is untouched
    strict = apply_privacy(event, "strict")
    assert strict["ip_address"] is None and strict["visitor_id"] is None  # no salt: no hash, address dropped
    assert EMAIL not in str(strict)


async def test_salts_rotate_daily_and_keep_only_today_and_yesterday(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE privacy_salt"))
    day = datetime(2026, 12, 1, 12, tzinfo=UTC)
    first = DailySalts(engine)
    await first.ready(day)
    same = DailySalts(engine)  # another process
    await same.ready(day)
    assert first.salt_for(day, day) == same.salt_for(day, day)
    yesterday = day - timedelta(days=1)
    assert first.salt_for(yesterday, day) != first.salt_for(day, day)
    assert first.salt_for(day - timedelta(days=5), day) == first.salt_for(day, day)  # older: today's
    later = DailySalts(engine)
    await later.ready(day + timedelta(days=2))
    async with engine.connect() as conn:
        days = sorted(r[0] for r in await conn.execute(text("SELECT day FROM privacy_salt")))
    assert days == [(day + timedelta(days=1)).date(), (day + timedelta(days=2)).date()]
    assert later.salt_for(day + timedelta(days=2), day + timedelta(days=2)) != first.salt_for(day, day)


async def test_imports_apply_site_authorization_and_privacy(engine: AsyncEngine, tmp_path: Path) -> None:
    site, stranger = _name("imported"), _name("not-registered")
    lines = [
        {
            "site_id": site,
            "time": "2026-11-20T10:00:00Z",
            "url": f"https://{site}/?email={EMAIL}",
            "ip_address": IP,
            "user_agent": AGENT,
        },
        {"site_id": stranger, "time": "2026-11-20T10:00:01Z", "page": "/", "ip_address": IP},
    ]
    path = tmp_path / "events.ndjson"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    async with service(site_authorization="registry") as (app, http):
        await add_site(http, site, "acme", privacy_level="strict")
        with EventFile(path, None) as events:
            report = await import_records(events.records(), app.state.ingest, ImportOptions())
    assert (report.counts.accepted, report.counts.rejected) == (1, 1)
    assert report.first_rejects[0].line == 2 and "not registered" in report.first_rejects[0].errors[0].message
    (row,) = await stored_rows(engine, site)
    assert row["client_id"] == "acme" and row["ip_address"] is None and len(row["visitor_id"]) == 32
    assert EMAIL not in str(row) and IP not in str(row)
    assert await stored_rows(engine, stranger) == []
