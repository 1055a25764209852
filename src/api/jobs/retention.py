"""Retention: how far back events are kept (EVENTS_RETENTION) and the job that drops older chunks.

Community edition: a TimescaleDB retention policy. Apache edition: the service runs
`drop_chunks` itself on a schedule (one worker at a time, under an advisory lock)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.events.models import ROLLUPS
from src.api.stats.params import parse_interval

log = logging.getLogger(__name__)
_RETENTION_LOCK_KEY = 0x52455445  # "RETE"


def retention_period() -> timedelta:
    interval = parse_interval(get_settings().events_retention, "EVENTS_RETENTION")
    return timedelta(seconds=interval.approx_seconds())


def retention_cutoff(now: datetime) -> datetime:
    """Oldest time that may still hold events, with a day of slack for chunk boundaries."""
    return now - retention_period() - timedelta(days=1)


async def drop_old_chunks(engine: AsyncEngine) -> int:
    """Drop event and rollup chunks entirely older than the retention; returns chunks dropped."""
    retention = get_settings().events_retention
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        lock = await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _RETENTION_LOCK_KEY})
        locked = lock.scalar()
        if not locked:
            return 0
        try:
            dropped = 0
            for table in ("event", *ROLLUPS):
                exists = (
                    await conn.execute(
                        text("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = :t"),
                        {"t": table},
                    )
                ).first()
                if exists is None:
                    continue
                result = await conn.execute(
                    text(
                        "SELECT drop_chunks(CAST(:t AS regclass), older_than => now() - CAST(:r AS interval))"
                    ),
                    {"t": table, "r": retention},
                )
                dropped += len(result.fetchall())
            return dropped
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _RETENTION_LOCK_KEY})


async def run_retention_loop(engine: AsyncEngine, every: float) -> None:
    while True:
        try:
            dropped = await drop_old_chunks(engine)
            if dropped:
                log.info("retention dropped_chunks=%d", dropped)
        except (DBAPIError, OSError) as exc:
            log.warning("retention run failed: %s", type(exc).__name__)
        await asyncio.sleep(every)
