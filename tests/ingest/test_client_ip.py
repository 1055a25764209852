from __future__ import annotations

import dataclasses

import httpx
import pytest
from starlette.requests import Request

from src.api.config import get_settings, load_settings, parse_trusted_proxies
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
    every, tens = parse_trusted_proxies("*"), parse_trusted_proxies("10.0.0.0/8")
    assert client_ip_of(request("10.1.2.3", headers), every) == "198.51.100.9"
    assert client_ip_of(request("10.1.2.3", headers), tens) == "198.51.100.9"
    assert client_ip_of(request("203.0.113.1", headers), tens) == "203.0.113.1"
    one = parse_trusted_proxies("203.0.113.1")
    assert client_ip_of(request("203.0.113.1", {"x-real-ip": "192.0.2.5"}), one) == "192.0.2.5"
    nobody = parse_trusted_proxies("none")
    assert client_ip_of(request("127.0.0.1", headers), nobody) == "127.0.0.1"


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


@pytest.mark.anyio
async def test_a_public_peer_cannot_choose_its_address(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default TRUSTED_PROXIES (loopback and private networks), a client on a public
    address is stored as itself: rotating X-Forwarded-For headers and a body ip_address are
    its own claims. With an ingest key (a server-side forwarder) the body's address counts."""
    stored = set()
    for n in range(10):
        forged = await client.post(
            "/api/events/",
            json={"page": "/", "ip_address": f"198.51.100.{n}"},
            headers={"x-forwarded-for": f"192.0.2.{n}", "x-real-ip": f"192.0.2.{n + 100}"},
        )
        assert forged.status_code == 200
        stored.add(forged.json()["ip_address"])
    batch = await client.post(
        "/api/events/batch", json={"events": [{"page": "/", "ip_address": "198.51.100.1"}]}
    )
    assert batch.status_code == 200
    assert stored == {"203.0.113.7"}

    keyed = dataclasses.replace(get_settings(), api_keys=("ingest-key",))
    monkeypatch.setattr("src.api.ingest.service.get_settings", lambda: keyed)
    without = await client.post("/api/events/", json={"page": "/", "ip_address": "198.51.100.4"})
    wrong = await client.post(
        "/api/events/", json={"page": "/", "ip_address": "198.51.100.4"}, headers={"x-api-key": "nope"}
    )
    right = await client.post(
        "/api/events/", json={"page": "/", "ip_address": "198.51.100.4"}, headers={"x-api-key": "ingest-key"}
    )
    assert [r.json()["ip_address"] for r in (without, wrong, right)] == [
        "203.0.113.7",
        "203.0.113.7",
        "198.51.100.4",
    ]


def test_default_trusted_proxies_are_loopback_and_private_networks() -> None:
    proxies = load_settings().trusted_proxies
    assert not proxies.trust_all
    for peer in ("127.0.0.1", "::1", "10.1.2.3", "172.17.0.1", "192.168.1.10", "fd00::1"):
        assert proxies.trusts(peer), peer
    for peer in ("203.0.113.7", "8.8.8.8", "2001:db8::1", None, "not-an-ip"):
        assert not proxies.trusts(peer), peer
