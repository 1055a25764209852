from __future__ import annotations

from starlette.requests import Request

from src.api.ingest.service import client_ip_of


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
