"""Retention: the job that drops chunks older than EVENTS_RETENTION (parsed in the settings).

Community edition: a TimescaleDB retention policy. Apache edition: the service runs
`drop_chunks` itself on a schedule (one worker at a time, under an advisory lock).
`EVENTS_RETENTION=off` keeps everything: no policy, no job."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from src.api.config import get_settings
from src.api.metrics import instruments as metrics
from src.api.rollups import activity, pages
from src.api.rollups.catalogue import CATALOGUE

log = logging.getLogger(__name__)
_RETENTION_LOCK_KEY = 0x52455445  # "RETE"


async def drop_old_chunks(engine: AsyncEngine) -> int:
    """Drop event and rollup chunks entirely older than the retention (on Community its policies
    do too: dropping twice is harmless) and trim the activity tables; returns chunks dropped."""
    retention = get_settings().events_retention
    if retention is None:
        return 0
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        lock = await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _RETENTION_LOCK_KEY})
        locked = lock.scalar()
        if not locked:
            return 0
        try:
            dropped = 0
            for table in ("event", *CATALOGUE.names):
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
                    {"t": table, "r": retention.sql},
                )
                dropped += len(result.fetchall())
            async with engine.begin() as transaction:  # trim takes the fold's transaction lock
                await trim_activity(transaction)
            return dropped
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _RETENTION_LOCK_KEY})


async def trim_activity(conn: AsyncConnection) -> None:
    """Inside a transaction: activity forgets the days before the oldest event left (retention drops whole
    chunks, so that is the day the raw events, and so every answer, start)."""
    oldest = (await conn.execute(text("SELECT min(time) FROM event"))).scalar()
    day = int(oldest.timestamp() // 86400) if oldest is not None else None
    if day is None:
        return
    await activity.trim(conn, day)
    await activity.trim(conn, day, pages.TRIM_SQL)


async def run_retention_loop(engine: AsyncEngine, every: float) -> None:
    while True:
        try:
            with metrics.job_run("retention"):
                dropped = await drop_old_chunks(engine)
            if dropped:
                log.info("retention dropped_chunks=%d", dropped)
        except (DBAPIError, OSError) as exc:
            log.warning("retention run failed: %s", type(exc).__name__)
        await asyncio.sleep(every)
