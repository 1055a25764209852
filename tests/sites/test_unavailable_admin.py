"""The sites and keys admin routes while the database cannot be reached: 503 with Retry-After,
like every read route (tests/db/test_unavailable.py), never a 500 or the database's text."""

from __future__ import annotations

import socket
import uuid
from dataclasses import replace

import pytest
from sqlalchemy.engine import make_url

from src.api.config import get_settings
from src.api.db.engine import create_engine
from tests.sites.helpers import ADMIN, service

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("clean_sites")]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_admin_routes_are_503_when_the_database_refuses() -> None:
    url = make_url(get_settings().database_url).set(host="127.0.0.1", port=_closed_port())
    unreachable = create_engine(
        replace(get_settings(), database_url=url.render_as_string(hide_password=False))
    )
    routes = [
        ("GET", "/api/sites", None),
        ("POST", "/api/sites", {"site_id": "shop.example.com", "client_id": "acme"}),
        ("GET", "/api/sites/shop.example.com", None),
        ("PATCH", "/api/sites/shop.example.com", {"privacy_level": "strict"}),
        ("DELETE", "/api/sites/shop.example.com", None),
        ("GET", "/api/keys", None),
        ("POST", "/api/keys", {"name": "k", "scopes": ["ingest"]}),
        ("DELETE", f"/api/keys/{uuid.UUID(int=1)}", None),
    ]
    try:
        async with service(site_authorization="registry") as (app, http):
            real = app.state.engine
            app.state.engine = unreachable
            registry = app.state.site_registry
            registry.engine = unreachable  # CORS reads the registry before any route
            try:
                for method, path, body in routes:
                    answer = await http.request(method, path, json=body, headers=ADMIN)
                    assert answer.status_code == 503, (method, path, answer.text)
                    assert int(answer.headers["retry-after"]) > 0 and "127.0.0.1" not in answer.text
                browser = await http.options(
                    "/collect",
                    headers={"origin": "https://shop.example.com", "access-control-request-method": "POST"},
                )
                assert browser.status_code == 503 and int(browser.headers["retry-after"]) > 0
                assert "127.0.0.1" not in browser.text
            finally:
                app.state.engine = real
                registry.engine = real
    finally:
        await unreachable.dispose()
