"""The one error hierarchy of the service and the handler that renders it."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse


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


class ServiceUnavailable(AppError):
    status_code = 503

    def __init__(self, message: str, *, retry_after: int = 1, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after), **(headers or {})})


async def app_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return JSONResponse(
        {"error": exc.message, "detail": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )
