"""Response models of the export routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class RunPublic(BaseModel):
    id: int
    kind: str  # raw | backfill
    status: str  # running | done | failed
    created_at: datetime
    finished_at: datetime | None
    received_from: datetime
    received_until: datetime
    events: int
    files: int
    attempts: int
    error: str | None


class RunDone(BaseModel):
    run_id: int
    kind: str
    received_from: datetime
    received_until: datetime
    events: int
    files: list[str]
    manifest: str | None
    retried: bool  # a run that had failed, finished now with the same range and file names


class ExportRunAnswer(BaseModel):
    runs: list[RunDone]  # empty: nothing new since the last run (runs are a second apart)


class ProcessRunAnswer(BaseModel):
    raw_files: int
    events: int
    files: list[str]


class LastError(BaseModel):
    at: datetime
    error: str


class ExportStatus(BaseModel):
    last_run: RunPublic | None
    runs: int
    failed_runs: int
    files_exported: int
    events_exported: int
    bytes_exported: int
    watermark: datetime | None  # events received before it (and committed) are exported
    events_waiting: int
    oldest_waiting_received_at: datetime | None
    lag_seconds: float  # age of the oldest event not yet exported; 0 when none waits
    last_error: LastError | None
    interval_seconds: float


class ProcessStatus(BaseModel):
    raw_files_pending: int
    events_pending: int
    raw_files_processed: int
    processed_files: int
    last_processed_at: datetime | None
    last_error: str | None


class Destinations(BaseModel):
    raw: str
    processed: str


class PipelineStatus(BaseModel):
    export: ExportStatus
    process: ProcessStatus
    destinations: Destinations


class TargetConfig(BaseModel):
    url: str
    bucket: str | None
    access_key: str | None  # masked
    secret_key: str | None  # masked


class ExportConfig(BaseModel):
    raw: TargetConfig
    processed: TargetConfig
    s3_endpoint_url: str | None
    s3_region: str
    format: str
    gzip: bool
    batch_size: int
    interval_seconds: float
    lag_seconds: float
    late_window_seconds: float
