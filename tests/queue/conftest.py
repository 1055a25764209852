"""Queue-mode fixtures: real brokers on free ports with their own data folders, the API as a
real server process in queue mode, workers as `python -m src.worker` processes."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from benchmarks.brokers import BrokerServer, WorkerProcess
from benchmarks.server import running_server
from tests.queue.postgres import plain_url

# Fast retries and redelivery for tests; the defaults are in src/api/config.py.
QUEUE_TEST_ENV = {
    "QUEUE_RETRY_BASE": "0.05",
    "QUEUE_RETRY_MAX": "1",
    "QUEUE_ACK_WAIT": "3",
    "QUEUE_FETCH_BATCH": "2000",
    "ROLLUP_FOLD_INTERVAL": "0",
    "ROLLUP_JOB_INTERVAL": "0",
    "RETENTION_CHECK_INTERVAL": "0",
    "EVENTS_RETENTION": "5 years",
}


def database_url() -> str:
    return os.environ["DATABASE_URL"]


def count_events(site: str, url: str | None = None) -> int:
    with psycopg.connect(plain_url(url or database_url())) as conn:
        row = conn.execute("SELECT count(*) FROM event WHERE site_id = %s", (site,)).fetchone()
    return int(row[0]) if row else 0


def wait_until(check: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def new_site() -> str:
    return f"queue-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module", params=["nats", "redis"])
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerServer]:
    server = BrokerServer(request.param, tmp_path_factory.mktemp(f"broker-{request.param}"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def queue_env(broker: BrokerServer) -> dict[str, str]:
    return {**QUEUE_TEST_ENV, **broker.env}


@pytest.fixture(scope="module")
def api(queue_env: dict[str, str]) -> Iterator[str]:
    """The API in queue mode (no worker: tests start their own)."""
    with running_server(database_url(), extra_env=queue_env) as (base, _):
        yield base


@pytest.fixture
def http(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, timeout=30) as client:
        yield client


@pytest.fixture
def start_worker(queue_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess({"DATABASE_URL": database_url(), **queue_env, **env}, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.process.poll() is None:
            worker.terminate()
