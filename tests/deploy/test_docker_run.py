"""boot/docker-run.sh for real: gunicorn with uvicorn workers against the test database,
serving requests, then SIGTERM with requests in flight: every acknowledged event is stored."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_gunicorn_serves_and_stops_cleanly_without_losing_events(engine: AsyncEngine) -> None:
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "GRACEFUL_TIMEOUT": "20",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        ["sh", str(ROOT / "boot/docker-run.sh")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    site = f"gunicorn-{uuid.uuid4().hex[:8]}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline, "gunicorn did not start"
                await asyncio.sleep(0.2)
            first = await http.post("/api/events/", json={"site_id": site, "page": "/"})
            assert first.status_code == 200
            listed = await http.get("/api/events/", params={"pages": "/", "duration": "1 hour"})
            assert listed.status_code == 200 and listed.json()

            async def post(i: int) -> httpx.Response | None:
                try:
                    return await http.post(
                        "/api/events/batch",
                        json={"events": [{"site_id": site, "page": f"/{i}/{j}"} for j in range(20)]},
                    )
                except httpx.TransportError:
                    return None  # refused during shutdown: not acknowledged, so not promised

            tasks = [asyncio.create_task(post(i)) for i in range(150)]
            await asyncio.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            responses = await asyncio.gather(*tasks)
        code = await asyncio.to_thread(process.wait, 40)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0
    accepted = sum(r.json()["accepted"] for r in responses if r is not None and r.status_code == 200)
    assert accepted > 0
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT count(*) FROM event WHERE site_id = :s AND time > now() - interval '1 day'"),
                {"s": site},
            )
        ).scalar_one()
    assert stored == accepted + 1
