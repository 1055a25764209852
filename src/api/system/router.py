"""GET /, /healthz (liveness, no database) and /health (readiness with the database)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from src.api.config import get_settings
from src.api.db.engine import EngineDep, TimescaleDep

router = APIRouter(tags=["system"])


@router.get("/")
async def read_root() -> dict[str, str]:
    return {"hello": "world"}


@router.get("/healthz")
async def liveness() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health")
async def readiness(engine: EngineDep, timescale: TimescaleDep) -> JSONResponse:
    now = datetime.now(UTC).isoformat()
    edition = {"edition": timescale.edition, "version": timescale.version}
    environment = get_settings().environment
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (OperationalError, DBAPIError, OSError, TimeoutError):
        return JSONResponse(
            {
                "status": "unhealthy",
                "database": "unavailable",
                "timescaledb": edition,
                "environment": environment,
                "timestamp": now,
            },
            status_code=503,
        )
    return JSONResponse(
        {
            "status": "healthy",
            "database": "connected",
            "timescaledb": edition,
            "environment": environment,
            "timestamp": now,
        }
    )
