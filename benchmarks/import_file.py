"""`python -m src.cli import FILE` on a file in the NATS-based system's CSV shape
(event_id,occurred_at,user_id,event_type,properties_json), run as a user runs it (a process of
its own, its startup included in the wall time), into a fresh benchmark database.

Three imports of the same number of events, each into an emptied database:
- history: times over the last DAYS days, the rollup tiers complete up to now (what a service
  that has run its rollup job has): every event is late, so the ingest statement appends its
  groups to rollup_late for the fold (docs/rollups.md#late-events-and-deletes-appended-then-folded);
- live: times in the last minute, above every tier's watermark (what current traffic costs);
- history again, into tiers not yet filled (a fresh database whose rollup job has not run yet:
  no event is late for an empty tier).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

from benchmarks.generate import setup
from benchmarks.server import ROOT, count_events, local_database_url, truncate
from src.api.rollups.job import advance_tiers

DATABASE = "analytics_bench_import"
TYPES = (
    ["app_open"] * 3
    + ["view_item"] * 3
    + ["message_sent"] * 2
    + ["add_to_cart", "login", "logout", "purchase"]
)
COUNTRIES = ["PL", "SE", "NL", "DE", "FR", "ES", "IT", "GB"]
ZONE = timezone(timedelta(hours=3))  # the sample's times are written at +03:00
_SUMMARY = re.compile(r"accepted (\d+), duplicates (\d+), rejected (\d+) \(([\d.]+) s")


def write_nats_csv(path: Path, events: int, seconds: float, seed: int) -> None:
    """`events` events like the NATS sample's, their times over the last `seconds` seconds."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["event_id", "occurred_at", "user_id", "event_type", "properties_json"])
        for _ in range(events):
            event_type = rng.choice(TYPES)
            properties: dict[str, object] = {
                "country": rng.choice(COUNTRIES),
                "session_id": f"{rng.getrandbits(32):08x}",
            }
            if event_type in ("view_item", "add_to_cart", "purchase"):
                properties |= {
                    "item_id": f"SKU{rng.randrange(10000)}",
                    "price": round(rng.uniform(1, 200), 2),
                }
            elif event_type == "message_sent":
                properties |= {"length": rng.randrange(1, 300), "channel": rng.choice(["private", "group"])}
            at = now - timedelta(seconds=rng.uniform(0, seconds))
            writer.writerow(
                [
                    str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    at.astimezone(ZONE).isoformat(timespec="seconds"),
                    rng.randrange(1, 2000),
                    event_type,
                    orjson.dumps(properties).decode(),
                ]
            )


def empty_tiers(database_url: str) -> None:
    """Every tier's watermark back to NULL: nothing complete, as before the job's first run."""
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE rollup_watermark SET complete_until = NULL"))
    engine.dispose()


async def complete_tiers(database_url: str) -> None:
    """The rollup job's run on the emptied database: every tier complete up to now."""
    engine = create_async_engine(database_url)
    try:
        await advance_tiers(engine)
    finally:
        await engine.dispose()


def edition(database_url: str) -> str:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        license_ = conn.execute(text("SHOW timescaledb.license")).scalar_one()
    engine.dispose()
    return "Community" if license_ == "timescale" else "Apache"


def run_import(database_url: str, path: Path, batch: int) -> tuple[float, float, str]:
    """(wall seconds, the command's own seconds, its summary line)."""
    env = {**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "src.cli", "import", str(path), "--batch", str(batch)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    summary = done.stdout.splitlines()[0]
    match = _SUMMARY.match(summary)
    if match is None:
        raise RuntimeError(f"unexpected output: {done.stdout!r} {done.stderr!r}")
    return wall, float(match.group(4)), summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=None, help=f"default: {DATABASE} on the local cluster")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=30.0, help="the history's time spread")
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args()
    url = args.database_url or local_database_url(DATABASE)
    with tempfile.TemporaryDirectory() as directory:
        history, live = Path(directory, "history.csv"), Path(directory, "live.csv")
        write_nats_csv(history, args.events, args.days * 86400, seed=7)
        write_nats_csv(live, args.events, 60, seed=8)
        asyncio.run(setup(url))  # the schema, outside the figures
        apache = edition(url) == "Apache"
        print(
            f"{args.events:,} events in the NATS CSV shape ({history.stat().st_size / 1e6:.1f} MB),"
            f" batches of {args.batch:,}, {edition(url)} edition, {datetime.now(UTC):%Y-%m-%d}"
        )
        figures: dict[str, float] = {}
        for name, path, tiers in (
            ("history", history, True),
            ("live", live, True),
            ("history, tiers not filled yet", history, False),
        ):
            if not apache and not tiers:
                continue  # Community has no tiers of its own (continuous aggregates instead)
            truncate(url)
            if apache:
                empty_tiers(url)
                if tiers:
                    asyncio.run(complete_tiers(url))
            wall, own, summary = run_import(url, path, args.batch)
            stored = count_events(url)
            figures[name] = own
            label = {
                "history": f"history ({args.days:g} days, tiers complete: every event late)",
                "live": "live (the last minute)",
                "history, tiers not filled yet": f"history ({args.days:g} days) into tiers not filled yet",
            }[name]
            print(
                f"{label:52} {own:6.2f} s ({args.events / own:8,.0f} events/s); wall {wall:.2f} s;"
                f" stored {stored:,}; {summary}"
            )
    print(f"history / live: {figures['history'] / figures['live']:.1f}x the time")


if __name__ == "__main__":
    main()
