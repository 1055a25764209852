"""Every setting of the service. This module is the only reader of the environment (and .env)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

from decouple import Csv, config

LOCAL_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5433/analytics"


def _database_url() -> str:
    url: str = config("DATABASE_URL", default="")
    if not url:
        host: str = config("POSTGRES_HOST", default="")
        if not host:
            return LOCAL_DATABASE_URL
        user = quote(config("POSTGRES_USER", default="postgres"), safe="")
        password = quote(config("POSTGRES_PASSWORD", default=""), safe="")
        port: int = config("POSTGRES_PORT", default=5432, cast=int)
        name: str = config("POSTGRES_DB", default="postgres")
        auth = f"{user}:{password}" if password else user
        url = f"postgresql+psycopg://{auth}@{host}:{port}/{name}"
    # Hosting platforms hand out postgres:// URLs; we always speak psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Settings:
    database_url: str
    db_timezone: str
    db_pool_size: int
    db_startup_timeout: float
    host: str
    port: int
    cors_origins: tuple[str, ...]
    events_chunk_interval: str
    events_retention: str
    retention_check_interval: float
    rollup_job_interval: float
    batch_max_events: int
    max_body_bytes: int
    ingest_queue_max_events: int
    ingest_flush_max_events: int
    ingest_flush_interval: float
    ingest_writers: int
    api_keys: tuple[str, ...]
    trusted_proxies: tuple[str, ...]
    log_level: str
    stats_statement_timeout: float
    docs_enabled: bool


@lru_cache
def get_settings() -> Settings:
    return Settings(
        database_url=_database_url(),
        db_timezone=config("DB_TIMEZONE", default="UTC"),
        db_pool_size=config("DB_POOL_SIZE", default=10, cast=int),
        db_startup_timeout=config("DB_STARTUP_TIMEOUT", default=30.0, cast=float),
        host=config("HOST", default="127.0.0.1"),
        port=config("PORT", default=8002, cast=int),
        cors_origins=tuple(config("CORS_ORIGINS", default="*", cast=Csv())),
        events_chunk_interval=config("EVENTS_CHUNK_INTERVAL", default="1 day"),
        events_retention=config("EVENTS_RETENTION", default="3 months"),
        retention_check_interval=config("RETENTION_CHECK_INTERVAL", default=3600.0, cast=float),
        rollup_job_interval=config("ROLLUP_JOB_INTERVAL", default=60.0, cast=float),
        batch_max_events=config("BATCH_MAX_EVENTS", default=10_000, cast=int),
        max_body_bytes=config("MAX_BODY_BYTES", default=5 * 1024 * 1024, cast=int),
        ingest_queue_max_events=config("INGEST_QUEUE_MAX_EVENTS", default=200_000, cast=int),
        ingest_flush_max_events=config("INGEST_FLUSH_MAX_EVENTS", default=5_000, cast=int),
        ingest_flush_interval=config("INGEST_FLUSH_INTERVAL", default=0.005, cast=float),
        ingest_writers=config("INGEST_WRITERS", default=3, cast=int),
        api_keys=tuple(k for k in config("API_KEYS", default="", cast=Csv()) if k),
        trusted_proxies=tuple(config("TRUSTED_PROXIES", default="*", cast=Csv())),
        log_level=config("LOG_LEVEL", default="INFO"),
        stats_statement_timeout=config("STATS_STATEMENT_TIMEOUT", default=30.0, cast=float),
        docs_enabled=config("DOCS_ENABLED", default=True, cast=bool),
    )
