"""boot/docker-run.sh for real: gunicorn with uvicorn workers against the test database. It
serves, answers the Dockerfile's HEALTHCHECK, leaves client addresses to TRUSTED_PROXIES, and
on SIGTERM with requests in flight exits 0 within the graceful timeout, every acknowledged
event stored."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from benchmarks.server import free_port
from tests.deploy.test_files import healthcheck_command

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "boot/docker-run.sh"
GRACEFUL_TIMEOUT = 20
pytestmark = pytest.mark.anyio


def script_env(**overrides: str) -> dict[str, str]:
    """The environment with the venv first on PATH, as `python` and `gunicorn` are in the image."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **overrides}


def command_line(**overrides: str) -> list[str]:
    """The gunicorn command line the script would run (GUNICORN=echo prints it)."""
    env = script_env(GUNICORN="echo", **overrides)
    for name in ("WEB_CONCURRENCY", "HOST", "PORT", "GRACEFUL_TIMEOUT"):
        if name not in overrides:
            env.pop(name, None)
    out = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1] if args.index(name) + 1 < len(args) else ""


def test_defaults_and_overrides() -> None:
    args = command_line()
    assert args[:3] == ["src.main:app", "--worker-class", "src.server.Worker"]
    assert option(args, "--bind") == "0.0.0.0:8000"
    assert option(args, "--graceful-timeout") == "30"
    assert option(args, "--config") == "python:src.server"  # the metrics' multiprocess hooks
    cpus = len(os.sched_getaffinity(0))
    assert int(option(args, "--workers")) == min(max(cpus, 2), 4)
    assert args[-1] == "--forwarded-allow-ips"  # followed by '': uvicorn trusts no proxy itself

    args = command_line(WEB_CONCURRENCY="3", HOST="127.0.0.1", PORT="8123", GRACEFUL_TIMEOUT="12")
    assert option(args, "--workers") == "3"
    assert option(args, "--bind") == "127.0.0.1:8123"
    assert option(args, "--graceful-timeout") == "12"


async def wait_healthy(http: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "exited")
        assert time.monotonic() < deadline, "gunicorn did not start"
        await asyncio.sleep(0.2)


async def test_gunicorn_serves_and_stops_cleanly_without_losing_events(engine: AsyncEngine) -> None:
    port = free_port()
    env = script_env(
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="2",
        GRACEFUL_TIMEOUT=str(GRACEFUL_TIMEOUT),
        LOG_LEVEL="WARNING",
        TRUSTED_PROXIES="10.0.0.0/8",
    )
    process = subprocess.Popen(
        ["sh", str(SCRIPT)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    site = f"gunicorn-{uuid.uuid4().hex[:8]}"
    acknowledged: set[str] = set()
    sent: set[str] = set()
    after_sigterm = refused = 0
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            await wait_healthy(http, process)

            # The image's own HEALTHCHECK command, run as Docker would.
            check = await asyncio.to_thread(
                subprocess.run,
                ["sh", "-c", healthcheck_command()],
                env=script_env(PORT=str(port)),
                capture_output=True,
                timeout=10,
            )
            assert check.returncode == 0, check.stderr

            # A forged X-Forwarded-For from an untrusted peer is ignored: uvicorn must not
            # have rewritten the peer before the service's own TRUSTED_PROXIES check.
            first_id = str(uuid.uuid4())
            first = await http.post(
                "/api/events/",
                json={"id": first_id, "site_id": site, "page": "/"},
                headers={"X-Forwarded-For": "198.51.100.23"},
            )
            assert first.status_code == 200, first.text
            assert first.json()["ip_address"] == "127.0.0.1"
            acknowledged.add(first_id)
            listed = await http.get("/api/events/", params={"pages": "/", "duration": "1 hour"})
            assert listed.status_code == 200 and listed.json()

            started = asyncio.Event()
            done = 0
            sigterm_at = float("inf")

            async def post(i: int) -> None:
                nonlocal done, after_sigterm, refused
                events = [{"id": str(uuid.uuid4()), "site_id": site, "page": f"/{i}/{j}"} for j in range(20)]
                sent.update(e["id"] for e in events)
                try:
                    response = await http.post("/api/events/batch", json={"events": events})
                except httpx.TransportError:
                    refused += 1  # refused during shutdown: never acknowledged, nothing promised
                    return
                finally:
                    done += 1
                    if done >= 10:
                        started.set()
                if response.status_code == 200:
                    assert response.json()["accepted"] == len(events)
                    acknowledged.update(e["id"] for e in events)
                    if time.monotonic() > sigterm_at:
                        after_sigterm += 1

            tasks = [asyncio.create_task(post(i)) for i in range(200)]
            await asyncio.wait_for(started.wait(), 30)  # the burst is being served
            sigterm_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            await asyncio.gather(*tasks)
        code = await asyncio.to_thread(process.wait, GRACEFUL_TIMEOUT + 10)
        stopped_in = time.monotonic() - sigterm_at
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # gunicorn's own log says why it did not exit cleanly (seen once, under a full suite).
    assert code == 0, process.stderr.read().decode(errors="replace")[-4000:] if process.stderr else code
    assert stopped_in < GRACEFUL_TIMEOUT
    # Requests in flight at SIGTERM were finished, not dropped.
    assert after_sigterm > 0, (after_sigterm, refused)
    async with engine.connect() as conn:
        stored = set(
            (
                await conn.execute(
                    text("SELECT id::text FROM event WHERE site_id = :s AND time > now() - interval '1 day'"),
                    {"s": site},
                )
            ).scalars()
        )
    assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged events lost"
    assert stored <= sent | {first_id}


def test_gunicorns_master_loads_the_metrics_client_before_any_worker_exits(tmp_path: Path) -> None:
    """child_exit runs in gunicorn's SIGCHLD handler: its import must already be done, or a
    second worker's exit arriving mid-import finds the module half made and gunicorn exits 1
    (seen at a SIGTERM with two workers). The master loads it in on_starting, with the metrics
    directory set, and no earlier."""
    program = (
        "import sys\n"
        "import src.server as server\n"
        "assert 'prometheus_client' not in sys.modules\n"
        "server.on_starting(None)\n"
        "assert 'prometheus_client.multiprocess' in sys.modules\n"
        "import prometheus_client.values as values\n"
        "assert 'Mmaped' in values.ValueClass.__name__, values.ValueClass  # multiprocess mode\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
