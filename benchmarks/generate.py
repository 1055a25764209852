"""Generate realistic events straight into a benchmark database with binary COPY: a few sites,
~200 pages, a real User-Agent mix, referrers, visitors and sessions, spread over 90 days.
On the Apache edition the 15-minute rollups are then built in bulk (what the writer keeps up to date
event by event); on Community the continuous aggregate is refreshed."""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from benchmarks.ingest_batches import AGENTS
from benchmarks.server import local_database_url
from src.api.events.enrichment import parse_user_agent, referrer_domain_of
from src.api.events.models import EVENT_COPY_COLUMNS, EVENT_COPY_TYPES
from src.api.rollups import pages
from src.api.rollups.activity import REBUILD_SQL
from src.api.rollups.catalogue import CATALOGUE

SITES = ["site-1", "site-2", "site-3"]
SECTIONS = ["blog", "docs", "product", "help", "news"]
PAGES = ["/", "/pricing", "/about", "/login", "/signup"] + [
    f"/{section}/{n}" for section in SECTIONS for n in range(39)
]
REFERRERS = [
    "",
    "",
    "",
    "https://www.google.com/",
    "https://www.bing.com/",
    "https://news.ycombinator.com/",
    "https://t.co/abc",
    "https://www.reddit.com/r/x",
    "https://duckduckgo.com/",
    "https://github.com/",
]
TYPES = ["pageview"] * 8 + ["click", "signup"]


async def setup(url: str) -> None:
    """Create the schema through the service's own startup code."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from src.api.config import get_settings
    from src.api.db.timescale import setup_database

    engine = create_async_engine(url)
    await setup_database(engine, get_settings())
    await engine.dispose()


async def fill_tiers(url: str) -> dict[str, str]:
    """Apache edition: what the service's rollup job does, from the first quarter hour on."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from src.api.rollups.job import advance_tiers

    engine = create_async_engine(url)
    try:
        marks = await advance_tiers(engine)
    finally:
        await engine.dispose()
    return {tier: mark.isoformat() if mark else "-" for tier, mark in marks.items()}


def rows(count: int, days: int, seed: int):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    agents = [(agent, parse_user_agent(agent)) for agent in AGENTS]
    end = datetime.now(UTC)
    span = days * 86400
    received = end
    for _ in range(count):
        agent, info = rng.choice(agents)
        referrer = rng.choice(REFERRERS) or None
        visitor = rng.randrange(300_000)
        yield (
            uuid.uuid4(),
            end - timedelta(seconds=rng.random() * span),
            rng.choice(SITES),
            rng.choice(TYPES),
            rng.choice(PAGES),
            None,
            f"10.{visitor % 250}.{visitor // 250 % 250}.{visitor % 7}",
            agent,
            info.os,
            info.browser,
            info.device,
            info.is_bot,
            referrer,
            referrer_domain_of(referrer),
            f"s{visitor}-{rng.randrange(4)}",
            f"v{visitor}",
            None,
            rng.randrange(600),
            None,
            None,
            received,
            received,
            None,  # client_id
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument(
        "--rollups-only",
        action="store_true",
        help="rebuild the rollups and activity tables of existing events",
    )
    args = parser.parse_args()
    url = args.database_url or local_database_url("analytics_bench_stats")
    asyncio.run(setup(url))
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    columns = ", ".join(EVENT_COPY_COLUMNS)
    with psycopg.connect(plain, autocommit=True) as conn:
        license_ = conn.execute("SHOW timescaledb.license").fetchone()
        community = license_ is not None and license_[0] == "timescale"
        if not args.rollups_only:
            conn.execute("TRUNCATE event")
            started = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY event ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(list(EVENT_COPY_TYPES))
                for row in rows(args.events, args.days, seed=42):
                    copy.write_row(row)
            copied = time.perf_counter() - started
            print(f"copied {args.events:,} events in {copied:.0f} s ({args.events / copied:,.0f} events/s)")
        started = time.perf_counter()
        for rollup in CATALOGUE.rollups:
            name, dims = rollup.name, ", ".join(rollup.dimensions)
            kind = "continuous aggregate" if community else "rollup table"
            if community:
                conn.execute(f"CALL refresh_continuous_aggregate('{name}', NULL, NULL)")
            elif rollup.tier is None:
                conn.execute(f"TRUNCATE {name}")
                conn.execute(
                    f"INSERT INTO {name} (bucket, {dims}, events, duration_sum, duration_count)"
                    f" SELECT {rollup.bucket('time')} AS b, {dims}, count(*), sum(duration),"
                    f" count(duration) FROM event GROUP BY b, {dims}"
                )
            else:  # a tier: the rollup job fills it below
                conn.execute(f"TRUNCATE {name}")
                conn.execute("UPDATE rollup_watermark SET complete_until = NULL")
                continue
            conn.execute(f"ANALYZE {name}")
            count = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
            print(
                f"{name} built in {time.perf_counter() - started:.0f} s: {count[0] if count else 0:,} rows ({kind})"
            )
            started = time.perf_counter()
        if not community:
            marks = asyncio.run(fill_tiers(url))
            print(
                f"hourly and daily tiers filled by the rollup job in {time.perf_counter() - started:.0f} s: {marks}"
            )
            for name in (r.name for r in CATALOGUE.tier_rollups):
                conn.execute(f"ANALYZE {name}")
                count = conn.execute(f"SELECT count(*) FROM {name}").fetchone()
                print(f"{name}: {count[0] if count else 0:,} rows")
        started = time.perf_counter()
        for statement in (*REBUILD_SQL, *pages.REBUILD_SQL):
            conn.execute(str(statement))
        conn.execute("ANALYZE activity")
        conn.execute("ANALYZE activity_first")
        conn.execute("ANALYZE page_activity")
        conn.execute("ANALYZE page_day")
        print(f"activity built in {time.perf_counter() - started:.0f} s")
        conn.execute("ANALYZE event")


if __name__ == "__main__":
    main()
