"""p50/p95 latency of the stats API over the generated data set (benchmarks/generate.py):
30-day hourly timeseries by page x os, 30-day daily timeseries by page, 30-day summary, unique
visitors and sessions (the summary's total, and daily by page), in UTC
and Asia/Kathmandu, on the rollup path and forced onto raw events. Requests go through the
real ASGI app (httpx) so routing, planning, SQL and JSON are all inside the figure."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

import httpx

from benchmarks.server import local_database_url

FIVE_PAGES = ["/", "/pricing", "/blog/1", "/docs/2", "/help/3"]
QUERIES: dict[str, tuple[str, dict[str, str | list[str]]]] = {
    # The original GET /api/events/?duration=1 hour&pages=… question: a few pages by OS.
    "hourly page x os, 5 pages": (
        "/api/stats/timeseries",
        {"interval": "1 hour", "group_by": "page,os", "metrics": "events,avg_duration", "page": FIVE_PAGES},
    ),
    # The original API's own question: GET /api/events/?duration=1 hour&pages=/&pages=/pricing.
    "hourly page x os, 2 pages": (
        "/api/stats/timeseries",
        {
            "interval": "1 hour",
            "group_by": "page,os",
            "metrics": "events,avg_duration",
            "page": ["/", "/pricing"],
        },
    ),
    # Every page by OS by hour: about half a million rows whichever path serves it.
    "hourly page x os, all pages": (
        "/api/stats/timeseries",
        {"interval": "1 hour", "group_by": "page,os", "metrics": "events,avg_duration"},
    ),
    "daily by page": (
        "/api/stats/timeseries",
        {"interval": "1 day", "group_by": "page", "metrics": "events,pageviews,avg_duration"},
    ),
    "breakdown by page": ("/api/stats/breakdown", {"dimension": "page", "metrics": "events,pageviews"}),
    "summary (additive)": (
        "/api/stats/timeseries",
        {"interval": "1 month", "metrics": "events,pageviews,avg_duration"},
    ),
    "summary (all, incl. visitors)": ("/api/stats/summary", {}),
    "visitors + sessions": ("/api/stats/timeseries", {"interval": "1 month", "metrics": "visitors,sessions"}),
    "daily visitors + sessions": (
        "/api/stats/timeseries",
        {"interval": "1 day", "metrics": "visitors,sessions"},
    ),
    "daily visitors by page": (
        "/api/stats/timeseries",
        {"interval": "1 day", "group_by": "page", "metrics": "visitors"},
    ),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(runs: int, raw_runs: int, heavy_runs: int, only: str | None) -> None:
    from src.main import app

    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    window = {"site_id": "site-1", "from": (end - timedelta(days=30)).isoformat(), "to": end.isoformat()}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as client:
            print(f"{'query':32} {'tz':15} {'source':11} {'rows':>6} {'p50 ms':>8} {'p95 ms':>8} runs")
            for name, (path, params) in QUERIES.items():
                if only and only not in name:
                    continue
                for tz in ("UTC", "Asia/Kathmandu"):
                    for source in ("auto", "raw"):
                        n = runs if source == "auto" else raw_runs
                        if name.endswith("all pages"):
                            n = min(n, heavy_runs)
                        if n == 0:
                            continue
                        timings = []
                        body = {}
                        # One request first, not timed: the connections' first use of the
                        # relations (catalog caches) is no steady-state figure.
                        warm = await client.get(path, params={**window, **params, "tz": tz, "source": source})
                        warm.raise_for_status()
                        for _ in range(n):
                            started = time.perf_counter()
                            response = await client.get(
                                path, params={**window, **params, "tz": tz, "source": source}
                            )
                            timings.append((time.perf_counter() - started) * 1000)
                            response.raise_for_status()
                            body = response.json()
                        rows = len(body.get("rows", [body]))
                        print(
                            f"{name:32} {tz:15} {body['source']:11} {rows:6} {statistics.median(timings):8.1f}"
                            f" {percentile(timings, 0.95):8.1f} {n}"
                        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--raw-runs", type=int, default=10, help="runs of each raw-path query (slow)")
    parser.add_argument(
        "--heavy-runs", type=int, default=1, help="runs of the 500k-row hourly page x os query (0 skips it)"
    )
    parser.add_argument("--only", default=None, help="run only the questions whose name holds this text")
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = args.database_url or local_database_url("analytics_bench_stats")
    # Questions only: no background job competes with them (nor exports the data set). The
    # data set is complete: the rollup job and the fold would find nothing to do, but their
    # runs' reads (a rollup job run every minute) land inside the timings.
    for job in (
        "RETENTION_CHECK_INTERVAL",
        "EXPORT_INTERVAL",
        "SESSION_JOB_INTERVAL",
        "ROLLUP_JOB_INTERVAL",
        "ROLLUP_FOLD_INTERVAL",
    ):
        os.environ.setdefault(job, "0")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    asyncio.run(run(args.runs, args.raw_runs, args.heavy_runs, args.only))


if __name__ == "__main__":
    main()
