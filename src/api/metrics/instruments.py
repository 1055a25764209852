"""Every Prometheus metric of the service, and the one-line calls that update them.

Other packages never touch prometheus_client: they call the functions here (`observe_flush`,
`set_ingest_queue`, `job_run`, …), so the names, labels and multiprocess modes live in one
place. Under gunicorn the server entry point (src/server.py) sets PROMETHEUS_MULTIPROC_DIR
before any worker imports this module, and prometheus_client then keeps each value in a
per-process file that `/metrics` sums (src/api/metrics/router.py); gauges say how their
per-process values combine (`multiprocess_mode`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

NAMESPACE = "analytics"
# No `*_created` series beside every counter: they double the scrape for nothing we alert on.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUESTS = Counter(
    "http_requests",
    "HTTP requests answered, by route template, method and status",
    ("route", "method", "status"),
    namespace=NAMESPACE,
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from a request's start to its answer's last byte",
    ("route", "method"),
    namespace=NAMESPACE,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENTS_ACCEPTED = Counter(
    "events_accepted", "Events committed (new), by ingest route", ("route",), namespace=NAMESPACE
)
EVENTS_DUPLICATE = Counter(
    "events_duplicates",
    "Events whose id and time were stored before (answered, not stored twice)",
    ("route",),
    namespace=NAMESPACE,
)
EVENTS_REJECTED = Counter(
    "events_rejected",
    "Events refused as invalid (per item for batches; one for a refused single event)",
    ("route",),
    namespace=NAMESPACE,
)
INGEST_UNAVAILABLE = Counter(
    "ingest_unavailable",
    "Ingest requests answered 503 (queue or memory full, database down, shutdown)",
    ("route",),
    namespace=NAMESPACE,
)
FLUSH_EVENTS = Histogram(
    "ingest_flush_events",
    "Events per group commit",
    namespace=NAMESPACE,
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
)
FLUSH_SECONDS = Histogram(
    "ingest_flush_seconds",
    "Time of one group commit, retries included",
    namespace=NAMESPACE,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FLUSH_FAILED_EVENTS = Counter(
    "ingest_flush_failed_events",
    "Events of group commits that failed (their requests got 4xx/503)",
    namespace=NAMESPACE,
)
INGEST_QUEUE = Gauge(
    "ingest_queue_events",
    "Events queued for the group-commit writers, summed over live workers",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
POOL_IN_USE = Gauge(
    "db_pool_connections_in_use",
    "Request-pool connections checked out, summed over live workers",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
POOL_CAPACITY = Gauge(
    "db_pool_connections_max",
    "Pool size plus overflow, summed over live workers",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
JOB_RUNS = Counter("job_runs", "Background job runs, by job", ("job",), namespace=NAMESPACE)
JOB_FAILURES = Counter(
    "job_failures", "Background job runs that failed, by job", ("job",), namespace=NAMESPACE
)
JOB_LAST_SUCCESS = Gauge(
    "job_last_success_timestamp_seconds",
    "Unix time of a job's last successful run (newest worker's)",
    ("job",),
    namespace=NAMESPACE,
    multiprocess_mode="max",
)
JOB_LAG = Gauge(
    "job_lag_seconds",
    "How far a job's output trails now (rollups: now minus the oldest tier watermark)",
    ("job",),
    namespace=NAMESPACE,
    multiprocess_mode="mostrecent",
)
AUTHORIZATION_REFUSED = Counter(
    "authorization_refusals",
    "Requests refused for their key or site, by reason",
    ("reason",),
    namespace=NAMESPACE,
)


# --- per request: what the ingest path did, read by the request middleware -----------------


@dataclass
class RequestEvents:
    """Events one request carried, filled by the ingest service, counted by route at its end."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0

    @property
    def total(self) -> int:
        return self.accepted + self.duplicates + self.rejected


CURRENT_REQUEST: ContextVar[RequestEvents | None] = ContextVar("metrics_request", default=None)


def record_written(accepted: int, duplicates: int) -> None:
    """Events of this request committed (new) and found stored before."""
    events = CURRENT_REQUEST.get()
    if events is not None:
        events.accepted += accepted
        events.duplicates += duplicates


def record_rejected(count: int) -> None:
    """Events of this request refused as invalid."""
    events = CURRENT_REQUEST.get()
    if events is not None:
        events.rejected += count


# --- the ingest writer ------------------------------------------------------------------------


@contextmanager
def observe_flush(events: int) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        FLUSH_SECONDS.observe(time.perf_counter() - started)
        FLUSH_EVENTS.observe(events)


def record_flush_failure(events: int) -> None:
    FLUSH_FAILED_EVENTS.inc(events)


def set_ingest_queue(events: int) -> None:
    """Events waiting for a writer in this process (the queue-mode consumer may call it too)."""
    INGEST_QUEUE.set(events)


# --- the database pool ------------------------------------------------------------------------


def watch_pool(engine: Any) -> None:
    """Count the checked-out connections of an (async) SQLAlchemy engine's pool."""
    from sqlalchemy import event

    pool = engine.sync_engine.pool
    POOL_CAPACITY.inc(pool.size() + max(pool._max_overflow, 0))

    @event.listens_for(pool, "checkout")
    def _checkout(*_: object) -> None:
        POOL_IN_USE.inc()

    @event.listens_for(pool, "checkin")
    def _checkin(*_: object) -> None:
        POOL_IN_USE.dec()


# --- background jobs --------------------------------------------------------------------------


@contextmanager
def job_run(job: str) -> Iterator[None]:
    """Count one run of `job`, and a failure when it raises (the exception goes on)."""
    JOB_RUNS.labels(job).inc()
    try:
        yield
    except Exception:  # not CancelledError: a job stopped at shutdown has not failed
        JOB_FAILURES.labels(job).inc()
        raise
    JOB_LAST_SUCCESS.labels(job).set(time.time())


def set_job_lag(job: str, seconds: float) -> None:
    JOB_LAG.labels(job).set(max(seconds, 0.0))


# --- authorization ----------------------------------------------------------------------------


def authorization_refused(reason: str) -> None:
    """A request refused for its key or site: `missing_key`, `invalid_key`, `scope`, `site`…"""
    AUTHORIZATION_REFUSED.labels(reason).inc()
