"""The event hypertable and the rollups shared by both TimescaleDB editions: the 15-minute
rollups (wide and per site) and the hourly and daily tiers of narrow shapes above them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, SQLModel

# The dimensions every rollup groups by, in column order; the stats planner whitelists them.
ROLLUP_DIMENSIONS: tuple[str, ...] = (
    "site_id",
    "event_type",
    "page",
    "os",
    "browser",
    "device",
    "referrer_domain",
)


class Event(SQLModel, table=True):
    """One event. A hypertable on `time`; unique keys must include `time`, hence (id, time)."""

    __tablename__ = "event"
    # Few indexes, because each one costs every insert: the hypertable's own index on time,
    # the primary key, and (site_id, time) for the site-scoped, time-bounded stats queries.
    __table_args__ = (Index("ix_event_site_time", "site_id", "time"),)

    id: uuid.UUID = Field(primary_key=True)
    time: datetime = Field(
        sa_column=Column(DateTime(timezone=True), primary_key=True, nullable=False, server_default=func.now())
    )
    site_id: str = Field(
        default="default", sa_column=Column(String(128), nullable=False, server_default="default")
    )
    event_type: str = Field(
        default="pageview",
        sa_column=Column(String(128), nullable=False, server_default="pageview"),
    )
    page: str = Field(sa_column=Column(String(2048), nullable=False))
    url: str | None = Field(default=None, sa_column=Column(String(4096)))
    ip_address: str | None = Field(default=None, sa_column=Column(String(64)))
    user_agent: str | None = Field(default=None, sa_column=Column(String(1024)))
    os: str = Field(default="Other", sa_column=Column(String(32), nullable=False, server_default="Other"))
    browser: str = Field(
        default="Other", sa_column=Column(String(64), nullable=False, server_default="Other")
    )
    device: str = Field(default="other", sa_column=Column(String(16), nullable=False, server_default="other"))
    is_bot: bool = Field(default=False, sa_column_kwargs={"server_default": text("false")})
    referrer: str | None = Field(default=None, sa_column=Column(String(4096)))
    referrer_domain: str = Field(default="", sa_column=Column(String(255), nullable=False, server_default=""))
    session_id: str | None = Field(default=None, sa_column=Column(String(128)))
    visitor_id: str | None = Field(default=None, sa_column=Column(String(128)))
    user_id: str | None = Field(default=None, sa_column=Column(String(128)))
    duration: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    description: str | None = Field(default=None, sa_column=Column(String(4096)))
    properties: dict[str, Any] | None = Field(default=None, sa_column=Column(JSONB))
    received_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    updated_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )


class EventRollup(SQLModel, table=True):
    """Apache edition: the service's own exact 15-minute rollup, kept in the insert transaction.

    On the Community edition a continuous aggregate of the same name and columns replaces it.
    """

    __tablename__ = "event_rollup_15m"

    bucket: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    site_id: str = Field(sa_column=Column(String(128), primary_key=True))
    event_type: str = Field(sa_column=Column(String(128), primary_key=True))
    page: str = Field(sa_column=Column(String(2048), primary_key=True))
    os: str = Field(sa_column=Column(String(32), primary_key=True))
    browser: str = Field(sa_column=Column(String(64), primary_key=True))
    device: str = Field(sa_column=Column(String(16), primary_key=True))
    referrer_domain: str = Field(sa_column=Column(String(255), primary_key=True))
    events: int = Field(sa_column=Column(BigInteger, nullable=False))
    duration_sum: int = Field(sa_column=Column(BigInteger, nullable=False))
    duration_count: int = Field(sa_column=Column(BigInteger, nullable=False))


class EventRollupSite(SQLModel, table=True):
    """The narrow rollup: per 15 minutes, site and event type only. Totals and timeseries
    without a breakdown read a few thousand rows here instead of the wide rollup."""

    __tablename__ = "event_rollup_15m_site"

    bucket: datetime = Field(sa_column=Column(DateTime(timezone=True), primary_key=True))
    site_id: str = Field(sa_column=Column(String(128), primary_key=True))
    event_type: str = Field(sa_column=Column(String(128), primary_key=True))
    events: int = Field(sa_column=Column(BigInteger, nullable=False))
    duration_sum: int = Field(sa_column=Column(BigInteger, nullable=False))
    duration_count: int = Field(sa_column=Column(BigInteger, nullable=False))


QUARTER = 900  # seconds: the 15-minute rollups' bucket
HOUR = 3600
DAY = 86400
GRANULE_SQL: dict[int, str] = {QUARTER: "15 minutes", HOUR: "1 hour", DAY: "1 day"}

# Column types of the dimensions, as in `event`.
_DIMENSION_TYPES: dict[str, TypeEngine[str]] = {
    "site_id": String(128),
    "event_type": String(128),
    "page": String(2048),
    "os": String(32),
    "browser": String(64),
    "device": String(16),
    "referrer_domain": String(255),
}


@dataclass(frozen=True)
class Tier:
    """A tier of rollups above the 15-minute ones: buckets of `granule` seconds that start
    `phase` seconds after the UTC hour. Hours at :15 and :30 are the local hours of zones
    whose offset is not whole hours (Asia/Kathmandu +05:45 starts its hours at :15 UTC,
    Asia/Kolkata +05:30 and America/St_Johns -03:30 at :30); no zone in use starts them at :45."""

    name: str  # the tables' infix and the watermark's key
    granule: int
    phase: int = 0

    def bucket(self, column: str) -> str:
        """SQL: the tier's bucket of `column` (a constant column name)."""
        width = GRANULE_SQL[self.granule]
        if not self.phase:
            return f"time_bucket(INTERVAL '{width}', {column})"
        origin = f"2000-01-03 00:{self.phase // 60:02d}:00+00"
        return f"time_bucket(INTERVAL '{width}', {column}, origin => TIMESTAMPTZ '{origin}')"


# Hours first: the daily tier is summed from the UTC hours.
TIERS: tuple[Tier, ...] = (
    Tier("1h", HOUR),
    Tier("1h15", HOUR, 15 * 60),
    Tier("1h30", HOUR, 30 * 60),
    Tier("1d", DAY),
)
TIERS_BY_NAME: dict[str, Tier] = {tier.name: tier for tier in TIERS}
# The 15-minute buckets every rollup starts from (not a tier: no table, no watermark of its own).
QUARTER_BUCKETS = Tier("15m", QUARTER)


@dataclass(frozen=True)
class Rollup:
    """One rollup relation: its bucket width (granule, in seconds), the dimensions it keeps,
    and, above the 15-minute rollups, its tier.

    The 15-minute rollups derive pageviews from `event_type`; the tiers keep a `pageviews`
    column instead, so they need not keep `event_type` (and are that much smaller)."""

    name: str
    granule: int
    dimensions: tuple[str, ...]
    tier: Tier | None = None

    @property
    def has_pageviews_column(self) -> bool:
        return self.tier is not None

    @property
    def phase(self) -> int:
        return self.tier.phase if self.tier else 0

    def bucket(self, column: str) -> str:
        """SQL: the rollup's bucket of `column` (a constant column name)."""
        return (self.tier or QUARTER_BUCKETS).bucket(column)


# The shapes that breakdowns and timeseries ask for most, in every tier. The stats planner uses
# a tier granule only where it lies inside one bucket of the question (so a New York day is 24
# UTC hours, a Kathmandu day 24 hours of the :15 tier).
TIER_SHAPES: dict[str, tuple[str, ...]] = {
    "site": ("site_id", "event_type"),
    "page": ("site_id", "page"),
    "page_os": ("site_id", "page", "os"),
    "tech": ("site_id", "os", "browser", "device"),
    "referrer": ("site_id", "referrer_domain"),
}


def _tier_table(name: str, dimensions: tuple[str, ...]) -> Table:
    # (site_id, bucket, …) first: stats questions are per site and bounded in time.
    return Table(
        name,
        SQLModel.metadata,
        Column("bucket", DateTime(timezone=True), nullable=False),
        *(Column(d, _DIMENSION_TYPES[d], nullable=False) for d in dimensions),
        Column("events", BigInteger, nullable=False),
        Column("pageviews", BigInteger, nullable=False),
        Column("duration_sum", BigInteger, nullable=False),
        Column("duration_count", BigInteger, nullable=False),
        PrimaryKeyConstraint("site_id", "bucket", *(d for d in dimensions if d != "site_id")),
        # Questions about a few pages read just their rows. Only the rollup job and late events
        # write the tiers, so the index costs ingestion nothing. (Community's continuous
        # aggregates get a (dimension, bucket) index per dimension by themselves.)
        *([Index(f"ix_{name}_page", "site_id", "page", "bucket")] if "page" in dimensions else []),
    )


# Every rollup, 15-minute ones first (widest first). Same names and columns on both editions:
# continuous aggregates on Community, the service's own tables on Apache.
ROLLUP_SPECS: tuple[Rollup, ...] = (
    Rollup(EventRollup.__tablename__, QUARTER, ROLLUP_DIMENSIONS),
    Rollup(EventRollupSite.__tablename__, QUARTER, ("site_id", "event_type")),
    *(
        Rollup(f"event_rollup_{tier.name}_{shape}", tier.granule, dims, tier)
        for tier in TIERS
        for shape, dims in TIER_SHAPES.items()
    ),
)
for _spec in ROLLUP_SPECS:
    if _spec.tier is not None:
        _tier_table(_spec.name, _spec.dimensions)
# name → dimensions: every rollup relation, and the 15-minute ones the writer keeps current.
ROLLUPS: dict[str, tuple[str, ...]] = {spec.name: spec.dimensions for spec in ROLLUP_SPECS}
QUARTER_ROLLUPS: dict[str, tuple[str, ...]] = {
    spec.name: spec.dimensions for spec in ROLLUP_SPECS if spec.granule == QUARTER
}
ROLLUPS_BY_NAME: dict[str, Rollup] = {spec.name: spec for spec in ROLLUP_SPECS}


class RollupWatermark(SQLModel, table=True):
    """Apache edition: the tiers are complete below `complete_until` (per tier). The rollup job
    fills closed hours and days from the 15-minute rollup and moves it on; the ingest writer
    adds late events (below it) to the tiers itself, in the statement that stores them."""

    __tablename__ = "rollup_watermark"

    tier: str = Field(sa_column=Column(String(8), primary_key=True))
    complete_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


# Columns the ingest writer copies, in order (received_at/updated_at are set by the writer too).
EVENT_COPY_COLUMNS: tuple[str, ...] = (
    "id",
    "time",
    "site_id",
    "event_type",
    "page",
    "url",
    "ip_address",
    "user_agent",
    "os",
    "browser",
    "device",
    "is_bot",
    "referrer",
    "referrer_domain",
    "session_id",
    "visitor_id",
    "user_id",
    "duration",
    "description",
    "properties",
    "received_at",
    "updated_at",
)
# PostgreSQL types of EVENT_COPY_COLUMNS, for binary COPY.
EVENT_COPY_TYPES: tuple[str, ...] = (
    "uuid",
    "timestamptz",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "bool",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "varchar",
    "int4",
    "varchar",
    "jsonb",
    "timestamptz",
    "timestamptz",
)
