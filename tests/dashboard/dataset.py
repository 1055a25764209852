"""A known, varied data set for the dashboard tests and its screenshot: page views over a range
of days from a few hundred visitors, with pages, referrers and User-Agents drawn from a seeded
random generator (the same events every run)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

PAGES = ["/", "/pricing", "/blog", "/blog/launch", "/docs", "/docs/install", "/about", "/contact"]
REFERRERS = [
    None,
    None,
    "https://www.google.com/search?q=analytics",
    "https://news.ycombinator.com/item?id=1",
    "https://github.com/example/repo",
    "https://duckduckgo.com/",
    "https://t.co/abc",
]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
]


def known_events(
    site: str, first_day: datetime, days: int, visitors: int = 300, seed: int = 17
) -> list[dict[str, Any]]:
    """Page views on `days` days from `first_day` (UTC midnight); more on weekdays, a growing trend."""
    rng = random.Random(f"{site}:{seed}")  # the same events for a site every run; ids unique per site
    people = [(f"visitor-{n}", rng.choice(USER_AGENTS), rng.choice(REFERRERS)) for n in range(visitors)]
    events: list[dict[str, Any]] = []
    for day in range(days):
        start = first_day + timedelta(days=day)
        weekday = start.weekday() < 5
        count = int((40 + 3 * day) * (1.3 if weekday else 0.7))
        for _ in range(count):
            visitor, agent, referrer = rng.choice(people)
            at = start + timedelta(seconds=rng.randrange(86400))
            events.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "time": at.isoformat(),
                    "site_id": site,
                    "page": rng.choice(PAGES),
                    "referrer": referrer,
                    "user_agent": agent,
                    "visitor_id": visitor,
                    "duration": rng.randrange(5, 300),
                }
            )
    return events


def utc_midnight(days_ago: int) -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) - timedelta(days=days_ago)


if __name__ == "__main__":  # python -m tests.dashboard.dataset http://127.0.0.1:8002 [site]: 30 days of it
    import sys

    import httpx

    base, site = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "example.com")
    events = known_events(site, utc_midnight(29), 30)
    for start in range(0, len(events), 2000):
        httpx.post(f"{base}/api/events/batch", json={"events": events[start : start + 2000]}, timeout=60)
    print(f"{len(events)} events for {site}: {base}/dashboard/{site}")
