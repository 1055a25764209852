"""The scheduled sessions job reports its runs and its lag to /metrics, as the other jobs do."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.metrics.instruments import JOB_LAG, JOB_RUNS
from src.api.sessions.service import scheduled_turn

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fresh_sessions")]


async def test_a_scheduled_turn_counts_its_run_and_sets_its_lag(engine: AsyncEngine) -> None:
    runs = JOB_RUNS.labels("sessions")
    before = runs._value.get()
    result = await scheduled_turn(engine, get_settings())
    assert result is not None
    assert runs._value.get() == before + 1
    # The scheduled job stays a couple of minutes behind now: its lag is at least that.
    assert JOB_LAG.labels("sessions")._value.get() >= 60
