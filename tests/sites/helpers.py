"""A service with settings of its own (its real lifespan, on the tests' database), clients for
it, and cleanup of what the sites and keys tests leave: shared by tests/sites, tests/auth and
tests/privacy."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.main import create_app

ADMIN_KEY = "admin-key-for-the-tests-0123456789"
SECRET_KEY = "secret-key-for-the-tests-0123456789abcdef"
ADMIN = {"x-api-key": ADMIN_KEY}
PEER = ("203.0.113.7", 40000)
SITE_TABLES = ("site", "site_attribution", "api_key", "rate_limit_counter")


@asynccontextmanager
async def service(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app built with the tests' settings plus `overrides`, started, and a client for it."""
    fields: dict[str, Any] = {"admin_api_key": ADMIN_KEY, "secret_key": SECRET_KEY, "site_cache_seconds": 0}
    settings = dataclasses.replace(get_settings(), **{**fields, **overrides})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=PEER)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


async def clear_sites_and_keys(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(SITE_TABLES)}"))


async def add_site(client: httpx.AsyncClient, site_id: str, client_id: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/sites", json={"site_id": site_id, "client_id": client_id, **fields}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def stored_rows(engine: AsyncEngine, site_id: str) -> list[dict[str, Any]]:
    """Every stored event of the site, each column as text (row_to_json), to search for values."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT row_to_json(e)::text AS row FROM event e WHERE site_id = :s ORDER BY time"),
            {"s": site_id},
        )
        return [json.loads(row.row) for row in result]


class PixelManagementStub:
    """A real HTTP server speaking the pixel-management service's domain lookup, on a free port,
    in a thread. `domains` maps a domain to its JSON answer (absent: 404); `requests` counts
    lookups per domain; `stop()` takes it off the network (connection refused)."""

    def __init__(self) -> None:
        self.domains: dict[str, dict[str, Any]] = {}
        self.requests: dict[str, int] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                prefix = "/api/v1/config/domain/"
                domain = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
                stub.requests[domain] = stub.requests.get(domain, 0) + 1
                answer = stub.domains.get(domain)
                body = json.dumps(answer if answer is not None else {"error": "unknown domain"}).encode()
                self.send_response(200 if answer is not None else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def pixel_management_stub() -> Iterator[PixelManagementStub]:
    stub = PixelManagementStub()
    try:
        yield stub
    finally:
        if stub.thread.is_alive():
            stub.stop()
