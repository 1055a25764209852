"""GET /metrics: every metric in Prometheus' text format. Under gunicorn (PROMETHEUS_MULTIPROC_DIR
set by src/server.py) the values of every worker, live and dead, are read from their files and
combined, so whichever worker answers the scrape reports the whole server."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from src.api.config import get_settings

router = APIRouter(tags=["system"])


class MetricsText(Response):
    media_type = CONTENT_TYPE_LATEST


@router.get("/metrics", response_class=MetricsText, responses={200: {"content": {"text/plain": {}}}})
async def metrics() -> Response:
    # Reading every worker's files is file I/O: off the event loop.
    return MetricsText(await asyncio.to_thread(exposition, get_settings().prometheus_multiproc_dir))


def exposition(directory: str | None) -> bytes:
    if directory is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
