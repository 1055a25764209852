"""Test fixtures: one app (with its real lifespan) per session, on the real TimescaleDB named by
DATABASE_URL (boot/test.sh points it at the local cluster's analytics_test database)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

if not os.environ.get("DATABASE_URL"):
    os.environ["DATABASE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:5433/analytics_test"
# Fixed dates in tests stay inside the retention window for years (the default, 3 months,
# would age them out); tests of the retention itself read the setting.
os.environ.setdefault("EVENTS_RETENTION", "5 years")
# Keep background jobs out of the tests' way; tests call them directly.
os.environ.setdefault("RETENTION_CHECK_INTERVAL", "0")
os.environ.setdefault("ROLLUP_JOB_INTERVAL", "0")
os.environ.setdefault("ROLLUP_FOLD_INTERVAL", "0")
os.environ.setdefault("SESSION_JOB_INTERVAL", "0")
os.environ.setdefault("EXPORT_INTERVAL", "0")
# The app's own exporter (POST /export/run from route and schema tests) writes into a folder of
# the test session, not into the checkout's exports/.
os.environ.setdefault(
    "RAW_EXPORT_URL", Path(tempfile.gettempdir(), f"analytics-test-exports-{os.getpid()}", "raw").as_uri()
)
os.environ.setdefault(
    "PROCESSED_EXPORT_URL",
    Path(tempfile.gettempdir(), f"analytics-test-exports-{os.getpid()}", "processed").as_uri(),
)

from src.api.db.schema import TimescaleInfo
from src.api.rollups.catalogue import CATALOGUE
from src.main import app as _app


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
async def app(anyio_backend: str) -> AsyncIterator[FastAPI]:
    async with _app.router.lifespan_context(_app):
        yield _app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
async def proxied_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose peer is a private address: a reverse proxy, trusted by default."""
    transport = httpx.ASGITransport(app=app, client=("10.0.0.2", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture
def engine(app: FastAPI) -> AsyncEngine:
    engine: AsyncEngine = app.state.engine
    return engine


@pytest.fixture
def timescale(app: FastAPI) -> TimescaleInfo:
    info: TimescaleInfo = app.state.timescale
    return info


@pytest.fixture
async def clean(engine: AsyncEngine) -> None:
    """Empty events, rollups (continuous aggregates follow on their next refresh) and activity."""
    activity = ("activity", "activity_first", "activity_late", "page_activity", "page_day", "page_activity_late")
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE event"))
        for name in (*CATALOGUE.names, CATALOGUE.late.name, *activity):
            if (
                await conn.execute(text("SELECT 1 FROM pg_tables WHERE tablename = :t"), {"t": name})
            ).first():
                await conn.execute(text(f"TRUNCATE {name}"))


def requires_community(info: TimescaleInfo) -> None:
    if not info.has_continuous_aggregates:
        pytest.skip("needs the TimescaleDB Community edition (continuous aggregates)")


@pytest.fixture
async def clean_sites(engine: AsyncEngine) -> AsyncIterator[None]:
    """No site or key before the test, and none left after it (a key left behind would make
    every other test's reads need one). Used by tests/sites, tests/auth and tests/privacy."""
    from tests.sites.helpers import clear_sites_and_keys

    await clear_sites_and_keys(engine)
    yield
    await clear_sites_and_keys(engine)


@pytest.fixture
async def fresh_sessions(engine: AsyncEngine) -> AsyncIterator[None]:
    """An empty sessions pipeline: no sessions, no changes, no watermark (the next run is full)."""

    async def reset() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("TRUNCATE session, session_daily_metric, session_change, session_run"))
            await conn.execute(text("UPDATE session_job SET watermark = NULL"))

    await reset()
    yield
    await reset()
