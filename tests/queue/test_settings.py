"""Queue-mode settings are parsed once; a bad value names its variable (and never echoes a URL,
which may carry a password); a Redis that keeps nothing on disk is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.brokers import broker_server
from src.api.config import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("INGEST_QUEUE", "kafka"),
        ("NATS_URL", "http://user:secret@broker:4222"),
        ("NATS_URL", " , "),
        ("REDIS_URL", "postgres://user:secret@redis"),
        ("REDIS_ALLOW_VOLATILE", "perhaps"),
        ("QUEUE_STREAM", "events.in"),
        ("QUEUE_MAX_DELIVER", "0"),
        ("QUEUE_RETRY_BASE", "0"),
        ("QUEUE_RETRY_MAX", "0.5"),  # below QUEUE_RETRY_BASE's default of 1
        ("QUEUE_ACK_WAIT", "0.5"),
        ("QUEUE_PUBLISH_TIMEOUT", "soon"),
        ("QUEUE_FETCH_BATCH", "0"),
        ("QUEUE_DUPLICATE_WINDOW", "0"),
        ("QUEUE_REPLICAS", "7"),
        ("STATS_DATABASE_URL", "mysql://user:secret@replica/db"),
    ],
)
def test_a_bad_queue_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert caught.value.variable == variable
    assert "secret" not in str(caught.value)


def test_queue_settings_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_QUEUE", "NATS")
    monkeypatch.setenv("NATS_URL", "nats://a:4222, nats://b:4222")
    monkeypatch.setenv("QUEUE_RETRY_BASE", "0.5")
    monkeypatch.setenv("QUEUE_RETRY_MAX", "3")
    monkeypatch.setenv("STATS_DATABASE_URL", "postgres://reader@replica:5432/analytics")
    settings = load_settings()
    assert settings.queue.mode == "nats" and settings.queue.enabled
    assert settings.queue.nats_servers == ("nats://a:4222", "nats://b:4222")
    assert [settings.queue.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert settings.stats_database_url == "postgresql+psycopg://reader@replica:5432/analytics"
    monkeypatch.delenv("INGEST_QUEUE")
    monkeypatch.delenv("STATS_DATABASE_URL")
    default = load_settings()
    assert default.queue.mode == "none" and not default.queue.enabled
    assert default.stats_database_url is None


def _worker(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "src.worker"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_without_a_queue_mode_stops_naming_the_setting() -> None:
    done = _worker({"INGEST_QUEUE": "none"})
    assert done.returncode == 2
    assert done.stderr.strip().startswith("invalid setting INGEST_QUEUE:")


def test_redis_mode_refuses_a_server_that_keeps_nothing_on_disk(tmp_path: Path) -> None:
    with broker_server("redis", tmp_path, appendonly=False) as redis:
        done = _worker({**redis.env, "DB_STARTUP_TIMEOUT": "10"})
        assert done.returncode == 2, done.stderr
        assert "appendonly" in done.stderr.splitlines()[-1]
        # The API refuses too: its startup fails before it serves.
        api = subprocess.run(
            [sys.executable, "-c", "import asyncio\nfrom src.main import app, lifespan\n"
             "async def main():\n    async with lifespan(app):\n        pass\nasyncio.run(main())"],
            cwd=ROOT,
            env={**os.environ, **redis.env},
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert api.returncode != 0 and "VolatileRedis" in api.stderr
        allowed = subprocess.Popen(
            [sys.executable, "-m", "src.worker"],
            cwd=ROOT,
            env={**os.environ, **redis.env, "REDIS_ALLOW_VOLATILE": "true", "LOG_LEVEL": "INFO"},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert allowed.stderr is not None
            for line in allowed.stderr:
                if "worker joined" in line:
                    break
            else:
                raise AssertionError("the worker did not start with REDIS_ALLOW_VOLATILE=true")
        finally:
            allowed.terminate()
            assert allowed.wait(timeout=60) == 0
