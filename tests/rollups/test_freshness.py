"""How far each tier answers (src/api/rollups/freshness.py): on Community, up to its
aggregates' materialisation watermark, so no question aggregates a coarse aggregate's raw
events; the finer tiers and the 15-minute aggregate answer the rest, exactly."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.db.schema import TimescaleInfo
from src.api.rollups import freshness
from src.api.rollups.catalogue import CATALOGUE
from tests.conftest import requires_community
from tests.stats.helpers import make_events, post_events, settle

pytestmark = pytest.mark.anyio


async def test_community_tiers_answer_up_to_their_materialisation_watermark(
    client: httpx.AsyncClient, engine: AsyncEngine, timescale: TimescaleInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    requires_community(timescale)
    monkeypatch.setattr(freshness, "_marks", None)  # nothing cached from another test
    site = f"fresh-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    bodies, _ = make_events(site, now - timedelta(days=3), 3 * 24, 400, seed=41)
    await post_events(client, bodies)
    await settle(engine, timescale)
    monkeypatch.setattr(freshness, "_marks", None)
    async with AsyncSession(engine) as session:
        marks, _ = await freshness.state(session, timescale, now - timedelta(days=3), now)
    assert set(marks) == {tier.name for tier in CATALOGUE.tiers}
    for name, mark in marks.items():
        assert mark is not None and mark != freshness.ALWAYS, name
        assert mark <= now + timedelta(days=1), name  # a bucket's end at most
    # Every question over the range still answers what raw events do.
    params = {
        "site_id": site,
        "from": (now - timedelta(days=3)).isoformat(),
        "to": now.isoformat(),
        "interval": "1 day",
        "group_by": "page",
        "tz": "Asia/Kathmandu",
    }
    answers = [
        (await client.get("/api/stats/timeseries", params={**params, "source": source})).json()
        for source in ("auto", "raw")
    ]
    assert answers[0]["source"].startswith("rollup")
    assert answers[0]["rows"] == answers[1]["rows"]
