"""The sessions pipeline's tables (both editions alike; plain tables, not hypertables: a
session row is some ten events, and the job rewrites rows in place as late events reopen them).

- `session_change`: one row per event stored or deleted (site, visitor key, time, type),
  appended by the statement that stores or deletes it; the job takes them.
- `session`: one row per session, keyed by (site, visitor key, start, first event).
- `session_daily_metric`: per site and UTC day of the sessions' start.
- `session_job`: the job's one row: its watermark.
- `session_run`: one row per run (the ETL routes' history), the last few hundred kept.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import SQLModel

SESSION_CHANGE = Table(
    "session_change",
    SQLModel.metadata,
    Column("site_id", String(128), nullable=False),
    # md5 of the visitor key as a UUID (src/api/rollups/activity.KINDS["visitors"]).
    Column("visitor_hash", Uuid, nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("event_type", String(128), nullable=False),
)

SESSION = Table(
    "session",
    SQLModel.metadata,
    Column("site_id", String(128), nullable=False),
    Column("visitor_hash", Uuid, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("first_event_id", Uuid, nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("visitor", String(1300), nullable=False),
    Column("session_id", String(128)),
    Column("duration", Float, nullable=False),  # seconds, ended_at - started_at
    Column("events", Integer, nullable=False),
    Column("pageviews", Integer, nullable=False),
    Column("entry_page", String(2048)),
    Column("exit_page", String(2048)),
    Column("bounce", Boolean, nullable=False),
    Column("referrer_domain", String(255), nullable=False),
    Column("utm_source", String(255)),
    Column("utm_medium", String(255)),
    Column("utm_campaign", String(255)),
    Column("os", String(32), nullable=False),
    Column("browser", String(64), nullable=False),
    Column("device", String(16), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # The job finds a visitor's sessions near a change by this key's prefix.
    PrimaryKeyConstraint("site_id", "visitor_hash", "started_at", "first_event_id"),
    # The stats API's questions are per site (or all sites) and bounded by the start.
    Index("ix_session_site_started", "site_id", "started_at"),
    Index("ix_session_started", "started_at"),
)

SESSION_DAILY_METRIC = Table(
    "session_daily_metric",
    SQLModel.metadata,
    Column("site_id", String(128), nullable=False),
    Column("day", Date, nullable=False),
    Column("visitors", Integer, nullable=False),
    Column("sessions", Integer, nullable=False),
    Column("pageviews", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("bounces", Integer, nullable=False),
    Column("bounce_rate", Float, nullable=False),
    Column("avg_session_duration", Float, nullable=False),
    Column("total_duration", Float, nullable=False),  # seconds: the stats API sums days of it
    Column("pages_per_session", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("site_id", "day"),
    Index("ix_session_daily_metric_day", "day"),
)

SESSION_JOB = Table(
    "session_job",
    SQLModel.metadata,
    Column("id", SmallInteger, nullable=False),
    # Sessions are complete for events before this time (NULL: never run: the next run is full).
    Column("watermark", DateTime(timezone=True)),
    PrimaryKeyConstraint("id"),
)

SESSION_RUN = Table(
    "session_run",
    SQLModel.metadata,
    Column("id", Uuid, nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("event_type", String(128)),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_seconds", Float),
    Column("result", JSONB),
    Column("error", Text),
    PrimaryKeyConstraint("id"),
    Index("ix_session_run_started", "started_at"),
)
