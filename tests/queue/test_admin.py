"""The dead letters are events' data: once any key exists, listing and replaying them take an
admin key (issue 14's AdminDep); the status stays open like /health."""

from __future__ import annotations

from pathlib import Path

import httpx

from benchmarks.brokers import broker_server
from benchmarks.server import running_server
from tests.queue.conftest import QUEUE_TEST_ENV, database_url

ADMIN = "queue-test-admin-key-0123456789"


def test_dead_letters_need_an_admin_key_once_keys_exist(tmp_path: Path) -> None:
    with broker_server("nats", tmp_path) as nats:
        env = {**QUEUE_TEST_ENV, **nats.env, "ADMIN_API_KEY": ADMIN}
        with running_server(database_url(), extra_env=env) as (base, _), httpx.Client(base_url=base) as http:
            assert http.get("/queue/status").status_code == 200
            assert http.get("/queue/dlq").status_code == 401
            assert http.post("/queue/dlq/replay").status_code == 401
            admin = {"X-API-Key": ADMIN}
            listed = http.get("/queue/dlq", headers=admin)
            assert listed.status_code == 200 and listed.json() == {"dead_letters": [], "total": 0}
            replay = http.post("/queue/dlq/replay", headers=admin)
            assert replay.status_code == 200 and replay.json() == {"replayed": 0, "remaining": 0}
