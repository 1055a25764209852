"""The ETL system's routes (/etl/*), run by the sessions job (src/api/sessions/service.py).
Once any key exists, the routes that change data need an admin key, the others a stats:read one."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from src.api.auth.dependencies import AdminDep, StatsReadDep
from src.api.config import get_settings
from src.api.db.engine import EngineDep, SessionDep
from src.api.sessions import repository
from src.api.sessions.service import RunResult, SessionSettings, run, start_background
from src.api.stats.params import QueryText, check_year
from src.api.stats.router import readable_sites

router = APIRouter(prefix="/etl", tags=["etl"])
BatchSize = Annotated[int, Query(ge=1, le=100_000)]


class RunAnswer(BaseModel):
    status: str
    run_id: str
    events_processed: int
    sessions_created: int
    sessions_updated: int
    sessions_deleted: int
    daily_metrics_updated: int
    duration_seconds: float
    watermark: str
    full: bool


class StartAnswer(BaseModel):
    status: str  # "started" or "already_running"
    run_id: str | None
    message: str


class DailyMetric(BaseModel):
    site_id: str
    day: date
    visitors: int
    sessions: int
    pageviews: int
    events: int
    bounces: int
    bounce_rate: float
    avg_session_duration: float
    total_duration: float
    pages_per_session: float
    updated_at: datetime


class DailyAnswer(BaseModel):
    status: str
    target_date: date
    metrics: list[DailyMetric]


class LastRun(BaseModel):
    run_id: str
    trigger: str
    event_type: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    result: dict[str, Any] | None
    error: str | None


class StatusAnswer(BaseModel):
    last_run: LastRun | None
    pending_events: dict[str, int]
    pending_total: int
    sessions: int
    daily_metrics: int
    watermark: datetime | None
    lag_seconds: float | None
    session_timeout_seconds: float


class SessionRow(BaseModel):
    site_id: str
    visitor: str
    session_id: str | None
    started_at: datetime
    ended_at: datetime
    duration: float
    events: int
    pageviews: int
    entry_page: str | None
    exit_page: str | None
    bounce: bool
    referrer_domain: str
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    os: str
    browser: str
    device: str
    first_event_id: uuid.UUID
    updated_at: datetime


class CleanupAnswer(BaseModel):
    status: str
    retention_days: int
    cutoff: datetime
    dropped_before: datetime | None
    chunks_dropped: int
    events_dropped: int
    reason: str


def _config() -> SessionSettings:
    return SessionSettings.of(get_settings(), datetime.now(UTC))


def _answer(result: RunResult | None) -> RunAnswer:
    assert result is not None  # waiting runs always run
    return RunAnswer.model_validate(result.public())


@router.post("/run-sync", response_model=RunAnswer)
async def run_sync(engine: EngineDep, _key: AdminDep, batch_size: BatchSize = 1000) -> RunAnswer:
    """Runs the pipeline now (after a run in progress, if any) and answers when it is done."""
    return _answer(await run(engine, _config(), trigger="sync", batch_size=batch_size))


@router.post("/run", response_model=StartAnswer, status_code=202)
async def run_background(engine: EngineDep, _key: AdminDep, batch_size: BatchSize = 1000) -> Any:
    started, run_id = await start_background(engine, _config(), batch_size=batch_size)
    if started:
        return StartAnswer(status="started", run_id=str(run_id), message="the run started in the background")
    body = StartAnswer(
        status="already_running",
        run_id=str(run_id) if run_id else None,
        message="a run is in progress; no second one was started",
    )
    return JSONResponse(body.model_dump(), status_code=409)


@router.post("/process/{event_type}", response_model=RunAnswer)
async def process_type(
    engine: EngineDep,
    _key: AdminDep,
    event_type: Annotated[QueryText, Path(max_length=128)],
    batch_size: BatchSize = 1000,
) -> RunAnswer:
    """The pipeline for the visitors with waiting events of this type (all their waiting
    events: sessions are made from every event of a visitor)."""
    result = await run(engine, _config(), trigger="process", event_type=event_type, batch_size=batch_size)
    return _answer(result)


@router.post("/calculate-daily-metrics", response_model=DailyAnswer)
async def calculate_daily(engine: EngineDep, _key: AdminDep, target_date: date) -> DailyAnswer:
    check_year(target_date, "target_date")
    async with engine.begin() as conn:
        rows = await repository.recompute_day(conn, target_date)
    return DailyAnswer(
        status="completed", target_date=target_date, metrics=[DailyMetric.model_validate(r) for r in rows]
    )


@router.get("/status", response_model=StatusAnswer)
async def status(engine: EngineDep, _key: StatsReadDep) -> StatusAnswer:
    async with engine.connect() as conn:
        last = await repository.last_run(conn)
        pending = await repository.pending_by_type(conn)
        sessions, daily = await repository.table_counts(conn)
        mark = await repository.read_watermark(conn)
    now = datetime.now(UTC)
    return StatusAnswer(
        last_run=None if last is None else LastRun.model_validate({**last, "run_id": str(last["id"])}),
        pending_events=pending,
        pending_total=sum(pending.values()),
        sessions=sessions,
        daily_metrics=daily,
        watermark=mark,
        lag_seconds=None if mark is None else (now - mark).total_seconds(),
        session_timeout_seconds=get_settings().session_timeout.total_seconds(),
    )


@router.get("/recent-sessions", response_model=list[SessionRow])
async def recent_sessions(
    engine: EngineDep,
    session: SessionDep,
    access: StatsReadDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 5,
    site_id: Annotated[QueryText | None, Query(max_length=128)] = None,
) -> list[SessionRow]:
    since = get_settings().stored_since(datetime.now(UTC)) - timedelta(days=1)
    scoped = await readable_sites(session, access, site_id or None, None)
    sites = list(scoped["site_id"]) if "site_id" in scoped else None
    async with engine.connect() as conn:
        rows = await repository.recent_sessions(conn, limit, since, site_id or None, sites)
    return [SessionRow.model_validate(r) for r in rows]


@router.post("/cleanup", response_model=CleanupAnswer)
async def cleanup(
    engine: EngineDep, _key: AdminDep, retention_days: Annotated[int, Query(ge=1, le=36600)] = 90
) -> CleanupAnswer:
    """Drops whole chunks of raw events older than `retention_days` — never events the
    pipeline has not processed (at or after the watermark, or with a waiting change) — and
    never sessions or daily metrics."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=retention_days)
    async with engine.connect() as conn:
        await repository.lock(conn)  # no run while the chunks go
        await conn.commit()
        try:
            mark = await repository.read_watermark(conn)
            pending = await repository.oldest_pending(conn)
            limits = [cutoff] + ([mark] if mark is not None else []) + ([pending] if pending else [])
            await conn.commit()
            if mark is None:
                return CleanupAnswer(
                    status="completed",
                    retention_days=retention_days,
                    cutoff=cutoff,
                    dropped_before=None,
                    chunks_dropped=0,
                    events_dropped=0,
                    reason="the pipeline has not run yet: nothing is processed, nothing dropped",
                )
            before = min(limits)
            events = await repository.events_before(conn, before)
            chunks = await repository.drop_event_chunks(conn, before)
            await repository.trim_after_drop(conn, before)
            await conn.commit()
        finally:
            await repository.unlock(conn)
            await conn.commit()
    reason = "older than retention_days" if before == cutoff else "held back to events not yet processed"
    return CleanupAnswer(
        status="completed",
        retention_days=retention_days,
        cutoff=cutoff,
        dropped_before=before,
        chunks_dropped=len(chunks),
        events_dropped=events if chunks else 0,
        reason=reason,
    )
