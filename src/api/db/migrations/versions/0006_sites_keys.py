"""Sites, API keys, privacy salts and rate-limit counters.

Revision 0006, after 0005 (written as 0005; main's 0005 landed first). Five small tables
(docs/sites.md): `site`, `site_attribution`, `api_key`, `privacy_salt`, `rate_limit_counter`.
Nothing is filled: with no site and no key the service behaves as before."""

from __future__ import annotations

from alembic import op
from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from src.api.db import schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

metadata = MetaData()
site = Table(
    "site",
    metadata,
    Column("site_id", String(128), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("allowed_hostnames", ARRAY(String(255)), nullable=False, server_default=text("'{}'")),
    Column("privacy_level", String(16), nullable=False, server_default="standard"),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("disabled_at", DateTime(timezone=True)),
    Index("ix_site_client", "client_id"),
)
site_attribution = Table(
    "site_attribution",
    metadata,
    Column("site_id", String(128), primary_key=True),
    Column("client_id", String(128), nullable=False),
    Column("privacy_level", String(16), nullable=False),
    Column("allowed_hostnames", ARRAY(String(255)), nullable=False, server_default=text("'{}'")),
    Column("seen_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_site_attribution_client", "client_id"),
)
api_key = Table(
    "api_key",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(128), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("scopes", ARRAY(String(16)), nullable=False),
    Column("sites", ARRAY(String(128))),
    Column("hourly_limit", Integer, nullable=False, server_default=text("600")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_api_key_prefix", "prefix"),
)
privacy_salt = Table(
    "privacy_salt",
    metadata,
    Column("day", Date, primary_key=True),
    Column("salt", LargeBinary, nullable=False),
)
rate_limit_counter = Table(
    "rate_limit_counter",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


def upgrade() -> None:
    schema.create_tables(op.get_bind(), [site, site_attribution, api_key, privacy_salt, rate_limit_counter])


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
