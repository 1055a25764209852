"""The single-event POST without FastAPI's request machinery, for the plain case.

`POST /api/events/` is the route every page view of every website hits. For a JSON object made
only of plain values (what `fast_row` accepts) this handler reads the body, builds the row and
answers with the stored event itself: no dependency solving, no pydantic model, no response
re-validation. Anything else — another content type, a large or chunked body, invalid JSON, a
value fast_row leaves to pydantic — is handed, body and all, to the FastAPI route it wraps, so
every answer and every error is the route's own. Middleware (CORS, body limit) and the error
handler surround both paths alike."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.ingest.rows import fast_row, row_to_dict, time_bounds
from src.api.ingest.service import IngestService, context_of_scope

# Bodies up to this size (declared by Content-Length) are read here; single events are small.
FAST_MAX_BYTES = 64 * 1024
_JSON = (b"application/json", b"application/json; charset=utf-8")
_HEADERS = [(b"content-type", b"application/json")]


def single_event_app(route_app: ASGIApp) -> ASGIApp:
    """The route's ASGI app with the plain case answered in front of it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        length = -1
        json_body = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else -1
            elif name == b"content-type":
                json_body = value.lower() in _JSON
        if not json_body or not 0 < length <= FAST_MAX_BYTES:
            await route_app(scope, receive, send)
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        row = None
        try:
            item = orjson.loads(body)
        except orjson.JSONDecodeError:
            item = None
        if type(item) is dict:
            context = context_of_scope(scope)
            row = fast_row(item, context, *time_bounds(context.received_at))
        if row is None:
            await route_app(scope, _replay(body, receive), send)
            return
        ingest: IngestService = scope["app"].state.ingest
        if ingest.access is not None:
            row = await ingest.admit_one(row, context)
        await ingest.store_one(row)
        payload = orjson.dumps(row_to_dict(row))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the already-read body once, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
