"""What keeping the Apache-edition rollups costs ingestion: the ingest writer's own statements,
timed on the same staged batches with and without the rollup upserts (the writer COPYs a batch
into a temp table, then runs one INSERT … SELECT; only that INSERT differs). Modes alternate
batch by batch so that a busy machine slows both alike. Compare the events/s with
benchmarks/ingest_batches.py, which measures the whole HTTP path."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from datetime import UTC, datetime

import psycopg

from benchmarks.generate import rows, setup
from benchmarks.server import local_database_url
from src.api.events.models import EVENT_COPY_COLUMNS, EVENT_COPY_TYPES
from src.api.ingest.writer import _COPY_SQL, _STAGE_DDL, copy_insert_sql
from src.api.rollups.catalogue import CATALOGUE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--batches", type=int, default=40, help="batches per mode")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--days", type=float, default=1.0, help="time spread of the events")
    parser.add_argument(
        "--late",
        action="store_true",
        help="every tier complete up to now, so every event is late (a backfill: the tiers' upserts run too)",
    )
    args = parser.parse_args()
    url = args.database_url or local_database_url("analytics_bench_rollup")
    asyncio.run(setup(url))
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    timings: dict[str, list[float]] = {"plain": [], "with rollups": []}
    statements = {"plain": copy_insert_sql(rollup=False), "with rollups": copy_insert_sql(rollup=True)}
    source = rows(args.batches * 2 * args.batch_size, args.days, seed=7)
    with psycopg.connect(plain) as conn:
        conn.execute("TRUNCATE event")
        for name in CATALOGUE.names:
            conn.execute(f"TRUNCATE {name}")
        conn.execute(
            "UPDATE rollup_watermark SET complete_until = %s", (datetime.now(UTC) if args.late else None,)
        )
        conn.execute(_STAGE_DDL)
        conn.commit()
        for index in range(args.batches * 2):
            mode = "plain" if index % 2 == 0 else "with rollups"
            batch = [next(source) for _ in range(args.batch_size)]
            started = time.perf_counter()
            with conn.cursor() as cur:
                with cur.copy(_COPY_SQL) as copy:
                    copy.set_types(list(EVENT_COPY_TYPES))
                    for row in batch:
                        copy.write_row(row)
                cur.execute(statements[mode])
                cur.fetchall()
            conn.commit()
            timings[mode].append(time.perf_counter() - started)
    print(
        f"{args.batches} batches of {args.batch_size:,} per mode over {args.days} day(s),"
        f" {'late (below every tier watermark)' if args.late else 'current'} events,"
        f" {len(EVENT_COPY_COLUMNS)} columns, {len(CATALOGUE.rollups)} rollups"
    )
    for mode, values in timings.items():
        median = statistics.median(values)
        print(f"{mode:13} median {median * 1000:7.1f} ms/batch  {args.batch_size / median:10,.0f} events/s")
    cost = statistics.median(timings["with rollups"]) / statistics.median(timings["plain"]) - 1
    print(f"rollup upkeep: +{cost:.0%} per batch on the database side")


if __name__ == "__main__":
    main()
