"""Baseline: the schema as the service made it at startup before it had migrations.

The `event` hypertable (chunks of EVENTS_CHUNK_INTERVAL) and the rollups: on Apache the
service's own rollup tables, hypertables too, and one `rollup_watermark` row per tier; on
Community continuous aggregates of the same names and columns, with their refresh policies.
The settings-driven parts that startup re-applies after every upgrade (the chunk interval of
new chunks, Community's retention policies) are in `_apply_settings` (src/api/db/timescale.py).

On a database the service made before this revision existed (its tables there, no
`alembic_version`) it runs all the same, and is not merely stamped: every step is idempotent,
so it finds each table, hypertable and aggregate there and leaves it and its rows alone, while
doing what every start of the older service did: add an index or rollup tier a version after
the database's creation introduced, drop the bucket-only rollup indexes older versions made.
Then the database is at 0001 like a new one. Stamping would have skipped those repairs.

The tables are frozen copies of the models at this revision, not the models: a later revision
that changes a model adds its migration, and this one must go on creating the old shape for
that one to apply to. tests/db/test_migrations.py checks that the models equal what the
revisions make."""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
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
from sqlalchemy.schema import SchemaItem
from sqlalchemy.types import TypeEngine

from src.api.db import migrate, schema, timescale
from src.api.rollups import schema as rollup_schema
from src.api.rollups.catalogue import Rollup, Tier

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

QUARTER, HOUR, DAY = 900, 3600, 86400
metadata = MetaData()

event = Table(
    "event",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("time", DateTime(timezone=True), primary_key=True, server_default=func.now()),
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

DIMENSION_TYPES: dict[str, TypeEngine[str]] = {
    "site_id": String(128),
    "event_type": String(128),
    "page": String(2048),
    "os": String(32),
    "browser": String(64),
    "device": String(16),
    "referrer_domain": String(255),
}
WIDE = ("site_id", "event_type", "page", "os", "browser", "device", "referrer_domain")
TIERS = (Tier("1h", HOUR), Tier("1h15", HOUR, 15 * 60), Tier("1h30", HOUR, 30 * 60), Tier("1d", DAY))
TIER_SHAPES: dict[str, tuple[str, ...]] = {
    "site": ("site_id", "event_type"),
    "page": ("site_id", "page"),
    "page_os": ("site_id", "page", "os"),
    "tech": ("site_id", "os", "browser", "device"),
    "referrer": ("site_id", "referrer_domain"),
}
ROLLUP_SPECS = (
    Rollup("event_rollup_15m", QUARTER, WIDE),
    Rollup("event_rollup_15m_site", QUARTER, ("site_id", "event_type")),
    *(
        Rollup(f"event_rollup_{tier.name}_{shape}", tier.granule, dims, tier)
        for tier in TIERS
        for shape, dims in TIER_SHAPES.items()
    ),
)


def _rollup_table(spec: Rollup) -> Table:
    """Apache's table for a rollup: keyed by (bucket, dimensions) at 15 minutes, by (site_id,
    bucket, the other dimensions) in the tiers, which keep `pageviews` and a page index too."""
    measures = ["events", *(["pageviews"] if spec.has_pageviews_column else []), "duration_sum"]
    columns: list[SchemaItem] = [
        Column("bucket", DateTime(timezone=True), nullable=False),
        *(Column(d, DIMENSION_TYPES[d], nullable=False) for d in spec.dimensions),
        *(Column(m, BigInteger, nullable=False) for m in [*measures, "duration_count"]),
    ]
    if spec.tier is None:
        key = PrimaryKeyConstraint("bucket", *spec.dimensions)
        return Table(spec.name, metadata, *columns, key)
    key = PrimaryKeyConstraint("site_id", "bucket", *(d for d in spec.dimensions if d != "site_id"))
    pages = [Index(f"ix_{spec.name}_page", "site_id", "page", "bucket")] if "page" in spec.dimensions else []
    return Table(spec.name, metadata, *columns, key, *pages)


ROLLUP_TABLES = {spec.name: _rollup_table(spec) for spec in ROLLUP_SPECS}


def upgrade() -> None:
    settings = migrate.settings()
    conn = op.get_bind()
    schema.create_tables(conn, [event])
    timescale.create_event_hypertable(conn, settings.events_chunk_interval)
    if schema.read_edition(conn).has_continuous_aggregates:
        # Continuous-aggregate DDL refuses to run inside a transaction.
        with op.get_context().autocommit_block():
            for spec in ROLLUP_SPECS:
                rollup_schema.create_continuous_aggregate(op.get_bind(), spec)
    else:
        for spec in ROLLUP_SPECS:
            rollup_schema.create_rollup_table(conn, ROLLUP_TABLES[spec.name], settings.events_chunk_interval)
        rollup_schema.create_watermarks(conn, rollup_watermark, [tier.name for tier in TIERS])


def downgrade() -> None:
    raise NotImplementedError("the baseline is not undone: that would drop every event")
