"""The schema as the service made it before it had migrations (commit 6d3feeb, the last one
without Alembic): its `setup_database`, statement for statement, over its tables, all frozen
here so that tests/db/test_migrations.py starts from what such an installation has, whatever
the models and the revisions become later. Not for anything but that test."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import SchemaItem

SETUP_LOCK_KEY = 0x45564E54
GRANULE_SQL = {900: "15 minutes", 3600: "1 hour", 86400: "1 day"}

metadata = MetaData()
event = Table(
    "event",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("time", DateTime(timezone=True), primary_key=True, nullable=False, server_default=func.now()),
    Column("site_id", String(128), nullable=False, server_default="default"),
    Column("event_type", String(128), nullable=False, server_default="pageview"),
    Column("page", String(2048), nullable=False),
    Column("url", String(4096)),
    Column("ip_address", String(64)),
    Column("user_agent", String(1024)),
    Column("os", String(32), nullable=False, server_default="Other"),
    Column("browser", String(64), nullable=False, server_default="Other"),
    Column("device", String(16), nullable=False, server_default="other"),
    Column("is_bot", Boolean, nullable=False, server_default=text("false")),
    Column("referrer", String(4096)),
    Column("referrer_domain", String(255), nullable=False, server_default=""),
    Column("session_id", String(128)),
    Column("visitor_id", String(128)),
    Column("user_id", String(128)),
    Column("duration", Integer, nullable=False, server_default="0"),
    Column("description", String(4096)),
    Column("properties", JSONB),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_event_site_time", "site_id", "time"),
)
rollup_watermark = Table(
    "rollup_watermark",
    metadata,
    Column("tier", String(8), primary_key=True),
    Column("complete_until", DateTime(timezone=True)),
)
DIMENSION_TYPES = {
    "site_id": 128,
    "event_type": 128,
    "page": 2048,
    "os": 32,
    "browser": 64,
    "device": 16,
    "referrer_domain": 255,
}
TIERS = {"1h": (3600, 0), "1h15": (3600, 900), "1h30": (3600, 1800), "1d": (86400, 0)}
TIER_SHAPES = {
    "site": ("site_id", "event_type"),
    "page": ("site_id", "page"),
    "page_os": ("site_id", "page", "os"),
    "tech": ("site_id", "os", "browser", "device"),
    "referrer": ("site_id", "referrer_domain"),
}


@dataclass(frozen=True)
class Rollup:
    name: str
    granule: int
    dimensions: tuple[str, ...]
    phase: int = 0
    tiered: bool = False

    def bucket(self, column: str) -> str:
        width = GRANULE_SQL[self.granule]
        if not self.phase:
            return f"time_bucket(INTERVAL '{width}', {column})"
        origin = f"2000-01-03 00:{self.phase // 60:02d}:00+00"
        return f"time_bucket(INTERVAL '{width}', {column}, origin => TIMESTAMPTZ '{origin}')"


ROLLUP_SPECS = (
    Rollup("event_rollup_15m", 900, tuple(DIMENSION_TYPES)),
    Rollup("event_rollup_15m_site", 900, ("site_id", "event_type")),
    *(
        Rollup(f"event_rollup_{tier}_{shape}", granule, dims, phase, tiered=True)
        for tier, (granule, phase) in TIERS.items()
        for shape, dims in TIER_SHAPES.items()
    ),
)


def _table(spec: Rollup) -> Table:
    columns: list[SchemaItem] = [
        Column("bucket", DateTime(timezone=True), nullable=False),
        *(Column(d, String(DIMENSION_TYPES[d]), nullable=False) for d in spec.dimensions),
        Column("events", BigInteger, nullable=False),
        *([Column("pageviews", BigInteger, nullable=False)] if spec.tiered else []),
        Column("duration_sum", BigInteger, nullable=False),
        Column("duration_count", BigInteger, nullable=False),
    ]
    if not spec.tiered:
        return Table(spec.name, metadata, *columns, PrimaryKeyConstraint("bucket", *spec.dimensions))
    key = PrimaryKeyConstraint("site_id", "bucket", *(d for d in spec.dimensions if d != "site_id"))
    pages = [Index(f"ix_{spec.name}_page", "site_id", "page", "bucket")] if "page" in spec.dimensions else []
    return Table(spec.name, metadata, *columns, key, *pages)


ROLLUP_TABLES = {spec.name: _table(spec) for spec in ROLLUP_SPECS}


def _create_tables(conn: Connection, *tables: Table) -> None:
    metadata.create_all(conn, tables=list(tables))
    for table in tables:
        for index in table.indexes:
            index.create(conn, checkfirst=True)


async def create_legacy_schema(engine: AsyncEngine, chunk_interval: str, retention: str) -> str:
    """What 6d3feeb's `setup_database` did; returns the edition ("apache" or "timescale")."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SETUP_LOCK_KEY})
        try:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS timescaledb"))
            license_ = (await conn.execute(text("SHOW timescaledb.license"))).scalar_one()
            await conn.run_sync(_create_tables, event)
            await conn.execute(
                text(
                    "SELECT create_hypertable('event', by_range('time', CAST(:chunk AS interval)),"
                    " if_not_exists => TRUE, migrate_data => TRUE)"
                ),
                {"chunk": chunk_interval},
            )
            await conn.execute(
                text("SELECT set_chunk_time_interval('event', CAST(:chunk AS interval))"),
                {"chunk": chunk_interval},
            )
            if license_ == "timescale":
                for spec in ROLLUP_SPECS:
                    await _create_continuous_aggregate(conn, spec)
                for relation in ("event", *ROLLUP_TABLES):
                    await conn.execute(
                        text(
                            "SELECT add_retention_policy(CAST(:rel AS regclass), CAST(:keep AS interval),"
                            " if_not_exists => TRUE)"
                        ),
                        {"rel": relation, "keep": retention},
                    )
            else:
                for spec in ROLLUP_SPECS:
                    await conn.run_sync(_create_tables, ROLLUP_TABLES[spec.name])
                    await conn.execute(
                        text(
                            "SELECT create_hypertable(:table, by_range('bucket', CAST(:chunk AS interval) * 7),"
                            " if_not_exists => TRUE, migrate_data => TRUE, create_default_indexes => FALSE)"
                        ),
                        {"table": spec.name, "chunk": chunk_interval},
                    )
                    await conn.execute(text(f"DROP INDEX IF EXISTS {spec.name}_bucket_idx"))
                await conn.run_sync(_create_tables, rollup_watermark)
                for tier in TIERS:
                    await conn.execute(
                        text(
                            "INSERT INTO rollup_watermark (tier, complete_until) VALUES (:tier, NULL)"
                            " ON CONFLICT (tier) DO NOTHING"
                        ),
                        {"tier": tier},
                    )
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SETUP_LOCK_KEY})
    return "timescale" if license_ == "timescale" else "apache"


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
        pageviews = " count(*) FILTER (WHERE event_type = 'pageview') AS pageviews," if spec.tiered else ""
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
    await conn.execute(
        text(
            "SELECT add_continuous_aggregate_policy(CAST(:name AS regclass), start_offset => NULL,"
            " end_offset => CAST(:width AS interval),"
            " schedule_interval => CAST(:every AS interval), if_not_exists => TRUE)"
        ),
        {"name": spec.name, "width": width, "every": "1 minute" if spec.granule <= 3600 else "1 hour"},
    )
