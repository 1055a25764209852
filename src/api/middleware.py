"""Pure-ASGI middleware: one path form for every route, and the guard every request body
passes through."""

from __future__ import annotations

import asyncio

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.errors import AppError, PayloadTooLarge, RequestTimeout, ServiceUnavailable, app_error_handler
from src.api.ingest.budget import BodyHold, MemoryBudget, parse_cost

_CLOSE = {"Connection": "close"}


class StripTrailingSlash:
    """`/api/events/` and `/api/events` reach the same route, with no redirect (POST-safe)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = dict(scope)
                scope["path"] = path.rstrip("/") or "/"
                raw = scope.get("raw_path")
                if raw:
                    scope["raw_path"] = raw.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


class BodyRefused(HTTPException):
    """A guard refusal on its way out of whoever was reading the body. It is a starlette
    HTTPException because FastAPI's own body parsing turns any other exception into a 400
    "error parsing the body", and re-raises these; `render_body_refused` renders the AppError it
    carries like every other. The connection is closed after it: the rest of the body is not
    worth reading."""

    def __init__(self, error: AppError) -> None:
        super().__init__(error.status_code, error.message, error.headers)
        self.error = error


async def render_body_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyRefused)
    return await app_error_handler(request, exc.error)


class BodyGuard:
    """Every request body, whatever its framing (Content-Length or chunked), is read
    - up to `max_bytes` (413 beyond; a declared larger Content-Length is refused unread),
    - within `timeout` seconds of the request's start (408 after: a slow sender holds its own
      connection, nothing of anyone else's), and
    - into the process's memory budget (src/api/ingest/budget.py), chunk by chunk as it
      arrives, at the size it will parse into (503 + Retry-After when full).
    The refusals are raised from `receive`, so whoever reads the body — a route, FastAPI's body
    parsing, the single-event fast path — stops there."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await _refuse(send, PayloadTooLarge(self._too_large(), headers=_CLOSE))
                return
        budget: MemoryBudget | None = getattr(scope["app"].state, "body_budget", None)
        hold = BodyHold(budget) if budget is not None else None
        deadline = asyncio.get_running_loop().time() + self.timeout
        received = 0
        complete = False
        started = False

        async def guarded_receive() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: what follows is the wait for a disconnect
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                late = f"the request body did not arrive within {self.timeout:g} seconds"
                raise BodyRefused(RequestTimeout(late, headers=_CLOSE)) from None
            if message["type"] == "http.request":
                chunk: bytes = message.get("body", b"")
                received += len(chunk)
                if received > self.max_bytes:
                    raise BodyRefused(PayloadTooLarge(self._too_large(), headers=_CLOSE))
                if hold is not None and chunk:
                    try:
                        hold.take(parse_cost(chunk))
                    except ServiceUnavailable as exc:
                        full = ServiceUnavailable(exc.message, retry_after=1, headers=_CLOSE)
                        raise BodyRefused(full) from None
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracked_send)
        except BodyRefused as exc:
            # Raised where no handler renders it (outside the routes): answer it here.
            if started:
                raise
            await _refuse(send, exc.error)
        finally:
            if hold is not None:
                hold.release()

    def _too_large(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes"


async def _refuse(send: Send, exc: AppError) -> None:
    body = orjson.dumps({"error": exc.message, "detail": exc.detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
