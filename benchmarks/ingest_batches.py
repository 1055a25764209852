"""100,000 events posted in batches by a few concurrent clients: seconds until all are committed
(every 200 means committed, so the clock stops at the last answer). Events of the last minute
and events spread over the last 30 days (a backfill, an import, offline clients: on Apache all
below the tiers' watermarks) are posted side by side in one run, alternating, and the ratio of
their throughputs printed. On Apache it also prints when the late changes were folded into the
rollups (work that happens after the answers, in the background)."""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson

from benchmarks.server import (
    count_events,
    late_changes,
    local_database_url,
    peak_rss_mb,
    running_server,
    truncate,
)

AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
]
PAGES = ["/", "/about", "/pricing", "/blog", "/contact", "/docs", "/login", "/signup"]


def make_batches(total: int, size: int, spread: int = 3600, route: str = "batch") -> list[bytes]:
    """Request bodies: the canonical shape for /api/events/batch, or the NATS-based system's
    for /events ({event_id, occurred_at, user_id, event_type, properties})."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    bodies = []
    for start in range(0, total, size):
        count = min(size, total - start)
        if route == "events":
            items: list[dict[str, object]] = [
                {
                    "event_id": str(uuid.uuid4()),
                    "occurred_at": (now - timedelta(seconds=rng.randrange(spread))).isoformat(),
                    "user_id": rng.randrange(1, 5000),
                    "event_type": rng.choice(["view_item", "add_to_cart", "login", "app_open", "purchase"]),
                    "properties": {
                        "country": rng.choice(["PL", "SE", "NL", "DE"]),
                        "session_id": f"s{rng.randrange(20000)}",
                    },
                }
                for _ in range(count)
            ]
        else:
            items = [
                {
                    "id": str(uuid.uuid4()),
                    "time": (now - timedelta(seconds=rng.randrange(spread))).isoformat(),
                    "page": rng.choice(PAGES),
                    "user_agent": rng.choice(AGENTS),
                    "referrer": rng.choice(["https://www.google.com/", "", "https://news.ycombinator.com/"]),
                    "session_id": f"s{rng.randrange(20000)}",
                    "visitor_id": f"v{rng.randrange(5000)}",
                    "duration": rng.randrange(300),
                }
                for _ in range(count)
            ]
        bodies.append(orjson.dumps({"events": items}))
    return bodies


ROUTES = {"batch": "/api/events/batch", "events": "/events"}


async def post_all(
    base: str, bodies: list[bytes], clients: int, path: str = "/api/events/batch"
) -> tuple[float, int]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            while not queue.empty():
                body = queue.get_nowait()
                response = await http.post(path, content=body, headers={"content-type": "application/json"})
                response.raise_for_status()
                answer = response.json()
                accepted += answer["accepted"] if "accepted" in answer else answer["events_count"]

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started, accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None, help="default: analytics_bench on the local cluster")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--route",
        choices=sorted(ROUTES),
        default="batch",
        help="batch: POST /api/events/batch; events: POST /events in the NATS-based system's shape",
    )
    parser.add_argument(
        "--spread",
        type=int,
        action="append",
        help="events' times lie in the last SPREAD seconds; repeatable (default: 60 and 2592000, a 30-day"
        " backfill, side by side)",
    )
    args = parser.parse_args()
    spreads = args.spread or [60, 30 * 86400]
    url = args.database_url or local_database_url()
    bodies = {spread: make_batches(args.events, args.batch, spread, args.route) for spread in spreads}
    rates: dict[int, list[float]] = {spread: [] for spread in spreads}
    with running_server(url, workers=args.workers) as (base, process):
        for run in range(1, args.runs + 1):
            for spread in spreads:
                truncate(url)
                seconds, accepted = asyncio.run(
                    post_all(base, bodies[spread], args.clients, ROUTES[args.route])
                )
                stored = count_events(url)
                folded = ""
                if late_changes(url):
                    started = time.perf_counter()
                    while late_changes(url):
                        time.sleep(0.05)
                    folded = f"; late changes folded {seconds + time.perf_counter() - started:.2f} s after the start"
                rates[spread].append(args.events / seconds)
                print(
                    f"run {run}: {args.events} events in {args.events // args.batch} POST {ROUTES[args.route]},"
                    f" {args.clients} clients,"
                    f" {args.workers} worker(s), times over {spread} s: {seconds:.2f} s until all committed"
                    f" ({args.events / seconds:,.0f} events/s); accepted={accepted} stored={stored}{folded}"
                )
        rss = peak_rss_mb(process.pid)
    medians = {spread: statistics.median(values) for spread, values in rates.items()}
    base_spread = spreads[0]
    for spread in spreads[1:]:
        print(
            f"median events/s: {medians[base_spread]:,.0f} (times over {base_spread} s) vs {medians[spread]:,.0f}"
            f" (over {spread} s): ratio {medians[spread] / medians[base_spread]:.0%}"
        )
    print("peak RSS per process (MB): " + ", ".join(f"{pid}: {mb:.0f}" for pid, mb in rss.items()))


if __name__ == "__main__":
    main()
