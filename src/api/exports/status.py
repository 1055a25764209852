"""What the status routes show, and `export_metrics` for a metrics endpoint to wire: runs,
failures, events exported, the lag of the oldest unexported event and the files waiting for
processing, all read from the pipeline's tables (so every worker answers the same)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import EPOCH, ExportSettings, ExportTarget
from src.api.exports import repository
from src.api.exports.models import ExportRun
from src.api.exports.schemas import (
    Destinations,
    ExportConfig,
    ExportStatus,
    LastError,
    PipelineStatus,
    ProcessStatus,
    RunPublic,
    TargetConfig,
)


def run_public(run: ExportRun) -> RunPublic:
    assert run.id is not None
    return RunPublic(
        id=run.id,
        kind=run.kind,
        status=run.status,
        created_at=run.created_at,
        finished_at=run.finished_at,
        received_from=run.range_start,
        received_until=run.range_end,
        events=run.events,
        files=run.files,
        attempts=run.attempts,
        error=run.error,
    )


async def export_status(engine: AsyncEngine, settings: ExportSettings) -> ExportStatus:
    async with engine.connect() as conn:
        last = await repository.last_run(conn)
        totals = await repository.raw_totals(conn)
        mark = await repository.read_watermark(conn)
        error = await repository.last_error(conn)
        now = datetime.now(UTC)
        # received_at is never ahead of the clock; an hour of slack for a clock step.
        waiting = await repository.waiting_events(
            conn, mark.exported_until if mark else EPOCH, now + timedelta(hours=1)
        )
    oldest = waiting.oldest_received_at
    return ExportStatus(
        last_run=run_public(last) if last else None,
        runs=totals.runs,
        failed_runs=totals.failed_runs,
        files_exported=totals.files,
        events_exported=totals.events,
        bytes_exported=totals.bytes,
        watermark=mark.exported_until if mark else None,
        events_waiting=waiting.events,
        oldest_waiting_received_at=oldest,
        lag_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        last_error=LastError(at=error[0], error=error[1]) if error else None,
        interval_seconds=settings.interval,
    )


async def process_status(engine: AsyncEngine) -> ProcessStatus:
    async with engine.connect() as conn:
        totals = await repository.process_totals(conn)
    return ProcessStatus(
        raw_files_pending=totals.pending_files,
        events_pending=totals.pending_events,
        raw_files_processed=totals.processed_files,
        processed_files=totals.processed_outputs,
        last_processed_at=totals.last_processed_at,
        last_error=totals.last_error,
    )


async def pipeline_status(engine: AsyncEngine, settings: ExportSettings) -> PipelineStatus:
    return PipelineStatus(
        export=await export_status(engine, settings),
        process=await process_status(engine),
        destinations=Destinations(raw=settings.raw.url, processed=settings.processed.url),
    )


def _target(target: ExportTarget) -> TargetConfig:
    masked = target.masked()
    return TargetConfig(
        url=target.url,
        bucket=target.bucket or None,
        access_key=masked["access_key"],
        secret_key=masked["secret_key"],
    )


def export_config(settings: ExportSettings) -> ExportConfig:
    return ExportConfig(
        raw=_target(settings.raw),
        processed=_target(settings.processed),
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        format=settings.format,
        gzip=settings.gzip,
        batch_size=settings.batch_size,
        interval_seconds=settings.interval,
        lag_seconds=settings.lag,
        late_window_seconds=settings.late_window,
    )


@dataclass(frozen=True)
class ExportMetrics:
    runs_total: int
    failed_runs_total: int
    events_exported_total: int
    files_exported_total: int
    lag_seconds: float
    events_waiting: int
    raw_files_pending_processing: int


async def export_metrics(engine: AsyncEngine, settings: ExportSettings) -> ExportMetrics:
    """The pipeline's figures for a metrics endpoint (issue 17 wires it)."""
    exported = await export_status(engine, settings)
    processed = await process_status(engine)
    return ExportMetrics(
        runs_total=exported.runs,
        failed_runs_total=exported.failed_runs,
        events_exported_total=exported.events_exported,
        files_exported_total=exported.files_exported,
        lag_seconds=exported.lag_seconds,
        events_waiting=exported.events_waiting,
        raw_files_pending_processing=processed.raw_files_pending,
    )
