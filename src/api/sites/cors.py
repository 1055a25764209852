"""CORS while sites are authorized: a browser origin is allowed exactly when its hostname is an
allowed hostname of an authorized site (or one of CORS_ORIGINS, when that lists origins). The
answer names the origin itself, never `*`; a preflight from any other origin is refused with
403, and other requests from it get no Access-Control-Allow-Origin, so no page elsewhere can
read an answer or send a DELETE with a key it holds. Without authorization (SITE_AUTHORIZATION
=off) Starlette's CORSMiddleware answers as before (src/main.py)."""

from __future__ import annotations

import orjson
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.errors import DATABASE_RETRY_AFTER, is_unavailable
from src.api.sites.audit import record_decision
from src.api.sites.hostnames import origin_hostname
from src.api.sites.service import SiteAuthorizer

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Content-Type, X-API-Key, Authorization"
MAX_AGE = "600"


class SiteCORS:
    def __init__(self, app: ASGIApp, *, origins: tuple[str, ...] = ()) -> None:
        self.app = app
        self.origins = frozenset(origin.rstrip("/") for origin in origins if origin != "*")

    async def _allowed(self, scope: Scope, origin: str) -> bool:
        if origin in self.origins:
            return True
        hostname = origin_hostname(origin)
        if hostname is None:
            return False
        authorizer: SiteAuthorizer = scope["app"].state.site_authorizer
        return await authorizer.origin_allowed(hostname)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = requested = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                requested = value
        if origin is None:
            await self.app(scope, receive, send)
            return
        try:
            allowed = await self._allowed(scope, origin)
        except Exception as exc:  # the registry could not be loaded: the database is away
            if not is_unavailable(exc):
                raise
            await self._unavailable(send)
            return
        if scope["method"] == "OPTIONS" and requested is not None:
            record_decision("(cors)", origin, allowed, "preflight" if allowed else "origin")
            await self._preflight(send, origin, allowed)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.add_vary_header("Origin")
                if allowed:
                    headers["Access-Control-Allow-Origin"] = origin
                    headers["Access-Control-Allow-Credentials"] = "true"
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _unavailable(self, send: Send) -> None:
        message = "the database is unavailable; retry shortly"
        body = orjson.dumps({"error": message, "detail": message})
        headers = [
            (b"content-type", b"application/json"),
            (b"retry-after", str(DATABASE_RETRY_AFTER).encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _preflight(self, send: Send, origin: str, allowed: bool) -> None:
        if allowed:
            status, body = 204, b""
            headers = [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-max-age", MAX_AGE.encode()),
                (b"vary", b"Origin"),
            ]
        else:
            message = f"origin {origin!r} is not an allowed hostname of any authorized site"
            status = 403
            body = orjson.dumps({"error": message, "detail": {"origin": origin, "reason": "origin"}})
            headers = [(b"content-type", b"application/json"), (b"vary", b"Origin")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
