"""The tracker script (GET /js/script.js): its size and caching in process, and in a real
browser (Debian's Chromium) against a live server: a page of another origin with the snippet
sends page views on load and on client-side navigation, outbound-link clicks, downloads and
custom events (queued before the script loaded) to /collect, and nothing when told not to."""

from __future__ import annotations

import gzip
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from benchmarks.server import running_server
from src.api.tracker.router import SCRIPT
from tests.browser import chromium, static_site

MAX_GZIPPED = 2048


def test_script_is_small() -> None:
    size = len(gzip.compress(SCRIPT, compresslevel=9))
    print(f"\ntracker: {len(SCRIPT)} bytes, {size} bytes gzipped (limit {MAX_GZIPPED})")
    assert size < MAX_GZIPPED


@pytest.mark.anyio
async def test_script_route_caches(client: httpx.AsyncClient) -> None:
    response = await client.get("/js/script.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.content == SCRIPT
    assert "max-age" in response.headers["cache-control"]
    again = await client.get("/js/script.js", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(os.environ["DATABASE_URL"]) as (base, _):
        yield base


def page_html(base: str, site: str, attributes: str = "data-track-localhost data-track-automation") -> str:
    return f"""<!doctype html><html><head><title>shop</title>
<script>
window.analytics = window.analytics || function () {{ (window.analytics.q = window.analytics.q || []).push(arguments); }};
analytics("early_signup", {{plan: "pro"}});
</script>
<script defer data-site="{site}" {attributes} src="{base}/js/script.js"></script>
</head><body>
<a id="out" href="https://partner.example/offer?x=1">partner</a>
<a id="file" href="/files/report.pdf">report</a>
<a id="internal" href="#section">section</a>
</body></html>"""


def stored(site: str, expected: int, within: float = 15.0) -> list[dict[str, Any]]:
    """The site's events once `expected` have arrived (or whatever did within `within` s)."""
    engine = create_engine(os.environ["DATABASE_URL"])
    deadline = time.monotonic() + within
    try:
        while True:
            with engine.connect() as conn:
                rows = [
                    dict(r._mapping)
                    for r in conn.execute(
                        text(
                            "SELECT event_type, page, url, referrer, referrer_domain, properties,"
                            " visitor_id, session_id, user_agent, browser FROM event"
                            " WHERE site_id = :site ORDER BY time, event_type"
                        ),
                        {"site": site},
                    )
                ]
            if len(rows) >= expected or time.monotonic() > deadline:
                return rows
            time.sleep(0.2)
    finally:
        engine.dispose()


def test_tracker_in_a_browser(server: str, tmp_path: Path) -> None:
    site = f"tracker-{uuid.uuid4().hex[:8]}"
    (tmp_path / "shop.html").write_text(page_html(server, site))
    with static_site(tmp_path) as origin, chromium() as browser:
        context = browser.new_context()  # type: ignore[attr-defined]
        page = context.new_page()
        requests: list[Any] = []
        page.on("request", lambda r: requests.append(r) if "/collect" in r.url else None)
        page.route("https://partner.example/**", lambda route: route.fulfill(body="partner site"))
        page.goto(f"{origin}/shop.html?utm_source=newsletter", referer="https://news.example.org/post/1")
        page.wait_for_function("typeof window.analytics === 'function' && !window.analytics.q")
        page.evaluate("history.pushState({}, '', '/products/42')")
        page.evaluate("location.hash = 'reviews'")
        page.wait_for_timeout(100)
        page.evaluate("history.back()")  # popstate (and a hashchange) back to /products/42
        page.wait_for_timeout(100)
        page.evaluate("analytics('purchase', {amount: 42, currency: 'EUR'})")
        page.click("#file", modifiers=["Alt"])  # Alt: Chromium downloads instead of navigating
        page.click("#out")
        page.wait_for_url("https://partner.example/**")
        assert context.cookies() == []
        context.close()
    rows = stored(site, 8)
    kinds = [r["event_type"] for r in rows]
    assert sorted(kinds) == sorted(
        [
            "early_signup",
            "pageview",
            "pageview",
            "pageview",
            "pageview",
            "purchase",
            "file_download",
            "outbound_link",
        ]
    ), kinds
    pageviews = [r for r in rows if r["event_type"] == "pageview"]
    assert [r["page"] for r in pageviews] == ["/shop.html", "/products/42", "/products/42", "/products/42"]
    assert pageviews[0]["url"] == f"{origin}/shop.html?utm_source=newsletter"
    assert pageviews[2]["url"] == f"{origin}/products/42#reviews"
    # The first landing's referrer stays the page's (document.referrer), through navigation.
    assert {r["referrer"] for r in rows} == {"https://news.example.org/post/1"}
    assert {r["referrer_domain"] for r in rows} == {"news.example.org"}
    by_kind = {r["event_type"]: r for r in rows}
    assert by_kind["early_signup"]["properties"] == {"plan": "pro"}
    assert by_kind["purchase"]["properties"] == {"amount": 42, "currency": "EUR"}
    assert by_kind["outbound_link"]["properties"] == {"url": "https://partner.example/offer?x=1"}
    assert by_kind["file_download"]["properties"] == {"url": f"{origin}/files/report.pdf"}
    # No identity from the browser: the service derives the visitor from address + User-Agent.
    assert {r["visitor_id"] for r in rows} == {None} and {r["session_id"] for r in rows} == {None}
    assert all(r["browser"] for r in rows)
    # text/plain bodies: no CORS preflight was needed, none was sent.
    assert requests and {r.method for r in requests} == {"POST"}
    assert all(r.headers.get("content-type", "").startswith("text/plain") for r in requests)


def test_tracker_stays_quiet_when_told(server: str, tmp_path: Path) -> None:
    """On localhost, in an automated browser, or opted out, nothing is sent."""
    quiet = {
        "localhost": f"quiet-{uuid.uuid4().hex[:6]}",
        "automation": f"quiet-{uuid.uuid4().hex[:6]}",
        "opted-out": f"quiet-{uuid.uuid4().hex[:6]}",
        "control": f"quiet-{uuid.uuid4().hex[:6]}",
    }
    (tmp_path / "localhost.html").write_text(page_html(server, quiet["localhost"], "data-track-automation"))
    (tmp_path / "automation.html").write_text(page_html(server, quiet["automation"], "data-track-localhost"))
    (tmp_path / "opted-out.html").write_text(page_html(server, quiet["opted-out"]))
    (tmp_path / "control.html").write_text(page_html(server, quiet["control"]))
    with static_site(tmp_path) as origin, chromium() as browser:
        page = browser.new_page()  # type: ignore[attr-defined]
        for name in ("localhost", "automation"):
            page.goto(f"{origin}/{name}.html")
            page.wait_for_function("typeof window.analytics === 'function' && !window.analytics.q")
        page.evaluate("localStorage.setItem('analytics_ignore', 'true')")
        page.goto(f"{origin}/opted-out.html")
        page.wait_for_function("typeof window.analytics === 'function' && !window.analytics.q")
        page.evaluate("analytics('clicked')")
        page.evaluate("localStorage.removeItem('analytics_ignore')")
        page.goto(f"{origin}/control.html")  # sent last: once it is stored, the others had their chance
        page.wait_for_function("typeof window.analytics === 'function' && !window.analytics.q")
    assert len(stored(quiet["control"], 2)) == 2  # its page view and the queued early event
    for name in ("localhost", "automation", "opted-out"):
        assert stored(quiet[name], 1, within=0.5) == [], name


def test_data_api_overrides_the_endpoint(server: str, tmp_path: Path) -> None:
    """The script served from the site's own origin, the events sent where data-api says (the
    default, that origin's /collect, would be refused by the static server)."""
    site = f"tracker-api-{uuid.uuid4().hex[:8]}"
    (tmp_path / "script.js").write_bytes(SCRIPT)
    html = page_html(server, site, f'data-api="{server}/collect" data-track-localhost data-track-automation')
    (tmp_path / "own.html").write_text(html.replace(f'src="{server}/js/script.js"', 'src="/script.js"'))
    with static_site(tmp_path) as origin, chromium() as browser:
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(f"{origin}/own.html")
        page.wait_for_function("typeof window.analytics === 'function' && !window.analytics.q")
    rows = stored(site, 2)
    assert sorted(r["event_type"] for r in rows) == ["early_signup", "pageview"]
