"""TimescaleDB at startup: wait for the server, detect the edition, upgrade the schema to the
newest migration (src/api/db/migrate.py runs src/api/db/migrations/), then apply the settings
that may change from one start to the next. All of it runs under an advisory lock, so several
workers starting at once, or a restart, are harmless.

The DDL the migrations call lives here too: the tables, the hypertables, the rollups (a
continuous aggregate on Community, the service's own table on Apache), their watermarks and
policies. Each function is idempotent and synchronous (Alembic runs on a sync connection), and
takes the tables or rollups to make as arguments: a migration passes its own frozen copies."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Table, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from src.api.config import Duration, Settings
from src.api.db import migrate
from src.api.errors import ServiceUnavailable
from src.api.events.models import GRANULE_SQL, HOUR, ROLLUPS, Rollup

log = logging.getLogger(__name__)

Edition = Literal["apache", "timescale"]
# Any constant works; it only has to be the same in every worker (and in `src.cli db upgrade`).
_SETUP_LOCK_KEY = 0x45564E54  # "EVNT"


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


def read_edition(conn: Connection) -> TimescaleInfo:
    """The edition and version of the installed extension (migrations branch on the edition)."""
    license_ = conn.execute(text("SHOW timescaledb.license")).scalar_one()
    version = conn.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    ).scalar_one()
    edition: Edition = "timescale" if license_ == "timescale" else "apache"
    return TimescaleInfo(edition=edition, version=str(version))


async def detect_edition(conn: AsyncConnection) -> TimescaleInfo:
    return await conn.run_sync(read_edition)


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
        add_retention_policies(conn, ("event", *ROLLUPS), settings.events_retention)


def create_tables(conn: Connection, tables: Iterable[Table]) -> None:
    """The tables, and any index a newer version added to a table that already exists."""
    for table in tables:
        table.create(conn, checkfirst=True)
        for index in table.indexes:
            index.create(conn, checkfirst=True)


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


def create_rollup_table(conn: Connection, table: Table, chunk_interval: str) -> None:
    """Apache edition: a rollup kept by the service itself, as a hypertable on `bucket`."""
    create_tables(conn, [table])
    # No index on bucket alone: each primary key serves bucket ranges (the 15-minute rollups'
    # begins with bucket, the tiers' with (site_id, bucket)); one index less is one less for
    # every insert's rollup upsert to maintain, and the tiers' per-site questions are not
    # misplanned onto it. Older versions made one; it goes.
    conn.execute(
        text(
            "SELECT create_hypertable(:table, by_range('bucket', CAST(:chunk AS interval) * 7),"
            " if_not_exists => TRUE, migrate_data => TRUE, create_default_indexes => FALSE)"
        ),
        {"table": table.name, "chunk": chunk_interval},
    )
    # The table name is a constant of the code (a migration's or the models'), never input.
    conn.execute(text(f"DROP INDEX IF EXISTS {table.name}_bucket_idx"))


def create_watermarks(conn: Connection, table: Table, tiers: Iterable[str]) -> None:
    """Apache edition: one row per tier; NULL (nothing complete) until the rollup job first runs.
    A tier's row that exists keeps its value."""
    create_tables(conn, [table])
    for tier in tiers:
        conn.execute(
            text(
                "INSERT INTO rollup_watermark (tier, complete_until) VALUES (:tier, NULL)"
                " ON CONFLICT (tier) DO NOTHING"
            ),
            {"tier": tier},
        )


def create_continuous_aggregate(conn: Connection, spec: Rollup) -> None:
    """Community edition: the rollup as a continuous aggregate of `event`, and its refresh
    policy. Cannot run inside a transaction: the caller's connection must be in autocommit."""
    exists = conn.execute(
        text("SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = :name"),
        {"name": spec.name},
    ).first()
    width = GRANULE_SQL[spec.granule]
    if exists is None:
        dims = ", ".join(spec.dimensions)
        pageviews = (
            " count(*) FILTER (WHERE event_type = 'pageview') AS pageviews,"
            if spec.has_pageviews_column
            else ""
        )
        # Identifiers here are constants (a migration's rollup specs), never input.
        conn.execute(
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
    conn.execute(
        text(
            "SELECT add_continuous_aggregate_policy(CAST(:name AS regclass), start_offset => NULL,"
            " end_offset => CAST(:width AS interval),"
            " schedule_interval => CAST(:every AS interval), if_not_exists => TRUE)"
        ),
        {"name": spec.name, "width": width, "every": "1 minute" if spec.granule <= HOUR else "1 hour"},
    )


def add_retention_policies(conn: Connection, relations: Iterable[str], retention: Duration | None) -> None:
    """Community edition: TimescaleDB drops old chunks itself, of the events and of the
    aggregates alike, so a rollup never answers for a time the raw events no longer cover.
    The policy is replaced on every start, so a changed EVENTS_RETENTION (or `off`) holds."""
    for relation in relations:
        conn.execute(
            text("SELECT remove_retention_policy(CAST(:rel AS regclass), if_exists => TRUE)"),
            {"rel": relation},
        )
        if retention is None:
            continue
        conn.execute(
            text("SELECT add_retention_policy(CAST(:rel AS regclass), CAST(:keep AS interval))"),
            {"rel": relation, "keep": retention.sql},
        )
