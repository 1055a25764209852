"""The error contract of docs/errors.md: bad input is a 422 naming the field and the reason,
a wrong method is a 405 with Allow, a body that is not JSON is a 415 on every ingest route, and
every error is JSON. Each case here was a 500 (or a 422 for a wrong method) before."""

from __future__ import annotations

import uuid
from dataclasses import replace

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from src.api.config import get_settings
from src.main import create_app

pytestmark = pytest.mark.anyio


def field_of(response: httpx.Response) -> str:
    """The one field a 422 names, as "query.site_id" or "body.duration"."""
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert len(errors) == 1, errors
    return ".".join(str(part) for part in errors[0]["loc"] if not isinstance(part, int))


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/stats/summary?site_id=a%00b", "query.site_id"),
        ("/api/stats/timeseries?page=%2F%00", "query.page"),
        ("/api/stats/breakdown?os=Linux&os=%00", "query.os"),
        ("/api/stats/timeseries?tz=UTC%00", "query.tz"),
        ("/api/stats/timeseries?interval=1%20hour%00", "query.interval"),
        ("/api/stats/realtime?site_id=%00", "query.site_id"),
        ("/api/events/?pages=%00", "query.pages"),
        ("/api/events/?duration=%00", "query.duration"),
        ("/stats?site_id=%00", "query.site_id"),
    ],
)
async def test_nul_in_a_text_parameter_is_422(client: httpx.AsyncClient, url: str, field: str) -> None:
    response = await client.get(url)
    assert field_of(response) == field
    assert "NUL" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("dimension", ["", ",", "page,os", " , page , os"])
async def test_breakdown_needs_exactly_one_dimension(client: httpx.AsyncClient, dimension: str) -> None:
    response = await client.get("/api/stats/breakdown", params={"dimension": dimension})
    assert field_of(response) == "query.dimension"
    assert "exactly one" in response.json()["error"]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/stats?date=9999-12-31", "query.date"),
        ("/stats?date=1969-12-31", "query.date"),
        ("/stats/dau?from_date=9999-12-30&to=9999-12-31", "query.from_date"),
        ("/stats/dau?from_date=2026-01-01&to=9999-12-31", "query.to"),
        ("/stats/top-events?from_date=9999-12-31&to=9999-12-31", "query.from_date"),
        ("/stats/retention?start_date=9999-12-31", "query.start_date"),
        ("/stats/retention?start_date=9999-12-01&windows=12", "query.start_date"),
        ("/api/stats/summary?from=9999-12-31T00:00:00", "query.from"),
        ("/api/stats/summary?to=0001-01-01T00:00:00", "query.to"),
        ("/api/stats/summary?to=1970-01-02T00:00:00Z", "query.to"),
        ("/api/events/?to=0001-01-01T00:00:00", "query.to"),
    ],
)
async def test_dates_out_of_range_are_422(client: httpx.AsyncClient, url: str, field: str) -> None:
    response = await client.get(url)
    assert field_of(response) == field
    assert "1970" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"page": "/x", "duration": NaN}', "body.duration"),
        (b'{"page": "/x", "duration": Infinity}', "body.duration"),
        (b'{"page": "/x", "duration": -Infinity}', "body.duration"),
        (b'{"page": "/x", "duration": 1e400}', "body.duration"),
        (b'{"page": "/x", "time": 1e400}', "body.time"),
        (b'{"page": "/x", "time": NaN}', "body.time"),
    ],
)
async def test_non_finite_numbers_in_an_event_are_422(
    client: httpx.AsyncClient, body: bytes, field: str
) -> None:
    response = await client.post("/api/events/", content=body, headers={"content-type": "application/json"})
    assert field_of(response) == field
    # FastAPI's 422 shape, its input spelled as sent: JSON has no NaN or Infinity.
    assert response.json()["detail"][0]["input"] in ("NaN", "Infinity", "-Infinity")


async def test_a_validator_reason_is_text(client: httpx.AsyncClient) -> None:
    error = (await client.get("/api/stats/summary?site_id=%00")).json()["detail"][0]
    assert error["ctx"] == {"error": "must not contain NUL characters"}


# --- wrong methods ------------------------------------------------------------------------

EVENT = f"/api/events/{uuid.UUID(int=7)}"


@pytest.mark.parametrize(
    ("method", "url", "allow"),
    [
        ("PUT", "/api/events/batch", "POST"),
        ("GET", "/api/events/batch", "POST"),  # was GET /api/events/{event_id}: 422, a bad id
        ("DELETE", "/api/events/batch", "POST"),
        ("GET", "/collect", "OPTIONS, POST"),
        ("GET", "/event", "POST"),
        ("GET", "/events", "POST"),
        ("PATCH", EVENT, "DELETE, GET"),
        ("POST", EVENT, "DELETE, GET"),
        ("PUT", "/api/events", "GET, POST"),  # two routes share the path: Allow names both
        ("POST", "/api/stats/summary", "GET"),
        ("PUT", "/stats", "GET"),
        ("POST", "/health", "GET"),
    ],
)
async def test_a_wrong_method_is_405_with_allow(
    client: httpx.AsyncClient, method: str, url: str, allow: str
) -> None:
    response = await client.request(method, url)
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allow
    assert response.json() == {"error": "Method Not Allowed", "detail": "Method Not Allowed"}


async def test_every_route_answers_405_for_every_other_method(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    for route in app.routes:
        if not isinstance(route, APIRoute) or "{" in route.path_format.replace("{event_id}", ""):
            continue
        path = route.path_format.replace("{event_id}", str(uuid.UUID(int=9)))
        allowed = {
            m for r in app.routes if isinstance(r, APIRoute) and r.path_regex.match(path) for m in r.methods
        }
        for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - allowed:
            response = await client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert set(response.headers["allow"].split(", ")) >= allowed


async def test_an_event_id_that_is_no_uuid_is_still_422(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/events/batches")
    assert field_of(response) == "path.event_id"


async def test_an_unknown_path_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found", "detail": "Not Found"}


# --- content types ------------------------------------------------------------------------

INGEST_ROUTES = ["/api/events/", "/api/events/batch", "/collect", "/event", "/events"]
JSON_EVENT = b'{"page": "/ct", "path": "/ct", "site_id": "ct"}'


@pytest.mark.parametrize("url", INGEST_ROUTES)
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"page=%2Fx"),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=page\r\n\r\n/x\r\n--x--\r\n",
        ),
        ("application/xml", b"<event/>"),
        ("text/html", b""),  # refused before the body is read: empty or not
        ("application/octet-stream", JSON_EVENT),
    ],
)
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, url: str, content_type: str, body: bytes
) -> None:
    response = await client.post(url, content=body, headers={"content-type": content_type})
    assert response.status_code == 415, response.text
    media_type = content_type.split(";")[0]
    assert response.json()["error"] == f"content type {media_type!r} is not supported; send application/json"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/plain; charset=utf-8", "application/vnd.event+json"]
)
async def test_json_under_another_json_like_type_is_read_on_the_single_event_route(
    client: httpx.AsyncClient, content_type: str
) -> None:
    # navigator.sendBeacon sends text/plain; the batch-shaped routes always read it as JSON.
    response = await client.post(
        "/api/events/", content=b'{"page": "/beacon"}', headers={"content-type": content_type}
    )
    assert response.status_code == 200, response.text
    assert response.json()["page"] == "/beacon"


# --- the docs switch ----------------------------------------------------------------------


async def _get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.get(path)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
async def test_docs_can_be_switched_off(path: str) -> None:
    # These routes never touch the database, so the apps need no lifespan.
    on = create_app(replace(get_settings(), docs_enabled=True))
    off = create_app(replace(get_settings(), docs_enabled=False))
    assert (await _get(on, path)).status_code == 200
    hidden = await _get(off, path)
    assert hidden.status_code == 404
    assert hidden.json()["error"] == "Not Found"
