"""A run killed mid-upload (the process gets SIGKILL while it stores its files) and retried by
the next run: the same range, the same file names, every event in exactly one file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.exports.conftest import destination_of, exported, exporter, folder_settings, stored_ids

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
EVENTS = 20_000
BATCH = 100

RUN = """
import asyncio
from src.api.config import get_settings
from src.api.db.engine import create_engine
from src.api.exports.service import Exporter

async def main():
    settings = get_settings()
    engine = create_engine(settings)
    await Exporter(engine, settings.exports).run()

asyncio.run(main())
"""


async def test_a_killed_run_is_finished_by_the_next(
    engine: AsyncEngine, export_clean: None, folder: Path
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO event (id, time, page, received_at, updated_at)"
                " SELECT gen_random_uuid(), now() - interval '1 day', '/p' || i,"
                " now() - interval '10 seconds', now() FROM generate_series(1, :n) AS i"
            ),
            {"n": EVENTS},
        )
    settings = folder_settings(folder, batch_size=BATCH)
    env = {
        **os.environ,
        "RAW_EXPORT_URL": settings.raw.url,
        "PROCESSED_EXPORT_URL": settings.processed.url,
        "EXPORT_BATCH_SIZE": str(BATCH),
        "EXPORT_LAG": "0",
        "EXPORT_FORMAT": "jsonl",
        "EXPORT_GZIP": "false",
    }
    child = subprocess.Popen([sys.executable, "-c", RUN], cwd=ROOT, env=env)
    raw = Path(settings.raw.prefix)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if raw.exists() and sum(1 for _ in raw.rglob("raw_export_*.json")) >= 3:
                break
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    async with engine.connect() as conn:
        status = (await conn.execute(text("SELECT status FROM export_run"))).scalars().all()
    assert status == ["running"], "the run was not cut off mid-upload"
    assert not any(raw.rglob("*.manifest.json"))
    results = await exporter(engine, settings).run()
    assert results[0].retried and results[0].events == EVENTS
    assert len(results[0].files) == EVENTS // BATCH
    counts, keys = exported(destination_of(settings))
    assert len(keys) == EVENTS // BATCH
    assert max(counts.values()) == 1 and set(counts) == await stored_ids(engine)
