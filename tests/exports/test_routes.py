"""The routes: /export/run (and its backfill), /export/status, /export/config (masked),
/process/run, /process/status, /pipeline/status; the API key on the run routes; one run at a
time (409 while another holds the lock)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import ExportTarget
from src.api.exports import repository
from src.api.exports.service import Exporter
from tests.exports.conftest import ago, destination_of, event_row, exported, folder_settings, insert

pytestmark = pytest.mark.anyio


@pytest.fixture
def routed(app: FastAPI, engine: AsyncEngine, folder: Path) -> Iterator[Exporter]:
    original = app.state.exporter
    app.state.exporter = Exporter(engine, folder_settings(folder, batch_size=5))
    try:
        yield app.state.exporter
    finally:
        app.state.exporter = original


async def test_run_status_process_and_pipeline(
    client: httpx.AsyncClient, engine: AsyncEngine, export_clean: None, routed: Exporter
) -> None:
    before = (await client.get("/export/status")).json()
    assert before["last_run"] is None and before["watermark"] is None
    ids = await insert(engine, [event_row(ago(10)) for _ in range(7)])
    waiting = (await client.get("/export/status")).json()
    assert waiting["events_waiting"] == 7 and waiting["lag_seconds"] >= 10
    answer = await client.post("/export/run")
    assert answer.status_code == 200, answer.text
    [run] = answer.json()["runs"]
    assert run["events"] == 7 and len(run["files"]) == 2 and run["manifest"].endswith(".manifest.json")
    status = (await client.get("/export/status")).json()
    assert status["events_exported"] == 7 and status["files_exported"] == 2 and status["events_waiting"] == 0
    assert status["last_run"]["status"] == "done" and status["watermark"] == run["received_until"]
    assert (await client.get("/process/status")).json()["raw_files_pending"] == 2
    processed = (await client.post("/process/run")).json()
    assert processed["raw_files"] == 2 and processed["events"] == 7
    pipeline = (await client.get("/pipeline/status")).json()
    assert pipeline["process"]["raw_files_pending"] == 0
    assert pipeline["destinations"]["raw"].startswith("file://")
    assert pipeline["export"]["events_exported"] == 7
    counts, _ = exported(destination_of(routed.settings))
    assert counts == {str(i): 1 for i in ids}


async def test_backfill_goes_to_its_own_prefix_and_leaves_the_watermark(
    client: httpx.AsyncClient, engine: AsyncEngine, export_clean: None, routed: Exporter
) -> None:
    ids = await insert(engine, [event_row(ago(30)) for _ in range(3)])
    await client.post("/export/run")
    mark = (await client.get("/export/status")).json()["watermark"]
    start, end = ago(3600).isoformat(), ago(0).isoformat()
    answer = await client.post("/export/run", params={"from": start, "to": end})
    assert answer.status_code == 200, answer.text
    [run] = answer.json()["runs"]
    assert run["kind"] == "backfill" and run["events"] == 3
    assert all(key.startswith(f"backfill/{run['run_id']}/") for key in run["files"])
    assert (await client.get("/export/status")).json()["watermark"] == mark
    counts, _ = exported(destination_of(routed.settings), f"backfill/{run['run_id']}")
    assert counts == {str(i): 1 for i in ids}
    # The backfill's files are not processed as raw files (they would be counted twice).
    assert (await client.get("/process/status")).json()["raw_files_pending"] == 1


async def test_bad_backfill_ranges_are_named(client: httpx.AsyncClient, routed: Exporter) -> None:
    only_from = await client.post("/export/run", params={"from": "2026-11-01T00:00:00Z"})
    assert only_from.status_code == 422 and only_from.json()["detail"][0]["loc"] == ["query", "to"]
    backwards = await client.post(
        "/export/run", params={"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}
    )
    assert backwards.status_code == 422 and backwards.json()["detail"][0]["loc"] == ["query", "to"]
    too_long = await client.post(
        "/export/run", params={"from": "2026-01-01T00:00:00Z", "to": "2026-02-02T00:00:00Z"}
    )
    assert too_long.status_code == 422 and "31 days" in too_long.json()["detail"][0]["msg"]
    garbage = await client.post("/export/run", params={"from": "yesterday", "to": "2026-11-01T00:00:00Z"})
    assert garbage.status_code == 422 and garbage.json()["detail"][0]["loc"] == ["query", "from"]


async def test_one_run_at_a_time(client: httpx.AsyncClient, engine: AsyncEngine, routed: Exporter) -> None:
    async with engine.connect() as holder:
        holder = await holder.execution_options(isolation_level="AUTOCOMMIT")
        await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": repository.LOCK_KEY})
        try:
            busy = await client.post("/export/run")
            assert busy.status_code == 409 and busy.headers["retry-after"] == "5"
            assert (await client.post("/process/run")).status_code == 409
        finally:
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": repository.LOCK_KEY})


async def test_run_routes_need_the_admin_key_when_keys_exist(
    engine: AsyncEngine, export_clean: None, folder: Path
) -> None:
    from tests.sites.helpers import ADMIN, service

    async with service() as (app, http):
        app.state.exporter = Exporter(engine, folder_settings(folder))
        assert (await http.post("/export/run")).status_code == 401
        assert (await http.post("/process/run")).status_code == 401
        assert (await http.post("/export/run", headers={"x-api-key": "wrong"})).status_code == 401
        assert (await http.post("/export/run", headers=ADMIN)).status_code == 200
        assert (await http.post("/process/run", headers=ADMIN)).status_code == 200
        assert (await http.get("/export/status")).status_code == 200


async def test_config_masks_keys(
    client: httpx.AsyncClient, app: FastAPI, engine: AsyncEngine, folder: Path
) -> None:
    secret, access = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AKIAIOSFODNN7EXAMPLE"
    settings = folder_settings(folder)
    raw = ExportTarget("s3://raw-bucket/raw-events", "s3", "raw-bucket", "raw-events", access, secret)
    original = app.state.exporter
    app.state.exporter = Exporter(
        engine,
        dataclasses.replace(settings, raw=raw, s3_endpoint_url="http://127.0.0.1:9"),
        processed=destination_of(settings, "processed"),
    )
    try:
        answer = await client.get("/export/config")
    finally:
        app.state.exporter = original
    assert answer.status_code == 200
    assert secret not in answer.text and access not in answer.text
    body = answer.json()
    assert body["raw"] == {
        "url": "s3://raw-bucket/raw-events",
        "bucket": "raw-bucket",
        "access_key": "****MPLE",
        "secret_key": "****EKEY",
    }
    assert body["processed"]["access_key"] is None and body["format"] in ("jsonl", "parquet")
    assert secret not in repr(raw) and access not in repr(raw)


async def test_the_scheduled_turn_exports_then_processes(
    engine: AsyncEngine, export_clean: None, folder: Path
) -> None:
    from src.api.exports.job import export_once

    pipeline = Exporter(engine, folder_settings(folder))
    ids = await insert(engine, [event_row(ago(10), client_id="acme") for _ in range(3)])
    from src.api.metrics import instruments

    runs = instruments.JOB_RUNS.labels("export")._value.get()
    await export_once(pipeline)
    counts, _ = exported(destination_of(pipeline.settings, "processed"))
    assert counts == {str(i): 1 for i in ids}
    assert instruments.JOB_RUNS.labels("export")._value.get() == runs + 1
    assert instruments.JOB_LAG.labels("export")._value.get() == 0.0  # nothing waits
    # A turn that finds the lock held (another worker's) skips quietly.
    async with engine.connect() as holder:
        holder = await holder.execution_options(isolation_level="AUTOCOMMIT")
        await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": repository.LOCK_KEY})
        try:
            await export_once(pipeline)
        finally:
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": repository.LOCK_KEY})
