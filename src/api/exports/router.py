"""/export/*, /process/* and /pipeline/status: the old bulk system's routes, on the exporter.
The run routes need an admin-scoped key once any key exists (AdminDep)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from src.api.auth.dependencies import AdminDep
from src.api.errors import InvalidParameter
from src.api.exports import status
from src.api.exports.schemas import (
    ExportConfig,
    ExportRunAnswer,
    ExportStatus,
    PipelineStatus,
    ProcessRunAnswer,
    ProcessStatus,
    RunDone,
)
from src.api.exports.service import Exporter, RunResult

router = APIRouter(tags=["exports"])
# A backfill runs within its request: a month of events is minutes at most (docs/exports.md).
MAX_BACKFILL = timedelta(days=31)


async def get_exporter(request: Request) -> Exporter:
    exporter: Exporter = request.app.state.exporter
    return exporter


ExporterDep = Annotated[Exporter, Depends(get_exporter)]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _done(result: RunResult) -> RunDone:
    return RunDone(
        run_id=result.run_id,
        kind=result.kind,
        received_from=result.range_start,
        received_until=result.range_end,
        events=result.events,
        files=result.files,
        manifest=result.manifest,
        retried=result.retried,
    )


@router.post("/export/run", response_model=ExportRunAnswer)
async def run_export(
    exporter: ExporterDep,
    _: AdminDep,
    start: Annotated[
        datetime | None, Query(alias="from", description="backfill: received from (ISO 8601)")
    ] = None,
    end: Annotated[
        datetime | None, Query(alias="to", description="backfill: received before (ISO 8601)")
    ] = None,
) -> ExportRunAnswer:
    """Export now. With `from` and `to`: re-export the events received in [from, to) into
    `backfill/<run id>/…`, leaving the watermark alone."""
    if start is None and end is None:
        return ExportRunAnswer(runs=[_done(result) for result in await exporter.run()])
    if start is None or end is None:
        missing = "from" if start is None else "to"
        raise InvalidParameter(("query", missing), "a backfill needs both from and to")
    start, end = _utc(start), _utc(end)
    if start >= end:
        raise InvalidParameter(("query", "to"), "must be after from", end.isoformat())
    if end - start > MAX_BACKFILL:
        raise InvalidParameter(
            ("query", "to"), "a backfill covers at most 31 days: split a longer range", end.isoformat()
        )
    return ExportRunAnswer(runs=[_done(await exporter.backfill(start, end))])


@router.get("/export/status", response_model=ExportStatus)
async def read_export_status(exporter: ExporterDep) -> ExportStatus:
    return await status.export_status(exporter.engine, exporter.settings)


@router.get("/export/config", response_model=ExportConfig)
async def read_export_config(exporter: ExporterDep) -> ExportConfig:
    """The export settings; keys and secrets masked."""
    return status.export_config(exporter.settings)


@router.post("/process/run", response_model=ProcessRunAnswer)
async def run_processing(exporter: ExporterDep, _: AdminDep) -> ProcessRunAnswer:
    result = await exporter.process()
    return ProcessRunAnswer(raw_files=result.raw_files, events=result.events, files=result.files)


@router.get("/process/status", response_model=ProcessStatus)
async def read_process_status(exporter: ExporterDep) -> ProcessStatus:
    return await status.process_status(exporter.engine)


@router.get("/pipeline/status", response_model=PipelineStatus)
async def read_pipeline_status(exporter: ExporterDep) -> PipelineStatus:
    return await status.pipeline_status(exporter.engine, exporter.settings)
