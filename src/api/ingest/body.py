"""Reading raw JSON bodies for the batch-shaped endpoints: size, content type and syntax are
checked here so each failure is a 4xx that says what was wrong."""

from __future__ import annotations

import orjson
from fastapi import Request

from src.api.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType


async def read_json_body(request: Request, max_bytes: int, *, allow_empty: bool = False) -> object:
    content_type = request.headers.get("content-type", "")
    media_type = content_type.split(";", 1)[0].strip().lower()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    if not body.strip():
        if allow_empty:
            return None
        raise BadRequest("request body is empty; send a JSON object")
    # text/plain is what navigator.sendBeacon sends; it carries JSON all the same.
    json_like = media_type in ("application/json", "text/plain") or media_type.endswith("+json")
    if media_type and not json_like:
        raise UnsupportedMediaType(f"content type {media_type!r} is not supported; send application/json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
