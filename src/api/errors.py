"""The one error hierarchy of the service and the handlers that render every error as JSON.

Shapes (docs/errors.md): an AppError, a routing error (404, 405) and an unexpected failure
(500) are {"error": ..., "detail": ...}; request validation keeps FastAPI's {"detail": [...]}.
Database failures never reach a client as text: they are logged, and the client gets 503 with
Retry-After (or 504 for a query cut off by the statement timeout, raised by the session)."""

from __future__ import annotations

import logging
import math

import psycopg
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)

# Seconds a client is asked to wait while the database is unreachable: a restart or a failover
# takes a few seconds, and clients retrying every second would only add to the reconnect storm.
DATABASE_RETRY_AFTER = 5


class AppError(Exception):
    """An error with an HTTP status, rendered as {"error": ..., "detail": ...}."""

    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        detail: object = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail if detail is not None else message
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers


class BadRequest(AppError):
    status_code = 400


class Unauthorized(AppError):
    status_code = 401


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class RequestTimeout(AppError):
    status_code = 408


class Conflict(AppError):
    status_code = 409


class PayloadTooLarge(AppError):
    status_code = 413


class UnsupportedMediaType(AppError):
    status_code = 415


class InvalidParameter(AppError):
    """A query or body value that parses but is not acceptable; named like FastAPI's 422s."""

    status_code = 422

    def __init__(self, location: tuple[str, ...], message: str, value: object = None) -> None:
        detail = [{"loc": list(location), "msg": message, "type": "value_error", "input": value}]
        super().__init__(f"{'.'.join(location)}: {message}", detail=detail)


class TooManyRequests(AppError):
    """A key over its hourly limit; carries Retry-After and the X-RateLimit-* headers."""

    status_code = 429


class UnreadableFile(AppError):
    """A file given to a command (`src.cli import`) cannot be opened or read on; the command
    exits with status 2, like a bad argument."""

    status_code = 400


class BadGateway(AppError):
    """A service we depend on (an export destination) failed; the text says which and how."""

    status_code = 502


class ServiceUnavailable(AppError):
    status_code = 503

    def __init__(self, message: str, *, retry_after: int = 1, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after), **(headers or {})})


class GatewayTimeout(AppError):
    """A query the database cut off at the statement timeout."""

    status_code = 504


async def app_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse(
        {"error": exc.message, "detail": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Routing errors (404 for no route, 405 for a wrong method) in the AppError shape."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names only the methods of the first route whose path matched; several
        # routes may share a path (GET and POST /api/events), and Allow must list them all.
        headers["Allow"] = ", ".join(allowed_methods(request))
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=headers)
    return JSONResponse(
        {"error": str(exc.detail), "detail": exc.detail}, status_code=exc.status_code, headers=headers
    )


def allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def json_safe(value: object) -> object:
    """`value` with every non-finite float spelled as the JSON extension a client sent
    ("NaN", "Infinity", "-Infinity"): JSON itself has no such numbers, and 1e400 parses to one."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body, {"detail": [...]}, made encodable whatever the input was."""
    assert isinstance(exc, RequestValidationError)
    # FastAPI's own handler encodes the `ctx` of a validator's ValueError as {}: say its text.
    errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
    return JSONResponse({"detail": json_safe(errors)}, status_code=422)


# Server answers that mean "not now" rather than "not this query": connection failures (class
# 08), the server going away or not yet accepting connections (57P0x), no connection slot free.
_SERVER_GOING = frozenset(("57P01", "57P02", "57P03", "57P04", "57P05", "53300"))


def is_unavailable(exc: BaseException) -> bool:
    """Whether a database error means the database cannot be reached or used right now
    (refused, lost mid-query, shutting down, out of connections), not a fault of the query.
    Like the ingest writer's classification: out of memory or locks, retried, would fail
    again, so those stay errors of the request (500)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    original = exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc
    state = getattr(original, "sqlstate", None)
    if isinstance(original, psycopg.Error) and state:
        return state.startswith("08") or state in _SERVER_GOING
    return isinstance(original, psycopg.OperationalError | psycopg.InterfaceError)


async def database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if not is_unavailable(exc):
        raise exc  # a fault of the query: the 500 handler answers, the server logs the traceback
    # The error text holds the statement and its parameters: for the log, never the client.
    log.warning("database unavailable method=%s path=%s error=%s", request.method, request.url.path, exc)
    message = "the database is unavailable; retry shortly"
    return JSONResponse(
        {"error": message, "detail": message},
        status_code=503,
        headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
    )


async def unexpected_error_handler(_: Request, exc: Exception) -> JSONResponse:
    # The server's error middleware logs the traceback after this response has been sent.
    message = "internal server error"
    return JSONResponse({"error": message, "detail": message}, status_code=500)
