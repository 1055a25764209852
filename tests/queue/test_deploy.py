"""Queue mode as deployed: the compose profile, and boot/worker.sh running several workers and
stopping them cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.brokers import broker_server
from tests.queue.conftest import QUEUE_TEST_ENV

ROOT = Path(__file__).resolve().parents[2]


def test_the_queue_profile() -> None:
    stack: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = stack["services"]
    for name in ("nats", "redis", "worker"):
        assert services[name]["profiles"] == ["queue"], name
    for name in ("db", "app"):
        assert "profiles" not in services[name], "the default stack runs without a broker"
    nats, redis, worker = services["nats"], services["redis"], services["worker"]
    assert "-js" in nats["command"] and nats["volumes"][0].split(":")[0] in stack["volumes"]
    assert nats["command"][nats["command"].index("-sd") + 1] == nats["volumes"][0].split(":")[1]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert redis["volumes"][0].split(":")[0] in stack["volumes"]
    assert worker["command"] == ["./boot/worker.sh"] and worker["env_file"] == ".env.compose"
    assert "environment" not in worker, "settings live in .env.compose only"
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.compose").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["INGEST_QUEUE"] == "none", "Railway and a plain `docker compose up` keep the default mode"
    assert env["NATS_URL"] == "nats://nats:4222"
    assert env["REDIS_URL"] == "", "the default stack keeps rate limits in the database; no Redis runs"


def test_worker_script_runs_several_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    with broker_server("nats", tmp_path) as nats:
        log = open(tmp_path / "workers.log", "wb")  # noqa: SIM115
        script = subprocess.Popen(
            ["sh", str(ROOT / "boot/worker.sh")],
            env={**os.environ, **QUEUE_TEST_ENV, **nats.env, "QUEUE_WORKERS": "2", "LOG_LEVEL": "INFO"},
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while (tmp_path / "workers.log").read_text().count("worker joined") < 2:
            assert script.poll() is None and time.monotonic() < deadline, (tmp_path / "workers.log").read_text()
            time.sleep(0.1)
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=60) == 0
        log.close()
        assert (tmp_path / "workers.log").read_text().count("worker stopped") == 2
    bad = subprocess.run(
        ["sh", str(ROOT / "boot/worker.sh")], env={**os.environ, "QUEUE_WORKERS": "many"}, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("invalid setting QUEUE_WORKERS")
