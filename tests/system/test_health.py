from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.anyio


async def test_root_and_liveness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/")).json() == {"hello": "world"}
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_health_reports_database_and_edition(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["environment"] == "development"
    assert body["database"] == "connected"
    assert body["timescaledb"]["edition"] in ("apache", "timescale")
    assert body["timescaledb"]["version"]
    assert body["timestamp"]


async def test_health_is_503_when_the_database_is_down(app: FastAPI, client: httpx.AsyncClient) -> None:
    real = app.state.engine
    # Nothing listens on port 1: the same failure a stopped database gives.
    app.state.engine = create_async_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    try:
        response = await client.get("/health")
        liveness = await client.get("/healthz")
    finally:
        await app.state.engine.dispose()
        app.state.engine = real
    assert response.status_code == 503
    assert response.json()["database"] == "unavailable"
    assert liveness.status_code == 200
