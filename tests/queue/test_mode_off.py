"""With INGEST_QUEUE=none (the default, the suite's app): /queue/status says so, the DLQ routes
are 404, /health's queue part is off and does not make it unhealthy."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.anyio


async def test_queue_routes_without_a_queue(client: httpx.AsyncClient) -> None:
    status = await client.get("/queue/status")
    assert status.status_code == 200
    assert status.json()["mode"] == "none" and status.json()["connected"] is False
    for method, url in (("GET", "/queue/dlq"), ("POST", "/queue/dlq/replay")):
        response = await client.request(method, url)
        assert response.status_code == 404
        assert "INGEST_QUEUE" in response.json()["error"]
    health = await client.get("/health")
    assert health.status_code == 200 and health.json()["queue"]["mode"] == "none"

