"""GET /, /healthz (liveness, no database) and /health (readiness with the database)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from src.api.config import get_settings
from src.api.db.engine import EngineDep, TimescaleDep
from src.api.queue.router import OptionalBrokerDep, queue_status

router = APIRouter(tags=["system"])


@router.get("/")
async def read_root() -> dict[str, str]:
    return {"hello": "world"}


@router.get("/healthz")
async def liveness() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/health")
async def readiness(engine: EngineDep, timescale: TimescaleDep, broker: OptionalBrokerDep) -> JSONResponse:
    """Healthy when the database answers and, in queue mode, the broker too: the API can then
    accept events. In queue mode a database outage does not stop ingest (the broker holds the
    events), but /health still reports it unhealthy: stats cannot be answered."""
    now = datetime.now(UTC).isoformat()
    queue = (await queue_status(broker)).model_dump(mode="json")
    edition = {"edition": timescale.edition, "version": timescale.version}
    environment = get_settings().environment
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        database = "connected"
    except (OperationalError, DBAPIError, OSError, TimeoutError):
        database = "unavailable"
    healthy = database == "connected" and (broker is None or queue["connected"])
    return JSONResponse(
        {
            "status": "healthy" if healthy else "unhealthy",
            "database": database,
            "queue": queue,
            "timescaledb": edition,
            "environment": environment,
            "timestamp": now,
        },
        status_code=200 if healthy else 503,
    )
