"""The FastAPI application: lifespan (database setup, ingest writer, jobs), routers, errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import ORJSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

from src.api.auth.ratelimit import KeyRateLimiter, PostgresStorage, redis_storage
from src.api.auth.router import router as keys_router
from src.api.auth.service import KeyService
from src.api.compat.collect import router as collect_router
from src.api.compat.etl import router as etl_router
from src.api.compat.interview import router as interview_router
from src.api.compat.monitor import router as monitor_router
from src.api.compat.queued import router as queued_router
from src.api.compat.stats import router as compat_stats_router
from src.api.config import Settings, SettingsError, configure_logging, get_settings
from src.api.dashboard.router import mount_static
from src.api.dashboard.router import router as dashboard_router
from src.api.db.engine import create_engine, create_stats_engine
from src.api.db.timescale import setup_database
from src.api.errors import (
    AppError,
    app_error_handler,
    database_error_handler,
    http_error_handler,
    unexpected_error_handler,
    validation_error_handler,
)
from src.api.events.router import router as events_router
from src.api.exports.job import run_export_loop
from src.api.exports.router import router as exports_router
from src.api.exports.service import Exporter
from src.api.ingest.access import create_access
from src.api.ingest.budget import MemoryBudget
from src.api.ingest.service import IngestService, create_writer, tune_garbage_collector
from src.api.jobs.retention import run_retention_loop
from src.api.metrics import instruments as metrics
from src.api.metrics.requests import RequestMetrics
from src.api.metrics.router import router as metrics_router
from src.api.middleware import BodyGuard, BodyRefused, StripTrailingSlash, render_body_refused
from src.api.queue.broker import create_broker
from src.api.queue.publisher import QueuePublisher
from src.api.queue.router import router as queue_router
from src.api.rollups.job import run_fold_loop, run_rollup_loop
from src.api.sessions.service import run_session_loop
from src.api.sites.cors import SiteCORS
from src.api.sites.router import router as sites_router
from src.api.stats.router import router as stats_router
from src.api.system.router import router as system_router
from src.api.tracker.router import router as tracker_router

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = getattr(app.state, "settings", None) or get_settings()
    configure_logging(settings)
    engine = create_engine(settings)
    metrics.watch_pool(engine)
    timescale = await setup_database(engine, settings)
    writer = create_writer(engine, settings, timescale)
    writer.start()
    # Queue mode: ingest publishes to the broker, workers (python -m src.worker) commit.
    publisher = QueuePublisher(create_broker(settings.queue)) if settings.queue.enabled else None
    if publisher is not None:
        await publisher.start()
    app.state.engine = engine
    app.state.stats_engine = create_stats_engine(settings, engine)
    app.state.timescale = timescale
    # Sites and keys (docs/sites.md): with nothing configured, all of it stays out of the way.
    access = create_access(engine, settings)
    authorizer = access.authorizer
    remote = authorizer.remote
    app.state.site_registry = authorizer.registry
    app.state.site_authorizer = authorizer
    app.state.keys = KeyService(engine, settings)
    storage = redis_storage(settings.redis_url) if settings.redis_url else PostgresStorage(engine)
    app.state.rate_limiter = KeyRateLimiter(storage)
    app.state.broker = publisher.broker if publisher is not None else None
    app.state.ingest = IngestService(writer, settings, access, publisher)
    app.state.body_budget = MemoryBudget(settings.ingest_memory_bytes)
    app.state.exporter = Exporter(engine, settings.exports, default_level=settings.default_privacy_level)
    tune_garbage_collector()
    jobs: list[asyncio.Task[None]] = []
    if settings.exports.interval > 0:
        jobs.append(asyncio.create_task(run_export_loop(app.state.exporter, settings.exports.interval)))
    if settings.retention_check_interval > 0:
        jobs.append(asyncio.create_task(run_retention_loop(engine, settings.retention_check_interval)))
    if not timescale.has_continuous_aggregates and settings.rollup_job_interval > 0:
        jobs.append(asyncio.create_task(run_rollup_loop(engine, settings.rollup_job_interval)))
    if settings.rollup_fold_interval > 0:  # the activity tables fold on both editions
        rollups = not timescale.has_continuous_aggregates
        jobs.append(
            asyncio.create_task(
                run_fold_loop(
                    engine,
                    settings.rollup_fold_interval,
                    rollups=rollups,
                    max_delay=settings.rollup_fold_max_delay,
                )
            )
        )
    if settings.session_job_interval > 0:
        jobs.append(asyncio.create_task(run_session_loop(engine, settings, settings.session_job_interval)))
    try:
        yield
    finally:
        for job in jobs:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        await writer.stop()
        if remote is not None:
            await remote.close()
        if publisher is not None:
            await publisher.stop()
        if app.state.stats_engine is not engine:
            await app.state.stats_engine.dispose()
        await engine.dispose()


def checked_settings() -> Settings:
    """The settings, or the process stops with one line naming the bad variable."""
    try:
        return get_settings()
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, built with `settings` (the environment's by default); the lifespan reads the
    environment's for what it starts."""
    settings = settings or checked_settings()
    docs = settings.docs_enabled
    application = FastAPI(
        title="Event analytics",
        version="1.0.0",
        lifespan=lifespan,
        redirect_slashes=False,
        default_response_class=ORJSONResponse,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    # Every error is JSON (docs/errors.md); database failures are 503s, never their text.
    application.add_exception_handler(AppError, app_error_handler)
    application.add_exception_handler(BodyRefused, render_body_refused)
    application.add_exception_handler(HTTPException, http_error_handler)
    application.add_exception_handler(RequestValidationError, validation_error_handler)
    for database_error in (sa_exc.DBAPIError, sa_exc.TimeoutError, psycopg.Error):
        application.add_exception_handler(database_error, database_error_handler)
    application.add_exception_handler(Exception, unexpected_error_handler)
    application.state.settings = settings
    if settings.site_authorization == "off":
        application.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            allow_credentials=settings.cors_origins != ("*",),
        )
    else:  # exactly the origins of authorized sites (and any CORS_ORIGINS listed)
        application.add_middleware(SiteCORS, origins=settings.cors_origins)
    application.add_middleware(
        BodyGuard, max_bytes=settings.max_body_bytes, timeout=settings.body_read_timeout
    )
    application.add_middleware(StripTrailingSlash)
    application.add_middleware(RequestMetrics)  # outermost: every answer is counted and logged
    application.include_router(system_router)
    application.include_router(events_router)
    application.include_router(stats_router)
    application.include_router(collect_router)
    application.include_router(queued_router)
    application.include_router(interview_router)
    application.include_router(compat_stats_router)
    application.include_router(monitor_router)
    application.include_router(etl_router)
    application.include_router(exports_router)
    application.include_router(sites_router)
    application.include_router(keys_router)
    application.include_router(metrics_router)
    application.include_router(tracker_router)
    application.include_router(dashboard_router)
    application.include_router(queue_router)
    mount_static(application)
    return application


app = create_app()
