"""The database stopped and started for real mid-load (a private cluster of the test's own):
the API keeps answering 2xx in queue mode, the worker retries with backoff, and afterwards
every acknowledged event is stored exactly once."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from benchmarks.brokers import WorkerProcess, broker_server
from benchmarks.server import running_server
from tests.queue.conftest import QUEUE_TEST_ENV, count_events, new_site, wait_until
from tests.queue.postgres import Cluster, private_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = private_cluster()
    yield cluster
    cluster.remove()


class Loader(threading.Thread):
    """Posts batches until stopped; records every answer."""

    def __init__(self, base: str, site: str, size: int = 200) -> None:
        super().__init__(daemon=True)
        self.base, self.site, self.size = base, site, size
        self.statuses: list[int] = []
        self.accepted = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            sent = 0
            while not self.halt.is_set():
                now = datetime.now(UTC)
                events = [
                    {"page": "/outage", "site_id": self.site, "time": (now - timedelta(milliseconds=sent + i)).isoformat()}
                    for i in range(self.size)
                ]
                sent += self.size
                response = http.post("/api/events/batch", json={"events": events})
                self.statuses.append(response.status_code)
                if response.status_code == 200:
                    self.accepted += response.json()["accepted"]
                time.sleep(0.05)


@pytest.mark.parametrize("kind", ["nats", "redis"])
def test_database_stopped_and_started_mid_load(cluster: Cluster, kind: str, tmp_path: Path) -> None:
    database = cluster.url("analytics")
    with broker_server(kind, tmp_path / "broker") as broker:
        env = {**QUEUE_TEST_ENV, **broker.env}
        with running_server(database, extra_env=env) as (base, _):
            worker = WorkerProcess({**env, "DATABASE_URL": database}, tmp_path / "worker.log")
            site = new_site()
            loader = Loader(base, site)
            loader.start()
            try:
                wait_until(lambda: count_events(site, database) > 0, what="the first commits")
                cluster.stop()  # mid-load: requests keep coming
                down_from = len(loader.statuses)
                with httpx.Client(base_url=base) as http:
                    health = http.get("/health")
                    assert health.status_code == 503 and health.json()["database"] == "unavailable"
                    assert health.json()["queue"]["connected"] is True
                time.sleep(3)
                answered_while_down = len(loader.statuses) - down_from
                cluster.start()
                time.sleep(1)
            finally:
                loader.halt.set()
                loader.join(timeout=30)
            assert answered_while_down > 5
            assert set(loader.statuses) == {200}, "the API refused events while the database was down"
            wait_until(lambda: count_events(site, database) == loader.accepted, timeout=90, what="the backlog to drain")
            assert worker.terminate() == 0
            assert "retry" in worker.log().lower() or "unavailable" in worker.log().lower()
            time.sleep(0.5)
            assert count_events(site, database) == loader.accepted  # exactly once
