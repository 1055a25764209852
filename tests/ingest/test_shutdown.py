"""SIGTERM to a real server process with requests in flight: every acknowledged event is stored."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.errors import ServiceUnavailable
from src.api.events.schemas import EventCreate
from src.api.ingest.rows import RequestContext, build_row
from src.main import create_app
from tests.ingest.test_writer import stored_ids

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
# Events per request: 40 such requests are several of the writer's flushes (5,000 events each),
# so when the first is answered the others are still being read, queued or committed, however
# fast the machine (with 100 each, one flush could answer all 40 at once).
PER_REQUEST = 1000


def free_port() -> int:
    # Suites may run side by side on one machine: never a fixed port.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "LOG_LEVEL": "WARNING", "RETENTION_CHECK_INTERVAL": "0"}
    command = [
        sys.executable,
        "-m",
        "src.server",
        "src.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the live server did not start")


async def test_sigterm_flushes_every_acknowledged_event(engine: AsyncEngine) -> None:
    site = f"sigterm-{uuid.uuid4().hex[:8]}"
    process, port = start_server()
    try:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits) as http:

            async def post(i: int) -> tuple[set[str], httpx.Response | None]:
                ids = {str(uuid.uuid5(uuid.NAMESPACE_URL, f"{site}/{i}/{j}")) for j in range(PER_REQUEST)}
                events = [{"id": id_, "site_id": site, "page": f"/{i}"} for id_ in ids]
                try:
                    return ids, await http.post("/api/events/batch", json={"events": events})
                except httpx.HTTPError:  # refused or cut off after SIGTERM: not acknowledged
                    return ids, None

            tasks = [asyncio.create_task(post(i)) for i in range(40)]
            # Terminate once the first request is answered: others are then being read,
            # validated, queued or committed.
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            process.send_signal(signal.SIGTERM)
            in_flight = sum(not t.done() for t in tasks)
            results = await asyncio.gather(*tasks)
        # uvicorn re-raises the signal once its graceful shutdown (lifespan included) is done.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    acknowledged = [(ids, r) for ids, r in results if r is not None and r.status_code == 200]
    assert acknowledged, "some requests should have been acknowledged"
    assert in_flight > 0, "the signal should arrive with requests in flight"
    for _, response in acknowledged:
        assert response.json() == {"accepted": PER_REQUEST, "duplicates": 0, "rejected": []}
    stored = await stored_ids(engine, site)
    promised = set().union(*(ids for ids, _ in acknowledged))
    assert promised <= stored
    # Whatever else is stored was sent, and every request that failed did so with a clear status.
    assert stored <= set().union(*(ids for ids, _ in results))
    for _, response in results:
        assert response is None or response.status_code in (200, 503)


async def test_lifespan_shutdown_commits_everything_queued(engine: AsyncEngine) -> None:
    """The writer's own drain: requests still queued when the lifespan ends are committed and
    answered; none is dropped, none is answered without its commit."""
    site = f"drain-{uuid.uuid4().hex[:8]}"
    second = create_app()
    context = RequestContext(user_agent=None, client_ip=None, received_at=datetime.now(UTC))
    async with second.router.lifespan_context(second):
        writer = second.state.ingest.writer
        requests = [
            [build_row(EventCreate(page=f"/{i}/{j}", site_id=site), context) for j in range(50)]
            for i in range(20)
        ]
        tasks = [asyncio.create_task(writer.submit(rows)) for rows in requests]
        await asyncio.sleep(0)  # all queued; the writers have at most started on the first
        queued_at_shutdown = writer.queued_events
    results = await asyncio.gather(*tasks)
    assert queued_at_shutdown > 0
    assert all(r.inserted == (True,) * 50 for r in results)
    assert await stored_ids(engine, site) == {str(row[0]) for rows in requests for row in rows}
    with pytest.raises(ServiceUnavailable):
        await writer.submit(requests[0])
