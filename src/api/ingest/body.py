"""Reading raw JSON bodies for the batch-shaped endpoints: admission, content type and syntax
are checked here so each failure is a 4xx (or a 503 under load) that says what was wrong. The
body's size, read time and memory are bounded by the body guard (src/api/middleware.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import Request

from src.api.errors import BadRequest, UnsupportedMediaType

if TYPE_CHECKING:
    from src.api.ingest.service import IngestService


def check_json_media_type(content_type: str | None) -> None:
    """415 for a declared content type that cannot carry JSON; none declared is read as JSON."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    # text/plain is what navigator.sendBeacon sends; it carries JSON all the same.
    json_like = media_type in ("application/json", "text/plain") or media_type.endswith("+json")
    if media_type and not json_like:
        raise UnsupportedMediaType(f"content type {media_type!r} is not supported; send application/json")


async def read_json_body(request: Request, *, allow_empty: bool = False) -> object:
    # Before anything is read: an unreadable body is refused whatever its size, even empty.
    check_json_media_type(request.headers.get("content-type"))
    ingest: IngestService | None = getattr(request.app.state, "ingest", None)
    if ingest is not None:
        # Under overload, refuse before reading: a full pipeline cannot take these events.
        ingest.check_open()
    return await _read(request, allow_empty)


async def _read(request: Request, allow_empty: bool) -> object:
    body = await request.body()
    if not body.strip():
        if allow_empty:
            return None
        raise BadRequest("request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
