"""The async engines and the request session dependencies: the one place that commits or rolls back.

A request's transactions run under the read statement timeout (STATS_STATEMENT_TIMEOUT), so one
slow question cannot hold a pooled connection for long; a statement it cuts off is a 504.

Two engines: DATABASE_URL for everything that writes (and reads that must see their own
writes), and STATS_DATABASE_URL — a streaming read replica, when set — for the stats questions
(`StatsSessionDep`). Unset, both are the same engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import psycopg
from fastapi import Depends, Request
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.config import Settings, get_settings
from src.api.db.schema import TimescaleInfo
from src.api.errors import GatewayTimeout

_TIMEOUT_MS = "statement_timeout_ms"
_SET_TIMEOUT = text("SELECT set_config('statement_timeout', :ms, true)")


def create_engine(settings: Settings, url: str | None = None) -> AsyncEngine:
    return create_async_engine(
        url or settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"options": f"-c timezone={settings.db_timezone}", "connect_timeout": 5},
    )


def create_stats_engine(settings: Settings, engine: AsyncEngine) -> AsyncEngine:
    """The engine stats questions read from: the replica's, or `engine` itself."""
    if settings.stats_database_url is None:
        return engine
    return create_engine(settings, settings.stats_database_url)


class RequestSession(Session):
    """The sync half of a request's session; its transactions carry the statement timeout."""


@event.listens_for(RequestSession, "after_begin")
def _set_statement_timeout(session: Session, _: SessionTransaction, connection: Connection) -> None:
    # On every transaction, not once per session: a session that rolls back and goes on (the
    # stats planner does) begins a new one, and SET LOCAL ends with the old.
    milliseconds = session.info.get(_TIMEOUT_MS)
    if milliseconds:
        connection.execute(_SET_TIMEOUT, {"ms": str(milliseconds)})


# Dependencies are async: a plain def would run in the thread pool, a costly hop per request.
async def get_engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def get_statement_timeout() -> float:
    """Seconds a request's statement may run; 0 for no limit."""
    return get_settings().stats_statement_timeout


async def get_session(
    request: Request, timeout: Annotated[float, Depends(get_statement_timeout)]
) -> AsyncIterator[AsyncSession]:
    async with _session(request.app.state.engine, timeout) as session:
        yield session


async def get_stats_session(
    request: Request, timeout: Annotated[float, Depends(get_statement_timeout)]
) -> AsyncIterator[AsyncSession]:
    """A session on the stats engine (STATS_DATABASE_URL's replica when set): read-only work."""
    async with _session(request.app.state.stats_engine, timeout) as session:
        yield session


@asynccontextmanager
async def _session(engine: AsyncEngine, timeout: float) -> AsyncIterator[AsyncSession]:
    """The request's session: committed after the route, rolled back when it raised."""
    # Whole milliseconds, at least one: PostgreSQL reads statement_timeout = 0 as no limit.
    milliseconds = max(1, round(timeout * 1000)) if timeout > 0 else 0
    async with AsyncSession(
        engine,
        expire_on_commit=False,
        sync_session_class=RequestSession,
        info={_TIMEOUT_MS: milliseconds},
    ) as session:
        try:
            yield session
            await session.commit()
        except DBAPIError as exc:
            await session.rollback()
            if isinstance(exc.orig, psycopg.errors.QueryCanceled):
                raise GatewayTimeout(f"query timed out after {timeout:g} s") from exc
            raise  # src/api/errors.py answers an unreachable database with 503
        except BaseException:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session)]
StatsSessionDep = Annotated[AsyncSession, Depends(get_stats_session)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]


async def get_timescale(request: Request) -> TimescaleInfo:
    info: TimescaleInfo = request.app.state.timescale
    return info


TimescaleDep = Annotated[TimescaleInfo, Depends(get_timescale)]
