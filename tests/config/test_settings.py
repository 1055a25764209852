"""Settings are parsed once, into typed values; a bad one stops the service with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from src.api.config import Duration, SettingsError, load_settings, parse_duration

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EVENTS_RETENTION", "100 yrs please"),
        ("EVENTS_RETENTION", "101 years"),
        ("EVENTS_RETENTION", "2 hours"),
        ("EVENTS_CHUNK_INTERVAL", "1 month"),
        ("TRUSTED_PROXIES", "10.0.0.0/33"),
        ("TRUSTED_PROXIES", "10.0.0.1,proxy.local"),
        ("DB_POOL_SIZE", "ten"),
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_MAX_OVERFLOW", "-1"),
        ("ENVIRONMENT", "prod"),
        ("DB_TIMEZONE", "Mars/Olympus"),
        ("CORS_ORIGINS", "example.com"),
        ("PORT", "70000"),
        ("MAX_BODY_BYTES", "5MB"),
        ("LOG_LEVEL", "loud"),
        ("DOCS_ENABLED", "maybe"),
        ("INGEST_FLUSH_INTERVAL", "-1"),
        ("BODY_READ_TIMEOUT", "0"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"invalid setting {variable}: ")


def test_the_service_stops_with_one_line_naming_the_variable() -> None:
    env = {**os.environ, "EVENTS_RETENTION": "100 yrs please"}
    done = subprocess.run(
        [sys.executable, "-c", "import src.main"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "invalid setting EVENTS_RETENTION: must be 'off' or a duration such as '90 days' or '3 months'"
        " (got '100 yrs please')"
    ]


def test_the_database_url_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://user:s3cret@db/x")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.variable == "DATABASE_URL" and "s3cret" not in str(caught.value)


def test_retention_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime(2026, 5, 31, 12, tzinfo=UTC)
    monkeypatch.setenv("EVENTS_RETENTION", "90 days 12 hours")
    compound = load_settings()
    assert compound.events_retention == Duration(months=0, seconds=90 * 86400 + 12 * 3600)
    assert compound.retention_start(now) == now - timedelta(days=90, hours=12)
    assert compound.events_retention.sql == f"{90 * 86400 + 12 * 3600} seconds"
    monkeypatch.setenv("EVENTS_RETENTION", "3 months")
    # Calendar months, as PostgreSQL subtracts them: 31 May less 3 months is 28 February.
    assert load_settings().retention_start(now) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    monkeypatch.setenv("EVENTS_RETENTION", "100 years")
    assert load_settings().retention_start(now) == datetime(1926, 5, 31, 12, tzinfo=UTC)
    monkeypatch.setenv("EVENTS_RETENTION", "off")
    kept = load_settings()
    assert kept.events_retention is None and kept.retention_start(now) is None
    assert kept.stored_since(now) == datetime(1970, 1, 1, tzinfo=UTC)


def test_older_systems_names_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DB_POOL_SIZE", raising=False)
    monkeypatch.setenv("DATABASE_POOL_SIZE", "7")
    monkeypatch.setenv("DATABASE_MAX_OVERFLOW", "3")
    monkeypatch.setenv("ENVIRONMENT", "Production")
    settings = load_settings()
    assert (settings.db_pool_size, settings.db_max_overflow, settings.environment) == (7, 3, "production")
    monkeypatch.setenv("DB_POOL_SIZE", "9")  # the canonical name wins
    assert load_settings().db_pool_size == 9


def test_durations() -> None:
    assert parse_duration("1d") == Duration(0, 86400)
    assert parse_duration("2 weeks 1 day") == Duration(0, 15 * 86400)
    assert parse_duration("1 year 2 months") == Duration(14, 0)
    assert parse_duration("1 year 2 months").sql == "14 months"
    for bad in ("", "0 days", "days", "1 fortnight", "1.5 days", "-1 day"):
        with pytest.raises(ValueError):
            parse_duration(bad)
