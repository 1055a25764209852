"""The dashboard: served by the app from its own files (no CDN), and in a real browser (Debian's
Chromium) against a live server holding a known data set: it shows the stats API's numbers,
draws its graph, filters when a row is clicked, keeps its state in the URL through a reload,
and asks for an API key when keys are configured. The run saves a screenshot
(.data/screenshots/dashboard.png)."""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest

from benchmarks.server import running_server
from src.api.config import get_settings
from src.api.dashboard.router import STATIC_DIR
from tests.browser import SCREENSHOTS, chromium
from tests.dashboard.dataset import known_events, utc_midnight

DAYS = 14
PANELS = ("page", "referrer_domain", "os", "browser", "device")


@pytest.mark.anyio
async def test_root_keeps_its_shape(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).json() == {"hello": "world"}


@pytest.mark.anyio
async def test_pages_and_files_come_from_the_app(client: httpx.AsyncClient) -> None:
    for path, site in (("/dashboard", ""), ("/dashboard/shop.example", "shop.example")):
        response = await client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert f'"site_id": "{site}"' in response.text
        sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
        assert sources and all(s.startswith("/dashboard") or s.startswith("data:") for s in sources), sources
        for source in sources:
            if source.startswith("/dashboard/static/"):
                file = await client.get(source)
                assert file.status_code == 200, source
                assert "immutable" in file.headers["cache-control"]
    assert (await client.get("/dashboard/static/old-version/dashboard.js")).status_code == 404
    licence = (STATIC_DIR / "vendor/uplot/LICENSE").read_text()
    assert "MIT" in licence
    # Nothing is loaded from elsewhere: no absolute URL in what the page's own code fetches.
    script = (STATIC_DIR / "dashboard.js").read_text()
    assert not re.search(r"https?://", script)


@pytest.mark.anyio
async def test_a_site_id_cannot_inject_markup(client: httpx.AsyncClient) -> None:
    hostile = "<img src=x onerror=alert(1)>'\""
    response = await client.get(f"/dashboard/{quote(hostile, safe='')}")
    assert response.status_code == 200
    assert "<img" not in response.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in response.text  # the title, escaped
    assert "\\u003cimg" in response.text  # the script's configuration, JSON-escaped


@pytest.mark.anyio
async def test_stats_need_a_key_when_keys_are_set(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyed = dataclasses.replace(get_settings(), api_keys=("stats-key",))
    monkeypatch.setattr("src.api.auth.dependencies.get_settings", lambda: keyed)
    assert (await client.get("/api/stats/summary")).status_code == 401
    assert (await client.get("/api/stats/summary", headers={"X-API-Key": "wrong"})).status_code == 401
    assert (await client.get("/api/stats/summary", headers={"X-API-Key": "stats-key"})).status_code == 200
    assert (await client.get("/dashboard")).status_code == 200  # the page itself is public


# --- in a browser ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Live:
    base: str
    site: str
    first: str  # the range shown: DAYS days
    last: str


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    site = f"dash-{uuid.uuid4().hex[:8]}.example"
    start = utc_midnight(2 * DAYS + 3)
    # Twice the range: the period before the one shown has data too, for the changes.
    events = known_events(site, start, 2 * DAYS, visitors=150)
    with running_server(os.environ["DATABASE_URL"]) as (base, _):
        for n in range(0, len(events), 2000):
            response = httpx.post(
                f"{base}/api/events/batch", json={"events": events[n : n + 2000]}, timeout=60
            )
            assert response.json()["accepted"] == len(events[n : n + 2000])
        first = (start + timedelta(days=DAYS)).date().isoformat()
        last = (start + timedelta(days=2 * DAYS - 1)).date().isoformat()
        yield Live(base, site, first, last)


def stats(
    live: Live, route: str, tz: str = "UTC", first: str | None = None, last: str | None = None, **params: Any
) -> Any:
    end = (date.fromisoformat(last or live.last) + timedelta(days=1)).isoformat()
    query = {
        "site_id": live.site,
        "from": f"{first or live.first}T00:00:00",
        "to": f"{end}T00:00:00",
        "tz": tz,
    }
    response = httpx.get(f"{live.base}/api/stats/{route}", params={**query, **params})
    assert response.status_code == 200, response.text
    return response.json()


def shown_stat(page: Any, name: str) -> float:
    return float(page.get_attribute(f"#stat-{name} .value", "data-value"))


def check_numbers(page: Any, live: Live, tz: str = "UTC", filters: dict[str, str] | None = None) -> None:
    filters = filters or {}
    summary = stats(live, "summary", tz, **filters)
    assert shown_stat(page, "visitors") == summary["visitors"]
    assert shown_stat(page, "pageviews") == summary["pageviews"]
    # With sessions (issue 18) the summary has visit_duration, which the page shows instead.
    duration = "visit_duration" if "visit_duration" in summary else "avg_duration"
    if summary[duration] is not None:
        assert shown_stat(page, duration) == pytest.approx(summary[duration])
    for dimension in PANELS:
        rows = stats(
            live, "breakdown", tz, dimension=dimension, metrics="visitors,pageviews", limit=10, **filters
        )
        table = f".panel[data-dimension={dimension}] tr.row"
        shown = page.eval_on_selector_all(
            table,
            "rows => rows.map(r => [r.dataset.value, r.querySelector('[data-metric=visitors]').textContent,"
            " r.querySelector('[data-metric=pageviews]').textContent])",
        )
        expected = [
            [str(r[dimension] or ""), f"{r['visitors']:,}", f"{r['pageviews']:,}"] for r in rows["rows"]
        ]
        assert shown == expected, dimension


def loaded(page: Any) -> None:
    page.wait_for_selector("body[data-loaded=true]", timeout=20_000)


def test_dashboard_in_a_browser(live: Live) -> None:
    url = (
        f"{live.base}/dashboard/{quote(live.site)}?period=custom&from={live.first}&to={live.last}"
        "&interval=day&tz=UTC"
    )
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})  # type: ignore[attr-defined]
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        loaded(page)
        check_numbers(page, live)
        # The change against the 14 days before.
        shown_first = date.fromisoformat(live.first)
        before = stats(
            live,
            "summary",
            first=(shown_first - timedelta(days=DAYS)).isoformat(),
            last=(shown_first - timedelta(days=1)).isoformat(),
        )
        now = stats(live, "summary")
        change = round(100 * (now["visitors"] - before["visitors"]) / before["visitors"])
        assert int(page.get_attribute("#stat-visitors .change", "data-change")) == change
        change = round(100 * (now["pageviews"] - before["pageviews"]) / before["pageviews"])
        assert change != 0 and int(page.get_attribute("#stat-pageviews .change", "data-change")) == change
        # The graph: one point per day, drawn on a canvas, the same visitors as the timeseries.
        series = stats(live, "timeseries", interval="1 day", metrics="visitors,pageviews", fill="true")
        assert page.get_attribute("#chart", "data-points") == str(DAYS) == str(len(series["rows"]))
        assert page.get_attribute("#chart", "data-visitors") == str(
            sum(r["visitors"] for r in series["rows"])
        )
        assert page.locator("#chart canvas").count() == 1
        assert page.eval_on_selector("#chart canvas", "c => c.width") > 300
        realtime = httpx.get(f"{live.base}/api/stats/realtime", params={"site_id": live.site}).json()
        assert page.get_attribute("#realtime b", "data-value") == str(realtime["visitors"])
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"\ndashboard screenshot: {shot}")

        # Clicking a row filters the whole page by it, and the URL says so.
        row = page.locator(".panel[data-dimension=page] tr.row").nth(1)
        chosen = row.get_attribute("data-value")
        row.click()
        page.wait_for_function("location.search.includes('page=')")
        loaded(page)
        assert parse_qs(urlsplit(page.url).query)["page"] == [chosen]
        check_numbers(page, live, filters={"page": chosen})
        assert page.locator("#filters [data-filter=page]").count() == 1
        browser_row = page.locator(".panel[data-dimension=browser] tr.row").first
        picked_browser = browser_row.get_attribute("data-value")
        browser_row.click()
        page.wait_for_function("location.search.includes('browser=')")
        loaded(page)
        check_numbers(page, live, filters={"page": chosen, "browser": picked_browser})

        # A reload of that URL shows the same view.
        shared = page.url
        page.reload()
        loaded(page)
        assert page.url == shared
        check_numbers(page, live, filters={"page": chosen, "browser": picked_browser})
        # Back: one filter fewer.
        page.go_back()
        loaded(page)
        check_numbers(page, live, filters={"page": chosen})

        # Another zone: the days are Kathmandu's.
        page.goto(url.replace("tz=UTC", "tz=Asia/Kathmandu"))
        loaded(page)
        check_numbers(page, live, tz="Asia/Kathmandu")
        assert page.input_value("#tz") == "Asia/Kathmandu"
        assert errors == []


def test_dashboard_asks_for_a_key() -> None:
    keyed = running_server(os.environ["DATABASE_URL"], extra_env={"API_KEYS": "dash-key-1"})
    with keyed as (base, _), chromium() as browser:
        page = browser.new_page()  # type: ignore[attr-defined]
        page.goto(f"{base}/dashboard")
        page.wait_for_selector("#key-form:not([hidden])")
        assert page.is_hidden("#main")
        page.fill("#key", "not-the-key")
        page.click("#key-form button")
        page.wait_for_function("document.getElementById('key-error').textContent.includes('refused')")
        assert page.is_visible("#key-form")
        page.fill("#key", "dash-key-1")
        page.click("#key-form button")
        loaded(page)
        assert page.is_hidden("#key-form")
        assert page.evaluate("localStorage.getItem('analytics_api_key')") == "dash-key-1"
        page.reload()  # the key is kept in this browser
        loaded(page)
        assert page.is_hidden("#key-form")


def test_ranges_and_intervals_from_the_controls(live: Live) -> None:
    """Each range of the picker asks for the days it names (in the page's zone), the interval
    picker changes the graph's buckets, and both land in the URL."""
    today = utc_midnight(0).date()
    month_start = today.replace(day=1)
    expected = {
        "today": (today, today),
        "7d": (today - timedelta(days=6), today),
        "30d": (today - timedelta(days=29), today),
        "month": (month_start, (month_start + timedelta(days=32)).replace(day=1) - timedelta(days=1)),
    }
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})  # type: ignore[attr-defined]
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{live.base}/dashboard/{quote(live.site)}?tz=UTC")
        loaded(page)
        for period, (first, last) in expected.items():
            page.select_option("#period", period)
            page.wait_for_function(f"location.search.includes('period={period}')")
            loaded(page)
            summary = stats(live, "summary", first=first.isoformat(), last=last.isoformat())
            assert shown_stat(page, "visitors") == summary["visitors"], period
            assert shown_stat(page, "pageviews") == summary["pageviews"], period
            points = int(page.get_attribute("#chart", "data-points"))
            assert points == (24 if period == "today" else (last - first).days + 1), period
        page.select_option("#period", "30d")
        loaded(page)
        page.select_option("#interval", "week")
        page.wait_for_function("location.search.includes('interval=week')")
        loaded(page)
        weeks = stats(
            live,
            "timeseries",
            first=expected["30d"][0].isoformat(),
            last=today.isoformat(),
            interval="1 week",
            metrics="visitors,pageviews",
            fill="true",
        )
        assert page.get_attribute("#chart", "data-points") == str(len(weeks["rows"]))
        assert page.get_attribute("#chart", "data-visitors") == str(sum(r["visitors"] for r in weeks["rows"]))
        assert errors == []
