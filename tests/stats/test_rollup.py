from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.db.schema import TimescaleInfo
from tests.stats.helpers import make_events, post_events, settle

pytestmark = pytest.mark.anyio

COMPARE = """
SELECT r.bucket, r.page, r.os, r.events, r.duration_sum, r.duration_count, e.events AS raw_events,
       e.duration_sum AS raw_sum, e.duration_count AS raw_count
FROM (SELECT * FROM event_rollup_15m WHERE site_id = :site AND events > 0) r
FULL JOIN (
    SELECT time_bucket(INTERVAL '15 minutes', time) AS bucket, site_id, event_type, page, os, browser,
           device, referrer_domain, count(*) AS events, sum(duration) AS duration_sum, count(duration) AS duration_count
    FROM event WHERE site_id = :site AND time > now() - interval '60 days'
    GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
) e USING (bucket, site_id, event_type, page, os, browser, device, referrer_domain)
WHERE r.events IS DISTINCT FROM e.events OR r.duration_sum IS DISTINCT FROM e.duration_sum
   OR r.duration_count IS DISTINCT FROM e.duration_count
"""


async def mismatches(engine: AsyncEngine, site: str) -> list[object]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(COMPARE), {"site": site}))


async def test_rollup_equals_a_full_scan_after_duplicates_backfills_and_deletes(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    site = f"roll-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=20)
    bodies, _ = make_events(site, start, 48, 800, seed=5)
    await post_events(client, bodies)
    # Retries of the same events (duplicates) and late backfills into old buckets.
    await post_events(client, bodies[:300])
    late, _ = make_events(site, start, 48, 200, seed=6)
    await post_events(client, late)
    for body in bodies[:25]:
        assert (await client.delete(f"/api/events/{body['id']}")).status_code == 200
    await settle(engine, timescale)
    assert await mismatches(engine, site) == []
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM event WHERE site_id = :s AND time > now() - interval '60 days'"),
                {"s": site},
            )
        ).scalar_one()
        rolled = (
            await conn.execute(
                text("SELECT sum(events) FROM event_rollup_15m WHERE site_id = :s"), {"s": site}
            )
        ).scalar_one()
    assert stored == rolled == 800 + 200 - 25
