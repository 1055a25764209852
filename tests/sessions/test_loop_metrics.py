"""The scheduled sessions job reports its runs and its lag to /metrics, as the other jobs do."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.metrics.instruments import JOB_LAG, JOB_RUNS
from src.api.sessions.service import run_session_loop

pytestmark = pytest.mark.anyio


async def test_the_scheduled_job_counts_its_runs_and_sets_its_lag(engine: AsyncEngine) -> None:
    runs = JOB_RUNS.labels("sessions")
    before = runs._value.get()
    loop = asyncio.create_task(run_session_loop(engine, get_settings(), 0.05))
    try:
        for _ in range(400):
            if runs._value.get() >= before + 2:
                break
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert runs._value.get() >= before + 2
    # The scheduled job stays a couple of minutes behind now: its lag is at least that.
    assert JOB_LAG.labels("sessions")._value.get() >= 60
