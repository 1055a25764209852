"""The import holds a few batches, never the file: its peak memory for 200,000 lines is that for
50,000 (both past the pipeline's steady state), on a database of its own (made beside the test
database, dropped afterwards), so that nothing else's rows or watermarks weigh on it."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from src.api.config import get_settings

ROOT = Path(__file__).resolve().parents[2]
# Runs the command and reports its exit status, its summary and its peak resident set.
MEASURE = (
    "import json, resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "print(json.dumps({'code': done.returncode, 'out': done.stdout, 'err': done.stderr, 'peak_kb': peak}))\n"
)


@pytest.fixture
def scratch_url() -> Iterator[str]:
    base = make_url(get_settings().database_url)
    name = f"{base.database}_imp_{secrets.token_hex(4)}"
    admin = create_engine(base.set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    # `name` is made here from the configured name and hex digits, never input.
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def write_events(path: Path, count: int) -> None:
    """NATS-shaped lines of ~400 bytes: 200,000 of them are 80 MB, which held whole (even as
    bytes, before parsing) would show far above the bound below."""
    now = datetime.now(UTC)
    note = "x" * 300
    with path.open("w") as out:
        out.write("event_id,occurred_at,user_id,event_type,properties_json\n")
        for n in range(count):
            at = (now - timedelta(seconds=n % 3600)).isoformat()
            out.write(f'{uuid.uuid4()},{at},{n % 1000},view_item,"{{""n"": {n}, ""note"": ""{note}""}}"\n')


def peak_of_import(url: str, path: Path) -> tuple[int, str]:
    env = {**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-c", MEASURE, sys.executable, "-m", "src.cli", "import", str(path)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(done.stdout)
    assert result["code"] == 0, result["err"]
    return int(result["peak_kb"]) // 1024, result["out"].splitlines()[0]


def test_peak_memory_does_not_grow_with_the_file(scratch_url: str, tmp_path: Path) -> None:
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    write_events(small, 50_000)
    write_events(large, 200_000)
    assert large.stat().st_size > 75_000_000

    small_mb, small_summary = peak_of_import(scratch_url, small)
    large_mb, large_summary = peak_of_import(scratch_url, large)

    assert small_summary.startswith("accepted 50000, duplicates 0, rejected 0 ("), small_summary
    assert large_summary.startswith("accepted 200000, duplicates 0, rejected 0 ("), large_summary
    # Measured: 134 and 135 MB (five batches of 5,000 held at most, ~40 MB over the ~95 MB of a
    # started process). 150,000 more lines held whole would add 60 MB as bytes alone.
    assert large_mb - small_mb < 20, (small_mb, large_mb)
