"""Slow clients against a live server (python -m src.server, as boot/dev.sh runs it): headers
and bodies have read timeouts, and a slow body costs its sender, not the others."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from benchmarks.server import running_server

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0
pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    limits = {
        "HEADER_READ_TIMEOUT": str(HEADER_TIMEOUT),
        "BODY_READ_TIMEOUT": str(BODY_TIMEOUT),
        "INGEST_MEMORY_BYTES": str(16 * 1024 * 1024),
        "MAX_BODY_BYTES": str(1024 * 1024),
    }
    with running_server(os.environ["DATABASE_URL"], extra_env=limits) as (base, _):
        yield int(base.rsplit(":", 1)[1])


async def read_all(reader: asyncio.StreamReader, within: float) -> bytes:
    """Everything the server sends until it closes the connection (or `within` seconds)."""
    return await asyncio.wait_for(reader.read(), within)


async def test_slow_headers_are_answered_408_and_closed(server: int) -> None:
    connections = [await asyncio.open_connection("127.0.0.1", server) for _ in range(50)]
    started = time.monotonic()
    reading = [asyncio.create_task(read_all(reader, 5 * HEADER_TIMEOUT)) for reader, _ in connections]
    for n, (_, writer) in enumerate(connections):
        if n % 2:  # half of them: part of a request, then nothing
            writer.write(b"POST /api/events/batch HTTP/1.1\r\nHost: test\r\n")
    # The other half sends one byte of a request line at a time, which kept uvicorn's timer off.
    for byte in b"GET /healthz":
        for n, (_, writer) in enumerate(connections):
            if not n % 2 and not reading[n].done():
                writer.write(bytes([byte]))
        await asyncio.sleep(HEADER_TIMEOUT / 4)
    answers = await asyncio.gather(*reading)
    elapsed = time.monotonic() - started
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
    assert elapsed < 4 * HEADER_TIMEOUT
    for _, writer in connections:
        writer.close()


async def test_a_slow_body_costs_its_sender_not_others(server: int) -> None:
    """8 bodies sent a byte at a time neither hold the memory budget nor a writer: batches sent
    meanwhile are answered at once; the slow ones get 408 once their time is up."""
    slow = []
    for _ in range(8):
        reader, writer = await asyncio.open_connection("127.0.0.1", server)
        writer.write(
            b"POST /api/events/batch HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
            b"content-length: 1000000\r\n\r\n{"
        )
        slow.append((reader, writer))

    async def drip() -> None:
        for _ in range(int(BODY_TIMEOUT * 4)):
            for _, writer in slow:
                with contextlib.suppress(ConnectionError):
                    writer.write(b" ")
            await asyncio.sleep(0.25)

    dripping = asyncio.create_task(drip())
    site = f"slowbody-{uuid.uuid4().hex[:8]}"
    batch = {"events": [{"page": f"/{i}", "site_id": site} for i in range(1000)]}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server}", timeout=10) as http:
        started = time.monotonic()
        answers = [await http.post("/api/events/batch", json=batch) for _ in range(5)]
        took = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert took < BODY_TIMEOUT  # none waited for the slow senders
    refused = await asyncio.gather(*(read_all(reader, 4 * BODY_TIMEOUT) for reader, _ in slow))
    dripping.cancel()
    for answer in refused:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        assert b"did not arrive within 2 seconds" in answer
    for _, writer in slow:
        writer.close()
