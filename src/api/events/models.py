"""The event: one row of the `event` hypertable, and the columns the ingest writer copies.
(The rollups above it live in src/api/rollups/.)"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


class Event(SQLModel, table=True):
    """One event. A hypertable on `time`; unique keys must include `time`, hence (id, time)."""

    __tablename__ = "event"
    # Few indexes, because each one costs every insert: the hypertable's own index on time,
    # the primary key, and (site_id, time) for the site-scoped, time-bounded stats queries.
    # received_at is indexed for the exporter (src/api/exports/), which reads events by the time
    # they were received: a right-growing btree, cheap to append to.
    __table_args__ = (
        Index("ix_event_site_time", "site_id", "time"),
        Index("ix_event_received_at", "received_at"),
    )

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
    # The client company the event's site belongs to (null while sites are not authorized).
    client_id: str | None = Field(default=None, sa_column=Column(String(128)))


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
    "client_id",
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
    "varchar",
)
