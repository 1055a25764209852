"""The body guard: every body stops at MAX_BODY_BYTES whatever its framing, and what bodies
parse into is held in a byte budget, so memory is bounded for any input."""

from __future__ import annotations

import tracemalloc
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.ingest.budget import parse_cost

pytestmark = pytest.mark.anyio

INGEST_ROUTES = ("/api/events/", "/api/events/batch", "/collect", "/event", "/events")
CHUNK = 64 * 1024


class Stream:
    """A chunked body of `total` bytes that counts how much of it the server read."""

    def __init__(self, head: bytes, total: int) -> None:
        self.head = head
        self.total = total
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        self.sent = len(self.head)
        while self.sent < self.total:
            self.sent += CHUNK
            yield b"0," * (CHUNK // 2)


@pytest.mark.parametrize("route", INGEST_ROUTES)
async def test_a_chunked_body_stops_at_the_limit_on_every_route(
    client: httpx.AsyncClient, engine: AsyncEngine, route: str
) -> None:
    limit = get_settings().max_body_bytes
    site = f"chunked-{uuid.uuid4().hex[:8]}"
    stream = Stream(b'{"page": "/", "site_id": "%s", "x": [' % site.encode(), 20 * limit)
    answer = await client.post(route, content=stream, headers={"content-type": "application/json"})
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"] == f"request body is larger than {limit} bytes"
    assert len(answer.content) < 200  # nothing echoed back
    assert answer.headers["connection"] == "close"
    assert stream.sent <= limit + 2 * CHUNK  # reading stopped at the limit, not at 100 MB
    async with engine.connect() as conn:
        stored = await conn.execute(text("SELECT count(*) FROM event WHERE site_id = :s"), {"s": site})
        assert stored.scalar_one() == 0


SHAPES = {
    "empty lists": b'{"events": [{"page": "/", "properties": {"x": ['
    + b",".join([b"[]"] * 20_000)
    + b"]}}]}",
    "empty objects": b"[" + b",".join([b"{}"] * 200_000) + b"]",
    "small objects": b"[" + b",".join([b'{"a":1}'] * 100_000) + b"]",
    "short strings": b"[" + b",".join([b'"a"'] * 200_000) + b"]",
    "distinct strings": b"[" + b",".join(b'"%d"' % i for i in range(100_000)) + b"]",
    "keys": b"{" + b",".join(b'"k%d":1' % i for i in range(100_000)) + b"}",
    "floats": b"[" + b",".join([b"1.5"] * 200_000) + b"]",
    "nesting": b"[" * 1000 + b"]" * 1000,
    "one long string": b'["' + b"x" * 2_000_000 + b'"]',
    "events": b'{"events": ['
    + b",".join(
        b'{"page": "/p/%d", "site_id": "shop.example.com", "user_agent": "Mozilla/5.0", "properties": {"n": %d}}'
        % (i, i)
        for i in range(10_000)
    )
    + b"]}",
}


@pytest.mark.parametrize("shape", SHAPES)
def test_parse_cost_bounds_what_a_body_parses_into(shape: str) -> None:
    body = SHAPES[shape]
    orjson.loads(b"[[]]")  # orjson's one-time buffers are not the body's
    tracemalloc.start()
    try:
        parsed = orjson.loads(body)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del parsed
    assert held <= parse_cost(body) <= 10 * held + 10 * len(body), (held, parse_cost(body))


async def test_bodies_are_held_at_what_they_parse_into(app: FastAPI, client: httpx.AsyncClient) -> None:
    """Two bodies of the same size: plain events fit the budget left, nested junk (which parses
    into twenty times its size) is refused with 503 before it is parsed."""
    budget = app.state.body_budget
    junk = b'{"events": [{"page": "/", "properties": {"x": [' + b",".join([b"[]"] * 150_000) + b"]}}]}"
    events = orjson.dumps({"events": [{"page": f"/{'p' * 40}/{i}"} for i in range(len(junk) // 60)]})
    assert abs(len(events) - len(junk)) < len(junk) // 5
    saved = budget.limit
    budget.limit = parse_cost(events) * 3
    budget.held += parse_cost(events)  # another request holds some
    try:
        refused = await client.post(
            "/api/events/batch", content=junk, headers={"content-type": "application/json"}
        )
        accepted = await client.post(
            "/api/events/batch", content=events, headers={"content-type": "application/json"}
        )
    finally:
        budget.limit = saved
        budget.held -= parse_cost(events)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1", refused.text
    assert accepted.status_code == 200 and accepted.json()["accepted"] == len(orjson.loads(events)["events"])
    assert budget.held == 0  # everything given back once answered
