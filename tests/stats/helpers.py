"""Test data for the stats tests: events made here, posted through the API, and the same rows
kept in Python so that every expected figure is computed by the test itself."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.db.schema import TimescaleInfo
from src.api.rollups.catalogue import CATALOGUE
from src.api.rollups.job import advance_tiers
from tests.events.test_enrichment import AGENTS

PAGES = ["/", "/about", "/pricing", "/blog/a", "/blog/b"]
REFERRERS = ["https://www.google.com/", "https://news.ycombinator.com/item", "", "https://t.co/x"]
TYPES = ["pageview", "pageview", "pageview", "click", "signup"]


@dataclass(frozen=True)
class Made:
    time: datetime
    page: str
    os: str
    browser: str
    device: str
    event_type: str
    referrer_domain: str
    duration: int
    visitor_id: str
    session_id: str
    user_id: str | None


def make_events(
    site: str, start: datetime, hours: float, count: int, seed: int = 1
) -> tuple[list[dict[str, object]], list[Made]]:
    rng = random.Random(seed)
    bodies, made = [], []
    for _ in range(count):
        at = start + timedelta(seconds=rng.randrange(int(hours * 3600)), microseconds=rng.randrange(10**6))
        agent = rng.choice(AGENTS)
        referrer = rng.choice(REFERRERS)
        visitor = f"v{rng.randrange(40)}"
        event = {
            "id": str(uuid.uuid4()),
            "time": at.isoformat(),
            "site_id": site,
            "page": rng.choice(PAGES),
            "user_agent": agent[0],
            "referrer": referrer,
            "event_type": rng.choice(TYPES),
            "duration": rng.randrange(120),
            "visitor_id": visitor,
            "session_id": f"{visitor}-s{rng.randrange(3)}",
            "user_id": f"u{visitor}" if rng.random() < 0.3 else None,
        }
        bodies.append(event)
        made.append(
            Made(
                time=at,
                page=event["page"],
                os=agent[1],
                browser=agent[4],
                device=agent[3],  # type: ignore[arg-type]
                event_type=event["event_type"],
                duration=event["duration"],  # type: ignore[arg-type]
                referrer_domain=referrer.split("/")[2].removeprefix("www.") if referrer else "",
                visitor_id=visitor,
                session_id=event["session_id"],
                user_id=event["user_id"],  # type: ignore[arg-type]
            )
        )
    return bodies, made


async def post_events(client: httpx.AsyncClient, bodies: list[dict[str, object]]) -> None:
    for i in range(0, len(bodies), 5000):
        response = await client.post("/api/events/batch", json={"events": bodies[i : i + 5000]})
        assert response.status_code == 200, response.text
        assert not response.json()["rejected"]


async def settle(engine: AsyncEngine, timescale: TimescaleInfo) -> None:
    """Bring every rollup up to date as its background job would: the rollup job's hourly and
    daily tiers on Apache, the continuous aggregates' refresh on Community."""
    if not timescale.has_continuous_aggregates:
        await advance_tiers(engine)
        return
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for name in CATALOGUE.names:
            await conn.execute(
                text("CALL refresh_continuous_aggregate(CAST(:v AS regclass), NULL, NULL)"), {"v": name}
            )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]
