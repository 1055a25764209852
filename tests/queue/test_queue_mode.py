"""Queue mode end to end, in both modes (nats, redis): real brokers, the API as a real server,
workers as processes. Each test uses a site of its own and leaves the queue drained."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from benchmarks.brokers import BrokerServer, WorkerProcess
from tests.queue.conftest import count_events, database_url, new_site, wait_until
from tests.queue.postgres import plain_url

StartWorker = Callable[..., WorkerProcess]


def status(http: httpx.Client) -> dict[str, object]:
    response = http.get("/queue/status")
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def depth(http: httpx.Client) -> int:
    value = status(http)["depth"]
    assert isinstance(value, int)
    return value


def post_batches(http: httpx.Client, site: str, batches: int, size: int, page: str = "/load") -> int:
    now = datetime.now(UTC)
    for b in range(batches):
        events = [
            {"page": page, "site_id": site, "time": (now - timedelta(seconds=b * size + i)).isoformat()}
            for i in range(size)
        ]
        response = http.post("/api/events/batch", json={"events": events})
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == size
    return batches * size


def summary_events(http: httpx.Client, site: str) -> int:
    now = datetime.now(UTC)
    params = {"site_id": site, "from": (now - timedelta(days=2)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    response = http.get("/api/stats/summary", params=params)
    assert response.status_code == 200, response.text
    return int(response.json()["events"])


def test_every_ingest_route_answers_after_the_broker_and_the_worker_stores(
    http: httpx.Client, start_worker: StartWorker, broker: BrokerServer
) -> None:
    site = new_site()
    at = datetime.now(UTC).replace(microsecond=0).isoformat()
    before = depth(http)

    one = http.post("/api/events/", json={"page": "/one", "site_id": site})
    assert one.status_code == 200, one.text
    assert one.json()["site_id"] == site and one.json()["page"] == "/one"

    keyed = {"page": "/b", "site_id": site, "event_id": f"{site}-b", "time": at}
    batch = http.post("/api/events/batch", json={"events": [keyed, keyed, {"site_id": site}]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["accepted"] == 1 and batch.json()["duplicates"] == 1
    assert [r["index"] for r in batch.json()["rejected"]] == [2]

    collect = http.post(
        "/collect",
        json={"eventType": "batch", "siteId": site, "path": "/c", "events": [{"eventType": "click"}]},
    )
    assert collect.status_code == 200, collect.text
    assert collect.json()["events_processed"] == 2

    queued = http.post("/event", json={"site_id": site, "event_type": "signup", "path": "/e", "user_id": "u1"})
    assert queued.status_code == 200, queued.text
    assert queued.json()["status"] == "accepted"

    interview = {
        "events": [
            {"event_id": f"{site}-i{i}", "occurred_at": at, "user_id": i, "event_type": "login", "site_id": site, "properties": {"country": "PL", "n": i}}
            for i in range(3)
        ]
    }
    events = http.post("/events", json=interview)
    assert events.status_code == 200, events.text
    assert events.json()["status"] == "accepted" and events.json()["events_count"] == 3

    # Accepted means in the broker, not yet in the database: no worker runs.
    assert count_events(site) == 0
    assert depth(http) == before + 8

    # Sent again: the broker (JetStream, by Nats-Msg-Id) reports duplicates; Redis cannot tell,
    # and the database stores them once either way.
    again = http.post("/api/events/batch", json={"events": [keyed]})
    assert again.status_code == 200
    if broker.kind == "nats":
        assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": []}
        assert depth(http) == before + 8
    assert http.post("/events", json=interview).status_code == 200

    worker = start_worker()
    wait_until(lambda: depth(http) == 0, what="the queue to drain")
    assert count_events(site) == 8
    assert worker.terminate() == 0
    with psycopg.connect(plain_url(database_url())) as conn:
        pages = dict(conn.execute("SELECT page, count(*) FROM event WHERE site_id = %s GROUP BY page", (site,)).fetchall())
    assert pages == {"/one": 1, "/b": 1, "/c": 2, "/e": 1, "": 3}
    with psycopg.connect(plain_url(database_url())) as conn:
        properties = conn.execute(
            "SELECT properties FROM event WHERE site_id = %s AND event_type = 'login' ORDER BY user_id", (site,)
        ).fetchall()
    assert [p for (p,) in properties] == [{"country": "PL", "n": i} for i in range(3)]


def test_invalid_input_is_answered_at_once_and_never_queued(http: httpx.Client) -> None:
    before = depth(http)
    bad_child = {"eventType": "batch", "siteId": "x", "path": "/c", "events": [{"eventType": "click", "duration": -1}]}
    response = http.post("/collect", json=bad_child)
    assert response.status_code == 422, response.text
    response = http.post("/events", json={"events": [{"event_id": "a", "event_type": "login"}]})
    assert response.status_code == 422 and "occurred_at" in response.text
    response = http.post("/event", json={"site_id": "x", "path": "/e", "timestamp": "yesterday"})
    assert response.status_code == 422
    response = http.post("/api/events/", json={"page": 5})
    assert response.status_code == 422
    response = http.post("/api/events/batch", json={"events": "nope"})
    assert response.status_code == 422
    assert depth(http) == before


def test_broker_down_is_503_and_a_restarted_broker_keeps_what_it_accepted(
    http: httpx.Client, start_worker: StartWorker, broker: BrokerServer
) -> None:
    site = new_site()
    accepted = post_batches(http, site, 3, 500)
    backlog = depth(http)
    broker.kill()  # a crash: SIGKILL, the data folder stays
    try:
        response = http.post("/api/events/batch", json={"events": [{"page": "/x", "site_id": site}]})
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) > 0
        assert "queue" in response.json()["error"]
        health = http.get("/health")
        assert health.status_code == 503 and health.json()["queue"]["connected"] is False
    finally:
        broker.start()

    def accepting() -> bool:
        response = http.post("/api/events/", json={"page": "/back", "site_id": site})
        return response.status_code == 200

    wait_until(accepting, timeout=30, what="the API to publish again")
    accepted += 1
    assert depth(http) == backlog + 1  # what it had accepted before the crash is still there
    assert http.get("/health").json()["queue"]["connected"] is True
    worker = start_worker()
    wait_until(lambda: count_events(site) == accepted, what="every accepted event to be stored")

    # The broker crashes again under a running worker: the worker waits and goes on.
    broker.kill()
    broker.start()
    wait_until(accepting, timeout=30, what="the API to publish again")
    accepted += 1 + post_batches(http, site, 2, 500)
    wait_until(lambda: count_events(site) == accepted, what="the worker to go on after the restart")
    wait_until(lambda: depth(http) == 0, what="the queue to drain")
    assert worker.terminate() == 0
    assert count_events(site) == accepted


def test_a_refused_event_is_dead_lettered_alone_and_replayed_after_the_fix(
    http: httpx.Client, start_worker: StartWorker
) -> None:
    site = new_site()
    # A row the database refuses though validation passed it (a constraint the service does
    # not know about): a trigger on the test database, removed below.
    with psycopg.connect(plain_url(database_url()), autocommit=True) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION queue_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.page = '/poison' THEN RAISE EXCEPTION 'refused for the test'"
            " USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$"
        )
        conn.execute("DROP TRIGGER IF EXISTS queue_test_refuse ON event")
        conn.execute(
            "CREATE TRIGGER queue_test_refuse BEFORE INSERT ON event FOR EACH ROW EXECUTE FUNCTION queue_test_refuse()"
        )
    try:
        events = [{"page": f"/ok{i}", "site_id": site} for i in range(20)]
        events.insert(7, {"page": "/poison", "site_id": site})
        response = http.post("/api/events/batch", json={"events": events})
        assert response.status_code == 200 and response.json()["accepted"] == 21
        dlq_before = int(status(http)["dlq_depth"])  # type: ignore[call-overload]
        worker = start_worker()
        wait_until(lambda: int(status(http)["dlq_depth"]) == dlq_before + 1, what="the dead letter")  # type: ignore[call-overload]
        assert count_events(site) == 20  # the rest of its batch is stored
        letters = http.get("/queue/dlq", params={"limit": 1000}).json()
        letter = next(d for d in letters["dead_letters"] if site in d["payload"])
        assert "/poison" in letter["payload"] and letter["event_id"]
        assert letter["attempts"] == 5  # QUEUE_MAX_DELIVER's default
        assert "refused by the database" in letter["reason"] and "23514" in letter["reason"]
        assert letter["subject"].endswith(".batch")
        assert letters["total"] == dlq_before + 1
    finally:
        with psycopg.connect(plain_url(database_url()), autocommit=True) as conn:
            conn.execute("DROP TRIGGER IF EXISTS queue_test_refuse ON event")
    replay = http.post("/queue/dlq/replay")
    assert replay.status_code == 200, replay.text
    assert replay.json()["replayed"] >= 1 and replay.json()["remaining"] == 0
    wait_until(lambda: count_events(site) == 21, what="the replayed event to be stored")
    wait_until(lambda: depth(http) == 0, what="the queue to drain")
    assert worker.terminate() == 0


def test_a_worker_killed_mid_drain_loses_nothing_and_counts_nothing_twice(
    http: httpx.Client, start_worker: StartWorker
) -> None:
    site = new_site()
    # Enough events that the kill, at the first worker's first commit, lands mid-drain even on
    # a quiet machine (6,000 were sometimes all stored before the kill).
    total = post_batches(http, site, 15, 1000)
    first = start_worker()
    wait_until(lambda: count_events(site) > 0, what="the first worker to store some")
    first.kill()  # SIGKILL: no chance to acknowledge what it fetched
    stored_at_kill = count_events(site)
    assert stored_at_kill < total, "the worker drained everything before it was killed"
    second = start_worker()
    wait_until(lambda: count_events(site) == total, timeout=90, what="every event to be stored")
    wait_until(lambda: depth(http) == 0, what="the queue to drain")
    assert second.terminate() == 0
    assert count_events(site) == total
    assert summary_events(http, site) == total  # the rollups counted each once


def test_two_workers_share_the_load(http: httpx.Client, start_worker: StartWorker) -> None:
    site = new_site()
    workers = [start_worker(), start_worker()]
    for worker in workers:
        wait_until(lambda w=worker: "worker joined" in w.log(), what="the workers to join")  # type: ignore[misc]
    total = post_batches(http, site, 6, 1000)
    wait_until(lambda: count_events(site) == total, timeout=90, what="every event to be stored")
    wait_until(lambda: depth(http) == 0, what="the queue to drain")
    assert [w.terminate() for w in workers] == [0, 0]  # SIGTERM: a clean stop
    shares = [w.committed() for w in workers]
    assert all(share > 0 for share in shares), shares
    assert sum(shares) >= total
    assert summary_events(http, site) == total


def test_status_reports_the_backlog(http: httpx.Client, start_worker: StartWorker, broker: BrokerServer) -> None:
    site = new_site()
    post_batches(http, site, 1, 100)
    body = status(http)
    assert body["mode"] == broker.kind and body["connected"] is True and body["durable"] is True
    assert int(body["depth"]) >= 100  # type: ignore[call-overload]
    assert isinstance(body["oldest_unprocessed_age_seconds"], float)
    worker = start_worker()
    wait_until(lambda: count_events(site) == 100, what="the events to be stored")
    wait_until(lambda: depth(http) == 0, what="the queue to drain")
    body = status(http)
    assert body["oldest_unprocessed_age_seconds"] is None and body["pending"] == 0
    health = http.get("/health")
    assert health.status_code == 200 and health.json()["queue"]["mode"] == broker.kind
    assert worker.terminate() == 0


@pytest.mark.parametrize("route", ["/queue/dlq", "/queue/status"])
def test_queue_routes_answer_json(http: httpx.Client, route: str) -> None:
    response = http.get(route)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
