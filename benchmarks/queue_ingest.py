"""Queue mode against direct commits: 100,000 events as 20 `POST /events` requests of 5,000
(the NATS-based system's shape, times spread over the last 30 days as its generator makes
them), 4 clients. Per mode (none, nats, redis): seconds until every request is answered, and
until every event is in the table (a queue mode answers before the commit; its worker runs
from the start). Then worker throughput: the API fills the broker with no worker running, then
1 (and 2) workers drain it; the figure is events per second from the first commit to the last.

Each mode gets its own broker (nats-server -js / redis-server --appendonly yes on a free port,
benchmarks/brokers.py), the API as a real server, and workers as `python -m src.worker`."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from sqlalchemy.exc import OperationalError

from benchmarks.brokers import BrokerServer, WorkerProcess
from benchmarks.ingest_batches import make_batches, post_all
from benchmarks.server import count_events, local_database_url, running_server, truncate


def empty(url: str) -> None:
    """TRUNCATE, retried when it deadlocks with the API's fold loop."""
    for attempt in range(20):
        try:
            truncate(url)
            return
        except OperationalError:
            time.sleep(0.2 * (attempt + 1))
    truncate(url)


def wait_stored(url: str, total: int, timeout: float = 600) -> tuple[float, float]:
    """(when the first event was seen, when all were), by perf_counter."""
    first = None
    deadline = time.perf_counter() + timeout
    while True:
        stored = count_events(url)
        now = time.perf_counter()
        if stored and first is None:
            first = now
        if stored >= total:
            return first or now, now
        if now > deadline:
            raise RuntimeError(f"only {stored} of {total} events stored")
        time.sleep(0.05)


def wait_joined(workers: list[WorkerProcess]) -> None:
    deadline = time.monotonic() + 60
    while not all("worker joined" in w.log() for w in workers):
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not join")
        time.sleep(0.05)


def run_mode(mode: str, url: str, size: int, clients: int, total: int, folder: Path) -> None:
    def bodies() -> list[bytes]:
        # New event ids for every load: JetStream would take a repeated load for duplicates.
        return make_batches(total, size, 30 * 86400, "events")

    if mode == "none":
        with running_server(url) as (base, _):
            empty(url)  # after the server's startup made the schema
            started = time.perf_counter()
            answered, accepted = asyncio.run(post_all(base, bodies(), clients, "/events"))
            _, done = wait_stored(url, total)
        print(f"none : answered {answered:.2f} s, stored {done - started:.2f} s (accepted={accepted})")
        return
    broker = BrokerServer(mode, folder / mode)
    broker.start()
    try:
        env = {**broker.env, "QUEUE_FETCH_BATCH": "5000"}
        with running_server(url, extra_env=env) as (base, _):
            empty(url)
            worker = WorkerProcess({**env, "DATABASE_URL": url}, folder / f"{mode}-worker.log")
            wait_joined([worker])
            started = time.perf_counter()
            answered, accepted = asyncio.run(post_all(base, bodies(), clients, "/events"))
            _, done = wait_stored(url, total)
            worker.terminate()
            print(
                f"{mode:5}: answered {answered:.2f} s, stored {done - started:.2f} s with 1 worker"
                f" (accepted={accepted}, stored={count_events(url)})"
            )
            for count in (1, 2):
                empty(url)
                asyncio.run(post_all(base, bodies(), clients, "/events"))  # a backlog, no worker yet
                workers = [
                    WorkerProcess({**env, "DATABASE_URL": url}, folder / f"{mode}-drain{count}-{i}.log")
                    for i in range(count)
                ]
                first, last = wait_stored(url, total)
                for w in workers:
                    w.terminate()
                shares = [w.committed() for w in workers]
                print(
                    f"{mode:5}: {count} worker(s) drained {total} events at {total / (last - first):,.0f} events/s"
                    f" ({last - first:.2f} s from the first commit to the last; per worker {shares})"
                )
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--database-url", default=None, help="default: analytics_bench_queue on the local cluster"
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--mode", action="append", choices=["none", "nats", "redis"], help="default: all three"
    )
    args = parser.parse_args()
    url = args.database_url or local_database_url("analytics_bench_queue")
    requests = -(-args.events // args.batch)
    print(
        f"{args.events} events as {requests} POST /events of {args.batch}, {args.clients} clients, times over 30 days"
    )
    with tempfile.TemporaryDirectory(prefix="queue-bench-") as folder:
        for mode in args.mode or ["none", "nats", "redis"]:
            run_mode(mode, url, args.batch, args.clients, args.events, Path(folder))


if __name__ == "__main__":
    main()
