"""The raw export of a large run: EVENTS events (1M by default) received in the last minutes,
exported by one run into a folder, as the job does it, in a process of its own so that its
peak memory is the exporter's alone. Prints seconds, events/s, MB written and MB/s, and the
peak RSS, per format. The run streams (a server-side cursor, one file of EXPORT_BATCH_SIZE
rows at a time): the peak stays flat however many events a run holds.

    .venv/bin/python -m benchmarks.export_events                      # 1M, jsonl and parquet
    .venv/bin/python -m benchmarks.export_events --events 200000 --formats jsonl+gzip
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.generate import setup
from benchmarks.server import ROOT, local_database_url

DATABASE = "analytics_bench_export"
FILL = text(
    """
    INSERT INTO event (id, time, site_id, event_type, page, url, ip_address, user_agent, os, browser,
                       device, referrer, referrer_domain, session_id, visitor_id, user_id, duration,
                       properties, received_at, updated_at, client_id)
    SELECT gen_random_uuid(), now() - (i % 86400) * interval '1 second', 'site-' || (i % 5),
           CASE WHEN i % 10 = 0 THEN 'click' ELSE 'pageview' END, '/page/' || (i % 500),
           'https://shop.example/page/' || (i % 500), '203.0.113.' || (i % 250),
           'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36',
           'Windows', 'Chrome', 'desktop', 'https://www.google.com/', 'google.com',
           's' || (i % 20000), 'v' || (i % 50000), NULL, i % 120,
           jsonb_build_object('plan', 'pro', 'n', i % 7),
           now() - interval '5 minutes' + (i % 240) * interval '1 second', now(),
           CASE WHEN i % 3 = 0 THEN NULL ELSE 'client-' || (i % 4) END
    FROM generate_series(:first, :last) AS i
    """
)
CHILD = """
import asyncio
import resource
import time
from src.api.config import get_settings
from src.api.db.engine import create_engine
from src.api.exports.service import Exporter

async def main():
    settings = get_settings()
    engine = create_engine(settings)
    started = time.perf_counter()
    [run] = await Exporter(engine, settings.exports).run()
    seconds = time.perf_counter() - started
    print(run.events, len(run.files), seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    await engine.dispose()

asyncio.run(main())
"""


async def fill(url: str, events: int) -> None:
    await setup(url)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE event, processed_file, export_file, export_run, export_watermark"))
    step = 100_000
    for first in range(1, events + 1, step):
        async with engine.begin() as conn:
            await conn.execute(FILL, {"first": first, "last": min(first + step - 1, events)})
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE event"))
    await engine.dispose()


async def reset_exports(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE processed_file, export_file, export_run, export_watermark"))
    await engine.dispose()


def export_once(url: str, file_format: str, batch: int) -> None:
    asyncio.run(reset_exports(url))
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "RAW_EXPORT_URL": Path(folder).as_uri(),
            "EXPORT_FORMAT": "parquet" if file_format == "parquet" else "jsonl",
            "EXPORT_GZIP": "true" if file_format == "jsonl+gzip" else "false",
            "EXPORT_BATCH_SIZE": str(batch),
            "EXPORT_LAG": "0",
            "EVENTS_RETENTION": "off",
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True, check=True
        )
        seconds = time.perf_counter() - started
        events_text, files_text, run_text, peak_text = done.stdout.split()
        events, files, run_seconds = int(events_text), int(files_text), float(run_text)
        peak_megabytes = int(peak_text) / 1024  # ru_maxrss is in KiB on Linux
        size = sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file())
    megabytes = size / 1e6
    print(
        f"{file_format:<11} events={events} files={files} run={run_seconds:.1f} s"
        f" (process {seconds:.1f} s) events/s={events / run_seconds:,.0f}"
        f" written={megabytes:.0f} MB ({megabytes / run_seconds:.1f} MB/s)"
        f" peak_rss={peak_megabytes:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000, help="rows per file (EXPORT_BATCH_SIZE)")
    parser.add_argument(
        "--formats", default="jsonl,parquet", help="comma-separated: jsonl, jsonl+gzip, parquet"
    )
    parser.add_argument("--database-url", default=None, help=f"default: the local cluster's {DATABASE}")
    parser.add_argument("--keep", action="store_true", help="export the events already there")
    args = parser.parse_args()
    url = args.database_url or local_database_url(DATABASE)
    if not args.keep:
        started = time.perf_counter()
        asyncio.run(fill(url, args.events))
        print(f"stored {args.events} events in {time.perf_counter() - started:.0f} s")
    for file_format in args.formats.split(","):
        export_once(url, file_format.strip(), args.batch_size)


if __name__ == "__main__":
    main()
