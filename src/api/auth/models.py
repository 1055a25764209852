"""API keys and the rate limiter's counters (when Redis does not keep them). A key is stored
only as its HMAC-SHA256 under SECRET_KEY, beside a short prefix that people recognise and
lookups use; the secret itself is shown once, when the key is created."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table, Uuid, func, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlmodel import SQLModel

API_KEY_TABLE = Table(
    "api_key",
    SQLModel.metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("scopes", ARRAY(String(16)), nullable=False),
    Column("sites", ARRAY(String(128))),  # null: every site
    Column("hourly_limit", Integer, nullable=False, server_default=text("600")),  # 0: no limit
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_api_key_prefix", "prefix"),
)

# Fixed-window counters of the `limits` library's storage protocol (src/api/auth/ratelimit.py).
RATE_LIMIT_TABLE = Table(
    "rate_limit_counter",
    SQLModel.metadata,
    Column("key", String(255), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
