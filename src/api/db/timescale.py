"""TimescaleDB at startup: wait for the server, detect the edition, upgrade the schema to the
newest migration (src/api/db/migrate.py runs src/api/db/migrations/), then apply the settings
that may change from one start to the next. All of it runs under an advisory lock, so several
workers starting at once, or a restart, are harmless. The event hypertable's DDL lives here;
the rollups' in src/api/rollups/schema.py, the edition in src/api/db/schema.py."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import Settings
from src.api.db import migrate
from src.api.db.schema import TimescaleInfo, detect_edition
from src.api.errors import ServiceUnavailable
from src.api.rollups.catalogue import CATALOGUE
from src.api.rollups.schema import add_retention_policies

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every worker (and in `src.cli db upgrade`).
_SETUP_LOCK_KEY = 0x45564E54  # "EVNT"


async def wait_for_database(engine: AsyncEngine, timeout: float) -> None:
    """Retry `SELECT 1` with backoff until the database answers or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    delay = 0.25
    while True:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return
        except (OperationalError, DBAPIError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise ServiceUnavailable("database unavailable at startup") from exc
            log.warning("database not ready, retrying in %.2fs: %s", delay, type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)


async def setup_database(engine: AsyncEngine, settings: Settings) -> TimescaleInfo:
    """Bring the schema up to date. Safe to call on every start, from many processes at once:
    the first to take the lock upgrades, the others then find nothing left to do."""
    await wait_for_database(engine, settings.db_startup_timeout)
    async with engine.connect() as lock:
        lock = await lock.execution_options(isolation_level="AUTOCOMMIT")
        await lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SETUP_LOCK_KEY})
        try:
            # Before the migrations: they use TimescaleDB functions and ask for the edition.
            await lock.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
            info = await detect_edition(lock)
            # A connection of its own, so each migration runs in a transaction of its own (the
            # lock's connection is in autocommit and must stay usable to unlock after a failure).
            async with engine.connect() as conn:
                revision = await conn.run_sync(migrate.upgrade, settings)
            await lock.run_sync(_apply_settings, info, settings)
        finally:
            await lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SETUP_LOCK_KEY})
    log.info("timescaledb ready edition=%s version=%s revision=%s", info.edition, info.version, revision)
    return info


def _apply_settings(conn: Connection, info: TimescaleInfo, settings: Settings) -> None:
    """What follows the settings rather than the schema, so it is not a migration (which runs
    once) but runs after them on every start: the chunk interval of new event chunks
    (EVENTS_CHUNK_INTERVAL), and on Community the retention policy (EVENTS_RETENTION) of the
    events and every rollup, replaced so that a changed setting (or `off`) holds."""
    set_event_chunk_interval(conn, settings.events_chunk_interval)
    if info.has_continuous_aggregates:
        add_retention_policies(conn, ("event", *CATALOGUE.names), settings.events_retention)


def create_event_hypertable(conn: Connection, chunk_interval: str) -> None:
    conn.execute(
        text(
            "SELECT create_hypertable('event', by_range('time', CAST(:chunk AS interval)),"
            " if_not_exists => TRUE, migrate_data => TRUE)"
        ),
        {"chunk": chunk_interval},
    )


def set_event_chunk_interval(conn: Connection, chunk_interval: str) -> None:
    # Applies to new chunks; keeps the configured interval authoritative across restarts.
    conn.execute(
        text("SELECT set_chunk_time_interval('event', CAST(:chunk AS interval))"),
        {"chunk": chunk_interval},
    )
