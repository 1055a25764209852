"""The sessions job over a large table: the first (full) run over N events spread over 90 days,
then an incremental run after 100k new events (the last minutes) and after 100k late events
spread over 30 days, then p50/p95 of the stats API's session metrics over 30 days.

Events are bulk-copied (benchmarks/generate.py's rows), and each copied batch appends its
changes to session_change with the same SQL the ingest statement uses, so the job sees exactly
what it would after the writer stored them. Prints figures; not a test.

    .venv/bin/python -m benchmarks.sessions_job                 # 10M events
    .venv/bin/python -m benchmarks.sessions_job --events 1000000 --database-url postgresql+psycopg://…
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from benchmarks.generate import rows, setup
from benchmarks.server import local_database_url
from src.api.events.models import EVENT_COPY_COLUMNS, EVENT_COPY_TYPES
from src.api.sessions import repository

_STAGE = "sessions_bench_stage"


def copy_events(conn: psycopg.Connection[Any], generated: Any, *, log_changes: bool) -> int:
    """COPY rows into `event` through a stage table, appending their changes when asked."""
    columns = ", ".join(EVENT_COPY_COLUMNS)
    conn.execute(f"DROP TABLE IF EXISTS {_STAGE}")
    conn.execute(f"CREATE UNLOGGED TABLE {_STAGE} (LIKE event INCLUDING DEFAULTS)")
    count = 0
    with conn.cursor() as cur, cur.copy(f"COPY {_STAGE} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(list(EVENT_COPY_TYPES))
        for row in generated:
            copy.write_row(row)
            count += 1
    returned = ", ".join(repository.CHANGE_COLUMNS)
    sql = f"WITH inserted AS (INSERT INTO event ({columns}) SELECT {columns} FROM {_STAGE} RETURNING {returned})"
    if log_changes:
        sql += ", " + repository.append_cte("inserted")
    conn.execute(sql + " SELECT count(*) FROM inserted")
    conn.execute(f"DROP TABLE {_STAGE}")
    return count


def shifted(generated: Any, days: float, seed: int) -> Any:
    """Rows of `generated` with times spread over the last `days` days."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for row in generated:
        values = list(row)
        values[0] = uuid.uuid4()
        values[1] = now - timedelta(seconds=rng.random() * days * 86400)
        yield tuple(values)


async def job(url: str, label: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from src.api.config import get_settings
    from src.api.sessions.service import SessionSettings, run

    engine = create_async_engine(url)
    try:
        started = time.perf_counter()
        result = await run(engine, SessionSettings.of(get_settings(), datetime.now(UTC)), trigger="benchmark")
        elapsed = time.perf_counter() - started
        assert result is not None
        print(
            f"{label}: {elapsed:.1f} s — events processed {result.events_processed:,},"
            f" sessions created {result.sessions_created:,}, updated {result.sessions_updated:,},"
            f" deleted {result.sessions_deleted:,}, daily metrics {result.daily_metrics_updated:,}"
        )
    finally:
        await engine.dispose()


async def summary_latency(url: str, repeats: int) -> None:
    """The stats API's summary with session metrics over the last 30 days, in-process."""
    import httpx

    from src.main import app

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                response = await client.get("/events/count")
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            print(
                f"/events/count (whole range): p50 {statistics.median(timings):.0f} ms,"
                f" p95 {timings[min(len(timings) - 1, int(0.95 * len(timings)))]:.0f} ms"
                f" (count {response.json()['count']:,})"
            )
            for params, name in (({}, "all sites"), ({"site_id": "site-1"}, "site-1")):
                timings = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    response = await client.get("/api/stats/summary", params=params)
                    timings.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.text
                body = response.json()
                timings.sort()
                p95 = timings[min(len(timings) - 1, int(0.95 * len(timings)))]
                print(
                    f"/api/stats/summary 30 days, {name}: p50 {statistics.median(timings):.0f} ms,"
                    f" p95 {p95:.0f} ms (visits {body['visits']:,}, bounce_rate {body['bounce_rate']:.3f},"
                    f" source {body['source']})"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-load", action="store_true", help="keep the events already loaded")
    parser.add_argument("--summary-only", action="store_true", help="only time the stats questions")
    args = parser.parse_args()
    url = args.database_url or local_database_url("analytics_bench_sessions")
    import os

    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("SESSION_JOB_INTERVAL", "0")
    os.environ.setdefault("ROLLUP_JOB_INTERVAL", "0")
    os.environ.setdefault("RETENTION_CHECK_INTERVAL", "0")
    asyncio.run(setup(url))
    if args.summary_only:
        asyncio.run(summary_latency(url, args.repeats))
        return
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        if not args.skip_load:
            conn.execute("TRUNCATE event, session, session_daily_metric, session_change, session_run")
            started = time.perf_counter()
            copied = copy_events(conn, rows(args.events, args.days, seed=42), log_changes=False)
            conn.execute("ANALYZE event")
            print(f"loaded {copied:,} events over {args.days} days in {time.perf_counter() - started:.0f} s")
        conn.execute("TRUNCATE session, session_daily_metric, session_change, session_run")
        conn.execute("UPDATE session_job SET watermark = NULL")
    asyncio.run(job(url, f"first run (full, {args.events:,} events)"))
    with psycopg.connect(plain, autocommit=True) as conn:
        copy_events(conn, shifted(rows(args.changes, 1, seed=7), 10 / 1440, seed=1), log_changes=True)
    asyncio.run(job(url, f"incremental run after {args.changes:,} new events"))
    with psycopg.connect(plain, autocommit=True) as conn:
        copy_events(conn, shifted(rows(args.changes, 1, seed=8), 30, seed=2), log_changes=True)
    asyncio.run(job(url, f"incremental run after {args.changes:,} late events over 30 days"))
    asyncio.run(job(url, "an idle run"))
    asyncio.run(summary_latency(url, args.repeats))


if __name__ == "__main__":
    main()
