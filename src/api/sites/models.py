"""The site registry's tables: `site` (a client company's domain, what may send for it, how its
events are treated) and `site_attribution` (answers of the remote pixel-management service,
kept so that stats can find a client's sites and a restart still has a last known answer).
Registered in SQLModel's metadata, so `db check` compares them with the migrations."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, String, Table, func, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import SQLModel

SITE_TABLE = Table(
    "site",
    SQLModel.metadata,
    Column("site_id", String(128), primary_key=True),  # the domain, as events name their site
    Column("client_id", String(128), nullable=False),
    # Hostnames a browser may send from: exact names and `*.example.com` patterns.
    Column("allowed_hostnames", ARRAY(String(255)), nullable=False, server_default=text("'{}'")),
    Column("privacy_level", String(16), nullable=False, server_default="standard"),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("disabled_at", DateTime(timezone=True)),
    Index("ix_site_client", "client_id"),
)

SITE_ATTRIBUTION_TABLE = Table(
    "site_attribution",
    SQLModel.metadata,
    Column("site_id", String(128), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("privacy_level", String(16), nullable=False),
    Column("allowed_hostnames", ARRAY(String(255)), nullable=False, server_default=text("'{}'")),
    Column("seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_site_attribution_client", "client_id"),
)
