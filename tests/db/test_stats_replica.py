"""STATS_DATABASE_URL: the stats routes read from a streaming read replica — a hot standby of
the test cluster started here (pg_basebackup, streaming replication, its own port) — while
writes and reads of single events stay on DATABASE_URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from benchmarks.server import running_server
from tests.queue.conftest import count_events, wait_until
from tests.queue.postgres import Cluster, plain_url, standby_of

PRIMARY = os.environ["DATABASE_URL"]
# A base backup copies the whole cluster: past this size it would take minutes (a developer's
# cluster with benchmark data; CI's fresh cluster is a few hundred MB at most).
MAX_CLUSTER_BYTES = 2 * 1024**3


@pytest.fixture(scope="module")
def standby() -> Iterator[Cluster]:
    if make_url(PRIMARY).host not in ("127.0.0.1", "localhost"):
        pytest.skip("the standby is made with pg_basebackup from a cluster on this machine")
    with psycopg.connect(plain_url(PRIMARY)) as conn:
        row = conn.execute("SELECT sum(pg_database_size(oid)) FROM pg_database").fetchone()
    size = int(row[0]) if row else 0
    if size > MAX_CLUSTER_BYTES:
        pytest.skip(f"the test cluster holds {size / 1024**3:.1f} GB: too much to base-backup in a test")
    standby = standby_of(PRIMARY)
    yield standby
    standby.remove()


def test_stats_routes_read_from_the_replica(standby: Cluster) -> None:
    database = make_url(PRIMARY).database or "postgres"
    replica = standby.url(database)
    site = f"replica-{uuid.uuid4().hex[:10]}"
    now = datetime.now(UTC)
    window = {
        "site_id": site,
        "from": (now - timedelta(days=1)).isoformat(),
        "to": (now + timedelta(hours=1)).isoformat(),
    }
    env = {"STATS_DATABASE_URL": replica, "ROLLUP_FOLD_INTERVAL": "0", "ROLLUP_JOB_INTERVAL": "0"}
    with running_server(PRIMARY, extra_env=env) as (base, _), httpx.Client(base_url=base, timeout=30) as http:

        def post(count: int) -> list[str]:
            events = [
                {"page": "/r", "site_id": site, "time": (now - timedelta(minutes=i)).isoformat()}
                for i in range(count)
            ]
            response = http.post("/api/events/batch", json={"events": events})
            assert response.status_code == 200 and response.json()["accepted"] == count
            return []

        def summary() -> int:
            response = http.get("/api/stats/summary", params=window)
            assert response.status_code == 200, response.text
            return int(response.json()["events"])

        post(10)
        wait_until(lambda: count_events(site, replica) == 10, what="the replica to replay the commit")
        assert summary() == 10

        standby.execute("postgres", "SELECT pg_wal_replay_pause()")
        try:
            post(5)
            assert count_events(site, PRIMARY) == 15
            # The primary has 15; the stats routes answer from the paused replica.
            assert summary() == 10
            buckets = http.get(
                "/api/events/",
                params={"duration": "1 day", "pages": "/r", **{k: window[k] for k in ("from", "to")}},
            )
            assert buckets.status_code == 200
            compat = http.get("/stats", params={"date": now.date().isoformat(), "site_id": site})
            assert compat.status_code == 200
            # A single event is read where it was written.
            one = http.post("/api/events/", json={"page": "/r1", "site_id": site}).json()
            assert http.get(f"/api/events/{one['id']}").status_code == 200
        finally:
            standby.execute("postgres", "SELECT pg_wal_replay_resume()")
        wait_until(lambda: summary() == 16, what="the replica to catch up")
