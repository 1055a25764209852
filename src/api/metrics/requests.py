"""Per request: the HTTP metrics (by route template, method and status), the events the request
carried, and one log line — `method route status duration events`, or a JSON object with those
keys when LOG_FORMAT=json. The line never holds a query string, header, key or address: the
route is the template (`/api/events/{event_id}`), not the path."""

from __future__ import annotations

import logging
import re
import time
from functools import lru_cache

from prometheus_client import Counter, Histogram
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.api.metrics import instruments

log = logging.getLogger("src.api.access")

_CONVERTOR = re.compile(r"\{(\w+):[^}]+\}")
UNMATCHED = "unmatched"  # one label for every path no route knows (scanners must not add series)
# Routes whose body is one event: a refused request is one rejected event.
SINGLE_EVENT_ROUTES = frozenset({"/api/events", "/event"})
INGEST_ROUTES = frozenset({"/api/events", "/api/events/batch", "/collect", "/event", "/events"})


class RequestMetrics:
    """Outermost middleware: times every HTTP request to its answer's last byte."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        events = instruments.RequestEvents()
        token = instruments.CURRENT_REQUEST.set(events)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            instruments.CURRENT_REQUEST.reset(token)
            self._record(scope, status, events, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, events: instruments.RequestEvents, seconds: float) -> None:
        method: str = scope["method"]
        route = route_of(scope["app"], method, _path(scope))
        _requests(route, method, status).inc()
        _durations(route, method).observe(seconds)
        if route in INGEST_ROUTES and method == "POST":
            if status in (400, 422) and route in SINGLE_EVENT_ROUTES and not events.total:
                events.rejected = 1
            if events.accepted:
                instruments.EVENTS_ACCEPTED.labels(route).inc(events.accepted)
            if events.duplicates:
                instruments.EVENTS_DUPLICATE.labels(route).inc(events.duplicates)
            if events.rejected:
                instruments.EVENTS_REJECTED.labels(route).inc(events.rejected)
            if status == 503:
                instruments.INGEST_UNAVAILABLE.labels(route).inc()
        if log.isEnabledFor(logging.INFO):
            fields = {
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "events": events.total,
            }
            # LOG_FORMAT=json writes `fields` as the line's keys (src/api/config.py's formatter).
            log.info(" ".join(f"{k}={v}" for k, v in fields.items()), extra={"fields": fields})


# Labelled children, looked up once: `.labels()` validates and locks on every call.
@lru_cache(maxsize=4096)
def _requests(route: str, method: str, status: int) -> Counter:
    return instruments.HTTP_REQUESTS.labels(route, method, str(status))


@lru_cache(maxsize=4096)
def _durations(route: str, method: str) -> Histogram:
    return instruments.HTTP_DURATION.labels(route, method)


def _path(scope: Scope) -> str:
    path: str = scope["path"]
    return (path.rstrip("/") or "/") if len(path) > 1 else path


def _template(path: str) -> str:
    return _CONVERTOR.sub(r"{\1}", path)  # /api/events/{event_id:event_id} -> {event_id}


@lru_cache(maxsize=4096)
def _route_of(app: ASGIApp, method: str, path: str) -> str:
    probe: Scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    partial = None
    for route in app.router.routes:  # type: ignore[attr-defined]
        match, _ = route.matches(probe)
        if match is Match.FULL:
            return _template(route.path) if not isinstance(route, Mount) else f"{route.path}/*"
        if match is Match.PARTIAL and partial is None:
            partial = _template(route.path)  # the path exists, the method does not (405)
    return partial or UNMATCHED


def route_of(app: ASGIApp, method: str, path: str) -> str:
    """The route template a path matched (cached per path: the hot routes are a handful)."""
    return _route_of(app, method, path)
