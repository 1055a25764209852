"""GET /metrics after a known load: HTTP requests by route, method and status, events accepted,
duplicates and rejected by route, flushes, pool and jobs — in process (counters compared before
and after) and under gunicorn with two workers (the multiprocess mode: any worker's scrape
counts every worker's requests). And the request log: one line per request, JSON with
LOG_FORMAT=json, never a key or an address."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.server import ROOT, running_server
from src.api.config import JsonLogFormatter, SettingsError, get_settings, load_settings
from src.api.errors import ServiceUnavailable
from src.api.metrics import instruments as metrics
from src.api.metrics.requests import route_of
from src.api.rollups.job import rollup_lag

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(exposition: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def known_load(site: str) -> list[tuple[str, dict[str, object]]]:
    """(route, body) pairs: 4 single events (one repeated), a batch of 5 new + 2 repeats + 2 invalid, one
    /collect of 2, one invalid single event, one all-or-nothing /collect with an invalid child."""
    stamp = "2026-11-20T10:00:00Z"
    first = {"id": f"{site}-a", "time": stamp, "site_id": site, "page": "/a"}
    return [
        ("/api/events", {"site_id": site, "page": "/one"}),
        ("/api/events", {"site_id": site, "page": "/two"}),
        ("/api/events", first),
        ("/api/events", first),  # stored before: a duplicate
        (
            "/api/events/batch",
            {
                "events": [
                    *({"site_id": site, "page": f"/b{n}"} for n in range(5)),
                    first,
                    first,
                    {"site_id": site},  # no page: invalid
                    {"site_id": site, "page": "/x", "duration": -1},  # invalid
                ]
            },
        ),
        (
            "/collect",
            {"eventType": "batch", "siteId": site, "path": "/c", "events": [{"eventType": "click"}]},
        ),
        ("/api/events", {"site_id": site}),  # 422: one rejected event
        ("/collect", {"eventType": "batch", "siteId": site, "path": "/c", "events": [{"duration": -5}]}),
    ]


EXPECTED = {
    "/api/events": {"accepted": 3, "duplicates": 1, "rejected": 1},
    "/api/events/batch": {"accepted": 5, "duplicates": 2, "rejected": 2},
    "/collect": {"accepted": 2, "duplicates": 0, "rejected": 2},
}
STATUSES = {
    ("/api/events", "200"): 4,
    ("/api/events", "422"): 1,
    ("/api/events/batch", "200"): 1,
    ("/collect", "200"): 1,
    ("/collect", "422"): 1,
}


def check_load(before: Samples, after: Samples) -> None:
    for route, counts in EXPECTED.items():
        for kind, count in counts.items():
            name = f"analytics_events_{kind}_total"
            assert value(after, name, route=route) - value(before, name, route=route) == count, (route, kind)
    for (route, status), count in STATUSES.items():
        labels = {"route": route, "method": "POST", "status": status}
        delta = value(after, "analytics_http_requests_total", **labels) - value(
            before, "analytics_http_requests_total", **labels
        )
        assert delta == count, (route, status)
    requests = sum(STATUSES.values())
    durations = sum(
        value(after, "analytics_http_request_duration_seconds_count", route=r, method="POST")
        - value(before, "analytics_http_request_duration_seconds_count", route=r, method="POST")
        for r in EXPECTED
    )
    assert durations == requests
    flushed = value(after, "analytics_ingest_flush_events_sum") - value(
        before, "analytics_ingest_flush_events_sum"
    )
    # Every valid event went through a group commit once, repeats included.
    assert flushed == sum(c["accepted"] + c["duplicates"] for c in EXPECTED.values())


@pytest.mark.anyio
async def test_metrics_in_process(client: httpx.AsyncClient) -> None:
    site = f"metrics-{uuid.uuid4().hex[:8]}"
    before = parse((await client.get("/metrics")).text)
    for route, body in known_load(site):
        await client.post(route, json=body)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = parse(response.text)
    check_load(before, after)
    assert value(after, "analytics_db_pool_connections_max") >= 1
    assert value(after, "analytics_ingest_queue_events") == 0
    assert (
        "analytics_http_requests_total",
        (("method", "GET"), ("route", "/metrics"), ("status", "200")),
    ) in after


@pytest.mark.anyio
async def test_unknown_paths_share_one_label(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await client.get(f"/no/such/path/{n}")
    samples = parse((await client.get("/metrics")).text)
    routes = {
        dict(labels).get("route") for name, labels in samples if name == "analytics_http_requests_total"
    }
    assert "unmatched" in routes
    assert not any(r and r.startswith("/no/") for r in routes)


def test_route_templates(app: object) -> None:
    assert route_of(app, "GET", f"/api/events/{uuid.uuid4()}") == "/api/events/{event_id}"  # type: ignore[arg-type]
    assert route_of(app, "DELETE", "/dashboard") == "/dashboard"  # type: ignore[arg-type]
    assert route_of(app, "GET", "/dashboard/example.com") == "/dashboard/{site_id}"  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_one_log_line_per_request_without_keys_or_addresses(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="src.api.access"):
        await client.post(
            "/api/events/batch?token=secret-query",
            json={"events": [{"page": "/log-a"}, {"page": "/log-b"}, {"nope": 1}]},
            headers={"X-API-Key": "secret-key-123", "X-Forwarded-For": "198.51.100.9"},
        )
    lines = [r for r in caplog.records if r.name == "src.api.access"]
    assert len(lines) == 1
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["method"] == "POST" and fields["route"] == "/api/events/batch"
    assert fields["status"] == 200 and fields["events"] == 3 and fields["duration_ms"] > 0
    line = JsonLogFormatter().format(lines[0])
    decoded = json.loads(line)
    assert {k: decoded[k] for k in ("method", "route", "status", "events")} == {
        "method": "POST",
        "route": "/api/events/batch",
        "status": 200,
        "events": 3,
    }
    for secret in ("secret-key-123", "secret-query", "198.51.100.9", "203.0.113.7"):
        assert secret not in line and secret not in lines[0].getMessage()


def test_settings_are_validated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOG_FORMAT", "yaml")
    with pytest.raises(SettingsError, match="LOG_FORMAT"):
        load_settings()
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="PROMETHEUS_MULTIPROC_DIR"):
        load_settings()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.log_format == "json" and settings.prometheus_multiproc_dir == str(tmp_path)


@pytest.fixture(scope="module")
def gunicorn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    directory = tmp_path_factory.mktemp("multiproc")
    (directory / "counter_1.db").write_bytes(b"a previous server's values")
    env = {"LOG_FORMAT": "json", "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with running_server(os.environ["DATABASE_URL"], workers=2, extra_env=env) as (base, _):
        yield base, directory


def requests_by_process(directory: Path) -> dict[str, float]:
    """Requests each worker counted, from its own file (counter_<pid>.db)."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        total = 0.0
        for key, count, *_ in MmapedDict.read_all_values_from_file(str(path)):
            if json.loads(key)[1] == "analytics_http_requests_total":
                total += count
        counts[path.stem] = total
    return counts


def test_metrics_under_gunicorn_count_every_worker(gunicorn_server: tuple[str, Path]) -> None:
    base, directory = gunicorn_server
    assert not (directory / "counter_1.db").exists()  # emptied when the server started
    site = f"metrics-g-{uuid.uuid4().hex[:8]}"
    before = parse(httpx.get(f"{base}/metrics").text)
    for route, body in known_load(site):
        # A new connection per request: gunicorn's workers share the socket and take turns.
        with httpx.Client(base_url=base) as http:
            http.post(route, json=body)
    # Until both workers have answered something (bounded): the scrapes below must add them up.
    for _ in range(200):
        if sum(1 for n in requests_by_process(directory).values() if n) >= 2:
            break
        with httpx.Client(base_url=base) as http:
            http.get("/healthz")
    assert sum(1 for n in requests_by_process(directory).values() if n) >= 2
    for _ in range(6):  # whichever worker answers, the whole server's counts
        with httpx.Client(base_url=base) as http:
            check_load(before, parse(http.get("/metrics").text))
    final = parse(httpx.get(f"{base}/metrics").text)
    settings = load_settings()
    # Live gauges are summed over the live workers: two pools.
    assert value(final, "analytics_db_pool_connections_max") == 2 * (
        settings.db_pool_size + settings.db_max_overflow
    )


@pytest.mark.anyio
async def test_ingest_503s_are_counted(
    client: httpx.AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full() -> None:
        raise ServiceUnavailable("ingest is at capacity; retry shortly", retry_after=1)

    before = parse((await client.get("/metrics")).text)
    monkeypatch.setattr(app.state.ingest, "check_open", full)
    response = await client.post("/collect", json={"eventType": "pageview", "path": "/full"})
    assert response.status_code == 503
    after = parse((await client.get("/metrics")).text)
    name = "analytics_ingest_unavailable_total"
    assert value(after, name, route="/collect") - value(before, name, route="/collect") == 1


@pytest.mark.anyio
async def test_job_runs_failures_and_lag() -> None:
    def count(name: str, job: str) -> float:
        return value(parse(generate_latest(REGISTRY).decode()), name, job=job)

    runs, failures = (
        count("analytics_job_runs_total", "test-job"),
        count("analytics_job_failures_total", "test-job"),
    )
    with metrics.job_run("test-job"):
        pass
    with pytest.raises(RuntimeError), metrics.job_run("test-job"):
        raise RuntimeError("the database went away")
    assert count("analytics_job_runs_total", "test-job") - runs == 2
    assert count("analytics_job_failures_total", "test-job") - failures == 1
    assert count("analytics_job_last_success_timestamp_seconds", "test-job") > 0
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    marks = {"hour": now - timedelta(hours=2), "day": now - timedelta(days=1, hours=12), "none": None}
    assert rollup_lag(marks, now) == 36 * 3600
    assert rollup_lag({"hour": None}, now) == 0
    metrics.set_job_lag("test-job", 12.5)
    assert count("analytics_job_lag_seconds", "test-job") == 12.5


@pytest.mark.anyio
async def test_key_refusals_are_counted(client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    keyed = dataclasses.replace(get_settings(), api_keys=("metrics-key",))
    monkeypatch.setattr("src.api.auth.dependencies.get_settings", lambda: keyed)
    before = parse((await client.get("/metrics")).text)
    await client.get("/api/stats/summary")
    await client.get("/api/stats/summary", headers={"X-API-Key": "nope"})
    await client.get("/api/stats/summary", headers={"X-API-Key": "metrics-key"})
    after = parse((await client.get("/metrics")).text)
    name = "analytics_authorization_refusals_total"
    for reason in ("missing_key", "invalid_key"):
        assert value(after, name, reason=reason) - value(before, name, reason=reason) == 1


def test_gunicorn_stops_on_a_bad_metrics_directory(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")}
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    command = [
        gunicorn,
        "src.main:app",
        "-k",
        "src.server.Worker",
        "--config",
        "python:src.server",
        "-b",
        "127.0.0.1:0",
    ]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "invalid setting PROMETHEUS_MULTIPROC_DIR: must be an existing directory" in done.stderr
