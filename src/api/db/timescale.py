"""TimescaleDB at startup: wait for the server, detect the edition, create the hypertable and
the rollup (a continuous aggregate on Community, the service's own table on Apache), and
register policies. Every statement is idempotent and runs under an advisory lock, so several
workers starting at once, or a restart, are harmless."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel

from src.api.config import Duration, Settings
from src.api.errors import ServiceUnavailable
from src.api.events.models import (
    GRANULE_SQL,
    HOUR,
    ROLLUP_SPECS,
    ROLLUPS,
    TIERS,
    Event,
    Rollup,
    RollupWatermark,
)

log = logging.getLogger(__name__)

Edition = Literal["apache", "timescale"]
# Any constant works; it only has to be the same in every worker.
_SETUP_LOCK_KEY = 0x45564E54  # "EVNT"


async def _create_tables(conn: AsyncConnection, *names: object) -> None:
    """The tables, and any index a newer version added to a table that already exists."""
    tables = [SQLModel.metadata.tables[str(name)] for name in names]

    def create(sync_conn: Connection) -> None:
        SQLModel.metadata.create_all(sync_conn, tables=tables)
        for table in tables:
            for index in table.indexes:
                index.create(sync_conn, checkfirst=True)

    await conn.run_sync(create)


@dataclass(frozen=True)
class TimescaleInfo:
    edition: Edition
    version: str

    @property
    def has_continuous_aggregates(self) -> bool:
        return self.edition == "timescale"


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


async def detect_edition(conn: AsyncConnection) -> TimescaleInfo:
    license_ = (await conn.execute(text("SHOW timescaledb.license"))).scalar_one()
    version = (
        await conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"))
    ).scalar_one()
    edition: Edition = "timescale" if license_ == "timescale" else "apache"
    return TimescaleInfo(edition=edition, version=str(version))


async def setup_database(engine: AsyncEngine, settings: Settings) -> TimescaleInfo:
    """Bring the schema up to date. Safe to call on every start, from many processes at once."""
    await wait_for_database(engine, settings.db_startup_timeout)
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _SETUP_LOCK_KEY})
        try:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
            info = await detect_edition(conn)
            await _create_tables(conn, Event.__tablename__)
            await _create_event_hypertable(conn, settings.events_chunk_interval)
            if info.has_continuous_aggregates:
                for spec in ROLLUP_SPECS:
                    await _create_continuous_aggregate(conn, spec)
                await _add_retention_policies(conn, settings.events_retention)
            else:
                for spec in ROLLUP_SPECS:
                    await _create_rollup_table(conn, spec.name, settings.events_chunk_interval)
                await _create_watermarks(conn)
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _SETUP_LOCK_KEY})
    log.info("timescaledb ready edition=%s version=%s", info.edition, info.version)
    return info


async def _create_event_hypertable(conn: AsyncConnection, chunk_interval: str) -> None:
    await conn.execute(
        text(
            "SELECT create_hypertable('event', by_range('time', CAST(:chunk AS interval)),"
            " if_not_exists => TRUE, migrate_data => TRUE)"
        ),
        {"chunk": chunk_interval},
    )
    # Applies to new chunks; keeps the configured interval authoritative across restarts.
    await conn.execute(
        text("SELECT set_chunk_time_interval('event', CAST(:chunk AS interval))"),
        {"chunk": chunk_interval},
    )


async def _create_rollup_table(conn: AsyncConnection, name: str, chunk_interval: str) -> None:
    await _create_tables(conn, name)
    # No index on bucket alone: each primary key serves bucket ranges (the 15-minute rollups'
    # begins with bucket, the tiers' with (site_id, bucket)); one index less is one less for
    # every insert's rollup upsert to maintain, and the tiers' per-site questions are not
    # misplanned onto it. Older versions made one; it goes.
    await conn.execute(
        text(
            "SELECT create_hypertable(:table, by_range('bucket', CAST(:chunk AS interval) * 7),"
            " if_not_exists => TRUE, migrate_data => TRUE, create_default_indexes => FALSE)"
        ),
        {"table": name, "chunk": chunk_interval},
    )
    # `name` is a constant of src/api/events/models.py, never input.
    await conn.execute(text(f"DROP INDEX IF EXISTS {name}_bucket_idx"))


async def _create_watermarks(conn: AsyncConnection) -> None:
    """Apache edition: one row per tier; NULL (nothing complete) until the rollup job first runs."""
    await _create_tables(conn, RollupWatermark.__tablename__)
    for tier in TIERS:
        await conn.execute(
            text(
                "INSERT INTO rollup_watermark (tier, complete_until) VALUES (:tier, NULL)"
                " ON CONFLICT (tier) DO NOTHING"
            ),
            {"tier": tier.name},
        )


async def _create_continuous_aggregate(conn: AsyncConnection, spec: Rollup) -> None:
    exists = (
        await conn.execute(
            text("SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = :name"),
            {"name": spec.name},
        )
    ).first()
    width = GRANULE_SQL[spec.granule]
    if exists is None:
        dims = ", ".join(spec.dimensions)
        pageviews = (
            " count(*) FILTER (WHERE event_type = 'pageview') AS pageviews,"
            if spec.has_pageviews_column
            else ""
        )
        # Identifiers here are constants (src/api/events/models.py ROLLUP_SPECS), never input.
        await conn.execute(
            text(
                f"CREATE MATERIALIZED VIEW {spec.name} WITH (timescaledb.continuous,"
                " timescaledb.materialized_only = false) AS"
                f" SELECT {spec.bucket('time')} AS bucket, {dims},"
                f" count(*) AS events,{pageviews} sum(duration)::bigint AS duration_sum,"
                " count(duration) AS duration_count"
                f" FROM event GROUP BY bucket, {dims} WITH NO DATA"
            )
        )
    # Materialise whole buckets once they are closed; real-time aggregation answers the rest.
    await conn.execute(
        text(
            "SELECT add_continuous_aggregate_policy(CAST(:name AS regclass), start_offset => NULL,"
            " end_offset => CAST(:width AS interval),"
            " schedule_interval => CAST(:every AS interval), if_not_exists => TRUE)"
        ),
        {"name": spec.name, "width": width, "every": "1 minute" if spec.granule <= HOUR else "1 hour"},
    )


async def _add_retention_policies(conn: AsyncConnection, retention: Duration | None) -> None:
    """Community edition: TimescaleDB drops old chunks itself, of the events and of the
    aggregate alike, so the rollup never answers for a time the raw events no longer cover.
    The policy is replaced on every start, so a changed EVENTS_RETENTION (or `off`) holds."""
    for relation in ("event", *ROLLUPS):
        await conn.execute(
            text("SELECT remove_retention_policy(CAST(:rel AS regclass), if_exists => TRUE)"),
            {"rel": relation},
        )
        if retention is None:
            continue
        await conn.execute(
            text("SELECT add_retention_policy(CAST(:rel AS regclass), CAST(:keep AS interval))"),
            {"rel": relation, "keep": retention.sql},
        )
