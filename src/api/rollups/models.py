"""The rollups' tables on the Apache edition (Community makes continuous aggregates of the same
names and columns instead), and the tiers' watermarks. Registered in SQLModel's metadata, so
the migrations check compares them with the database like every model."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Uuid,
    text,
)
from sqlalchemy.schema import SchemaItem
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, SQLModel

from src.api.rollups.activity import ACTIVITY, ACTIVITY_DAY, ACTIVITY_FIRST, ACTIVITY_LATE
from src.api.rollups.catalogue import CATALOGUE, Rollup, page_index_include
from src.api.rollups.pages import PAGE_ACTIVITY, PAGE_ACTIVITY_LATE, PAGE_DAY

# Column types of the dimensions, as in `event`.
DIMENSION_TYPES: dict[str, TypeEngine[str]] = {
    "site_id": String(128),
    "event_type": String(128),
    "page": String(2048),
    "os": String(32),
    "browser": String(64),
    "device": String(16),
    "referrer_domain": String(255),
}


def rollup_table(rollup: Rollup) -> Table:
    """Keyed by (bucket, dimensions) at 15 minutes (the writer upserts buckets of the moment);
    by (site_id, bucket, the other dimensions) in the tiers, whose questions are per site and
    bounded in time, with a (site_id, page, bucket) index where they keep the page, which holds
    every other column (page_index_include): questions about a few pages read just their rows,
    from the index alone, and only the rollup job and late events write the tiers.
    (Community's continuous aggregates get a (dimension, bucket) index per dimension.)"""
    columns: list[SchemaItem] = [
        Column("bucket", DateTime(timezone=True), nullable=False),
        *(Column(d, DIMENSION_TYPES[d], nullable=False) for d in rollup.dimensions),
        *(Column(m, BigInteger, nullable=False) for m in rollup.measures),
    ]
    dims = rollup.dimensions
    if rollup.tier is None:
        return Table(rollup.name, SQLModel.metadata, *columns, PrimaryKeyConstraint("bucket", *dims))
    key = PrimaryKeyConstraint("site_id", "bucket", *(d for d in dims if d != "site_id"))
    pages = (
        [
            Index(
                f"ix_{rollup.name}_page",
                "site_id",
                "page",
                "bucket",
                postgresql_include=page_index_include(rollup),
            )
        ]
        if "page" in dims
        else []
    )
    return Table(rollup.name, SQLModel.metadata, *columns, key, *pages)


ROLLUP_TABLES: dict[str, Table] = {rollup.name: rollup_table(rollup) for rollup in CATALOGUE.rollups}

# Apache edition: late events' changes to the rollups, one row per (15-minute bucket, every
# dimension) group of a statement, until the fold moves them into the rollups. A heap table:
# appending is all the ingest statement does to it, and the fold deletes what it moves.
LATE_TABLE = Table(
    CATALOGUE.late.name,
    SQLModel.metadata,
    Column("bucket", DateTime(timezone=True), nullable=False),
    *(Column(d, DIMENSION_TYPES[d], nullable=False) for d in CATALOGUE.late.dimensions),
    *(Column(m, BigInteger, nullable=False) for m in CATALOGUE.late.measures),
    # Which tiers' rows the change is for: those whose watermark lay above its bucket when it
    # was stored (bit i: CATALOGUE.tiers[i]); the 15-minute rollups take every change.
    Column("tiers", SmallInteger, nullable=False),
    Index("ix_rollup_late_bucket", "bucket"),
)


class RollupWatermark(SQLModel, table=True):
    """Apache edition: the tiers are complete below `complete_until` (per tier)."""

    __tablename__ = "rollup_watermark"

    tier: str = Field(sa_column=Column(String(8), primary_key=True))
    complete_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


def _overlap_index(name: str, *key: str) -> Index:
    """The rows whose key was active the day before too (a `prev_last`), with what a two-day
    count reads of them (src/api/rollups/activity.py)."""
    return Index(
        name,
        *key,
        postgresql_include=["q0", "q1", "prev_last"],
        postgresql_where=text("prev_last IS NOT NULL"),
    )


def _edge_counts() -> tuple[Column[list[int]], Column[list[int]]]:
    """A day's counts of keys by their first and by their last quarter hour (arrays of 96)."""
    return Column("firsts", ARRAY(Integer), nullable=False), Column("lasts", ARRAY(Integer), nullable=False)


# Activity (src/api/rollups/activity.py), both editions: who was active on which days and
# quarter hours, each key's days linked, and how many keys each day first counts.
ACTIVITY_TABLE = Table(
    ACTIVITY,
    SQLModel.metadata,
    Column("kind", SmallInteger, nullable=False),
    Column("site_id", String(128), nullable=False),
    Column("key", Uuid, nullable=False),
    Column("day", Integer, nullable=False),
    Column("q0", BigInteger, nullable=False),
    Column("q1", BigInteger, nullable=False),
    Column("prev", Integer),
    Column("next", Integer),
    Column("prev_last", SmallInteger),
    # The fold and deletes find a key's days by the key; questions read one or two days of a
    # kind (of a site, or all), by the day index alone (it holds every column they read), and
    # the keys active the day before too by the overlap index.
    PrimaryKeyConstraint("kind", "site_id", "key", "day"),
    Index(
        "ix_activity_day",
        "kind",
        "day",
        "site_id",
        postgresql_include=["key", "q0", "q1", "prev", "next"],
    ),
    _overlap_index("ix_activity_overlap", "kind", "site_id", "day"),
)
ACTIVITY_DAY_TABLE = Table(
    ACTIVITY_DAY,
    SQLModel.metadata,
    Column("kind", SmallInteger, nullable=False),
    Column("site_id", String(128), nullable=False),
    Column("day", Integer, nullable=False),
    *_edge_counts(),
    PrimaryKeyConstraint("kind", "site_id", "day"),
)
ACTIVITY_FIRST_TABLE = Table(
    ACTIVITY_FIRST,
    SQLModel.metadata,
    Column("kind", SmallInteger, nullable=False),
    Column("site_id", String(128), nullable=False),
    Column("day", Integer, nullable=False),
    Column("since", Integer, nullable=False),
    Column("n", BigInteger, nullable=False),
    PrimaryKeyConstraint("kind", "site_id", "day", "since"),
)
ACTIVITY_LATE_TABLE = Table(
    ACTIVITY_LATE,
    SQLModel.metadata,
    Column("site_id", String(128), nullable=False),
    Column("kind", SmallInteger, nullable=False),
    Column("key", Uuid, nullable=False),
    Column("quarter", Integer, nullable=False),
)
# Page activity (src/api/rollups/pages.py), both editions: who saw which page on which day.
PAGE_ACTIVITY_TABLE = Table(
    PAGE_ACTIVITY,
    SQLModel.metadata,
    Column("site_id", String(128), nullable=False),
    Column("day", Integer, nullable=False),
    Column("page", String(2048), nullable=False),
    Column("key", Uuid, nullable=False),
    Column("q0", BigInteger, nullable=False),
    Column("q1", BigInteger, nullable=False),
    Column("prev_last", SmallInteger),
    # Questions read a site's days, page by page: the key holds what they read but the quarters;
    # the keys active the day before too, by the overlap index.
    PrimaryKeyConstraint("site_id", "day", "page", "key", postgresql_include=["q0", "q1"]),
    _overlap_index("ix_page_activity_overlap", "site_id", "day", "page"),
)
PAGE_DAY_TABLE = Table(
    PAGE_DAY,
    SQLModel.metadata,
    Column("site_id", String(128), nullable=False),
    Column("day", Integer, nullable=False),
    Column("page", String(2048), nullable=False),
    Column("keys", BigInteger, nullable=False),
    Column("visitors", BigInteger, nullable=False),
    *_edge_counts(),
    Column("nil_first", SmallInteger),
    Column("nil_last", SmallInteger),
    PrimaryKeyConstraint("site_id", "day", "page"),
)
PAGE_ACTIVITY_LATE_TABLE = Table(
    PAGE_ACTIVITY_LATE,
    SQLModel.metadata,
    Column("site_id", String(128), nullable=False),
    Column("page", String(2048), nullable=False),
    Column("key", Uuid, nullable=False),
    Column("quarter", Integer, nullable=False),
)
