from __future__ import annotations

import pytest
from starlette.requests import Request

from src.api.ingest.service import client_ip_of, request_context


def request(peer: str, headers: dict[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "POST",
            "path": "/",
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            "client": (peer, 1234),
        }
    )


def test_forwarded_headers_are_believed_only_from_trusted_proxies() -> None:
    headers = {"x-forwarded-for": "198.51.100.9", "x-real-ip": "192.0.2.5"}
    assert client_ip_of(request("10.1.2.3", headers), ("*",)) == "198.51.100.9"
    assert client_ip_of(request("10.1.2.3", headers), ("10.0.0.0/8",)) == "198.51.100.9"
    assert client_ip_of(request("203.0.113.1", headers), ("10.0.0.0/8",)) == "203.0.113.1"
    assert client_ip_of(request("203.0.113.1", {"x-real-ip": "192.0.2.5"}), ("203.0.113.1",)) == "192.0.2.5"


@pytest.mark.anyio
async def test_request_context_reads_repeated_forwarded_headers_as_one_list() -> None:
    scope = request(
        "10.0.0.2",
        {"user-agent": "agent/1.0", "x-real-ip": "192.0.2.5"},
    ).scope
    scope["headers"] += [(b"x-forwarded-for", b"unknown"), (b"x-forwarded-for", b"198.51.100.7, 10.0.0.2")]
    context = await request_context(Request(scope))
    assert context.client_ip == "198.51.100.7"
    assert context.user_agent == "agent/1.0"
    scope["headers"] = [(b"x-forwarded-for", b"nonsense"), (b"x-real-ip", b"also bad")]
    assert (await request_context(Request(scope))).client_ip == "10.0.0.2"
