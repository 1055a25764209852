"""Start the service as a real server process for a benchmark, and measure its memory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from src.api.rollups.catalogue import CATALOGUE
from src.api.rollups.maintenance import FOLD_LOCK_KEY

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE = "analytics_bench"


def local_database_url(name: str = DEFAULT_DATABASE) -> str:
    subprocess.run(["bash", str(ROOT / "boot/local-db.sh"), name], check=True, capture_output=True)
    port = subprocess.run(
        ["bash", str(ROOT / "boot/local-db.sh"), "port"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(
    database_url: str, workers: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """uvicorn for one worker, gunicorn with uvicorn workers for more; yields (base URL, process)."""
    port = free_port()
    env = {
        # The optional pipelines stay off unless asked for: a figure of ingestion is not one
        # of exporting or sessionising the data set at the same time.
        "EXPORT_INTERVAL": "0",
        "SESSION_JOB_INTERVAL": "0",
        **os.environ,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        **(extra_env or {}),
    }
    bin_dir = Path(sys.executable).parent
    if workers == 1:
        command = [
            sys.executable,
            "-m",
            "src.server",
            "src.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    else:
        command = [
            str(bin_dir / "gunicorn"),
            "src.main:app",
            "--config",
            "python:src.server",
            "-k",
            "src.server.Worker",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        yield base, process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [pid, *(k for kid in kids for k in process_tree(kid))]


def peak_rss_mb(pid: int) -> dict[int, float]:
    """VmHWM (peak resident set) of the process and its children, in MB."""
    peaks = {}
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[p] = int(line.split()[1]) / 1024
        except FileNotFoundError:
            continue
    return peaks


def truncate(database_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as conn:
        # After any fold running now, and before the next: a fold locks the activity tables
        # first, TRUNCATE the rollups first, and the two would deadlock.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": FOLD_LOCK_KEY})
        conn.execute(text("TRUNCATE event"))
        # The activity tables too: each run starts as the first did (a run's keys are the last's).
        activity = (
            "activity",
            "activity_first",
            "activity_late",
            "page_activity",
            "page_day",
            "page_activity_late",
        )
        for name in (*CATALOGUE.names, CATALOGUE.late.name, *activity):
            if conn.execute(text("SELECT 1 FROM pg_tables WHERE tablename = :t"), {"t": name}).first():
                conn.execute(text(f"TRUNCATE {name}"))
    engine.dispose()


def late_changes(database_url: str) -> int:
    """Apache edition: late changes not folded into the rollups yet (0 on Community)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT to_regclass(:t) IS NOT NULL"), {"t": CATALOGUE.late.name}).scalar()
        n = (
            int(conn.execute(text(f"SELECT count(*) FROM {CATALOGUE.late.name}")).scalar_one())
            if exists
            else 0
        )
    engine.dispose()
    return n


def count_events(database_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        n = int(conn.execute(text("SELECT count(*) FROM event")).scalar_one())
    engine.dispose()
    return n
