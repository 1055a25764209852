"""Read routes while the database cannot be reached, and queries cut off by the statement
timeout: JSON 503 with Retry-After (504 for the timeout), never a plain-text 500 or the
database's error text. The database goes away for real — a closed port, a proxy whose sockets
are cut, a pool with no free connection — without touching the shared cluster."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from src.api.config import get_settings
from src.api.db.engine import create_engine, get_session, get_statement_timeout, get_stats_session
from src.api.errors import is_unavailable

pytestmark = pytest.mark.anyio

DAY = "2026-01-05"
# Every route that reads the database through the request session (checked against the app's
# routes below, so a new read route cannot be left out).
READ_ROUTES: list[tuple[str, str]] = [
    ("GET", "/api/events/"),
    ("GET", f"/api/events/{uuid.UUID(int=1)}"),
    ("DELETE", f"/api/events/{uuid.UUID(int=1)}"),
    ("GET", "/api/stats/timeseries"),
    ("GET", "/api/stats/breakdown"),
    ("GET", "/api/stats/summary"),
    ("GET", "/api/stats/realtime"),
    ("GET", f"/stats?date={DAY}"),
    ("GET", "/stats"),
    ("GET", f"/stats/dau?from_date={DAY}&to={DAY}"),
    ("GET", f"/stats/top-events?from_date={DAY}&to={DAY}"),
    ("GET", f"/stats/retention?start_date={DAY}"),
    ("GET", "/events/recent"),
    ("GET", "/events/count"),
    ("GET", "/etl/recent-sessions"),
]
# The sites and keys admin routes read the database too, but behind an admin key that a keyless
# service answers 401 to first; tests/sites/test_unavailable_admin.py covers their 503.
ADMIN_ROUTES = {
    (method, path)
    for path, methods in (
        ("/api/sites", ("GET", "POST")),
        ("/api/sites/{site_id}", ("GET", "PATCH", "DELETE")),
        ("/api/keys", ("GET", "POST")),
        ("/api/keys/{key_id}", ("DELETE",)),
    )
    for method in methods
}
# What the database's error text would give away.
LEAKS = ("SELECT", "psycopg", "127.0.0.1", "connection", "[SQL", "parameters")


def _uses_session(dependant: Dependant) -> bool:
    return any(d.call in (get_session, get_stats_session) or _uses_session(d) for d in dependant.dependencies)


def test_every_read_route_is_covered(app: FastAPI) -> None:
    reading = {
        (method, route.path_format)
        for route in app.routes
        if isinstance(route, APIRoute) and _uses_session(route.dependant)
        for method in route.methods
    } - ADMIN_ROUTES
    covered = set()
    for method, url in READ_ROUTES:
        path = url.split("?", 1)[0].rstrip("/")  # as StripTrailingSlash passes it on
        for route in app.routes:
            if isinstance(route, APIRoute) and method in route.methods and route.path_regex.match(path):
                covered.add((method, route.path_format))
    assert reading == covered


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert "database" in body["error"]
    for leak in LEAKS:
        assert leak not in response.text


@contextlib.contextmanager
def engine_of(app: FastAPI, engine: AsyncEngine) -> Iterator[None]:
    """The app's read routes on `engine` (the ingest writer keeps its own), stats routes too."""
    real, stats = app.state.engine, app.state.stats_engine
    app.state.engine = app.state.stats_engine = engine
    try:
        yield
    finally:
        app.state.engine, app.state.stats_engine = real, stats


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_url(host: str, port: int) -> str:
    url = make_url(get_settings().database_url).set(host=host, port=port)
    return url.render_as_string(hide_password=False)


async def test_read_routes_are_503_when_the_database_refuses(app: FastAPI, client: httpx.AsyncClient) -> None:
    # Nothing listens on a just-freed port: what a stopped database gives. The engine is built
    # exactly as the app builds its own.
    settings = replace(get_settings(), database_url=database_url("127.0.0.1", free_port()))
    engine = create_engine(settings)
    try:
        with engine_of(app, engine):
            for method, url in READ_ROUTES:
                assert_unavailable(await client.request(method, url))
    finally:
        await engine.dispose()


class CuttableProxy:
    """A TCP proxy to the test database whose connections can be stalled and cut like a failed
    network link; while cut it listens on nothing, so reconnecting is refused."""

    def __init__(self) -> None:
        url = make_url(get_settings().database_url)
        self.target = (url.host or "127.0.0.1", url.port or 5432)
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.links: set[asyncio.StreamWriter] = set()
        self.stalled = asyncio.Event()  # set: bytes are held back, not forwarded
        self.held = asyncio.Event()  # set once bytes were held back

    @property
    def url(self) -> str:
        return database_url("127.0.0.1", self.port)

    async def start(self) -> None:
        self.stalled.clear()
        self.held.clear()
        self.server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()
        await self.server.wait_closed()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.links.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if self.stalled.is_set():
                    self.held.set()
                    continue
                writer.write(data)
                await writer.drain()
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[CuttableProxy]:
    link = CuttableProxy()
    await link.start()
    yield link
    with contextlib.suppress(Exception):
        await link.cut()


async def test_a_link_cut_mid_request_is_503_and_the_next_request_recovers(
    app: FastAPI, client: httpx.AsyncClient, proxy: CuttableProxy
) -> None:
    engine = create_engine(replace(get_settings(), database_url=proxy.url))
    try:
        with engine_of(app, engine):
            assert (await client.get("/api/stats/summary")).status_code == 200  # a pooled connection
            proxy.stalled.set()
            request = asyncio.create_task(client.get("/api/stats/summary"))
            await asyncio.wait_for(proxy.held.wait(), 10)  # the request is talking to the database
            await proxy.cut()
            assert_unavailable(await asyncio.wait_for(request, 10))
            for method, url in READ_ROUTES:  # the database stays away: reconnecting is refused
                assert_unavailable(await client.request(method, url))
            await proxy.start()  # the database is back: so are the answers, on fresh connections
            for method, url in READ_ROUTES:
                assert (await client.request(method, url)).status_code in (200, 404), (method, url)
    finally:
        await engine.dispose()


async def test_no_free_pooled_connection_is_503(app: FastAPI, client: httpx.AsyncClient) -> None:
    engine = create_async_engine(get_settings().database_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        async with engine.connect() as held:
            await held.execute(text("SELECT 1"))
            with engine_of(app, engine):
                assert_unavailable(await client.get("/api/stats/summary"))
                assert_unavailable(await client.get(f"/stats/dau?from_date={DAY}&to={DAY}"))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def statement_timeout(app: FastAPI, seconds: float) -> Iterator[None]:
    async def override() -> float:
        return seconds

    app.dependency_overrides[get_statement_timeout] = override
    try:
        yield
    finally:
        app.dependency_overrides.pop(get_statement_timeout)


# Ten years in two-hour buckets, every one returned (43,800 of them) and distinct visitors from
# raw events: each statement takes well over a millisecond, whatever is stored.
SLOW_QUESTION = {
    "from": (datetime.now(UTC) - timedelta(days=3650)).isoformat(),
    "to": datetime.now(UTC).isoformat(),
    "interval": "2 hours",
    "fill": "true",
    "metrics": "events,visitors",
    "source": "raw",
}


async def test_a_query_over_the_statement_timeout_is_504(app: FastAPI, client: httpx.AsyncClient) -> None:
    with statement_timeout(app, 0.001):
        response = await client.get("/api/stats/timeseries", params=SLOW_QUESTION)
    assert response.status_code == 504, response.text[:500]
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == "query timed out after 0.001 s"
    assert "canceling" not in response.text and "SELECT" not in response.text
    # No limit (0): the same question is answered; the 504 was the timeout's.
    with statement_timeout(app, 0):
        assert (await client.get("/api/stats/timeseries", params=SLOW_QUESTION)).status_code == 200


async def test_the_timeout_applies_to_every_transaction_of_the_request(app: FastAPI) -> None:
    """Read through the session dependency itself: each new transaction (after a rollback,
    as the stats planner does) runs under the configured limit."""

    class Request:
        def __init__(self, app: FastAPI) -> None:
            self.app = app

    sessions = get_session(Request(app), 2.5)  # type: ignore[arg-type]
    session = await anext(sessions)
    first = (await session.execute(text("SHOW statement_timeout"))).scalar_one()
    await session.rollback()
    second = (await session.execute(text("SHOW statement_timeout"))).scalar_one()
    with contextlib.suppress(StopAsyncIteration):
        await anext(sessions)
    assert first == second == "2500ms"


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (psycopg.OperationalError("connection refused"), True),  # no answer from the server
        (psycopg.errors.AdminShutdown("terminating connection"), True),
        (psycopg.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg.errors.TooManyConnections("too many clients already"), True),
        (psycopg.errors.ConnectionFailure("connection failure"), True),
        # The server answered about this query: retried, it would fail again.
        (psycopg.errors.OutOfMemory("out of memory"), False),
        (psycopg.errors.LockNotAvailable("could not obtain lock"), False),
        (psycopg.errors.QueryCanceled("statement timeout"), False),  # the session's 504
        (psycopg.errors.NumericValueOutOfRange("out of range"), False),
    ],
)
def test_which_database_errors_mean_unavailable(error: psycopg.Error, unavailable: bool) -> None:
    # Wrapped as SQLAlchemy raises them from a statement.
    wrapped = sa_exc.DBAPIError.instance("SELECT 1", {}, error, psycopg.Error)
    assert is_unavailable(wrapped) is unavailable
    assert is_unavailable(error) is unavailable
