"""Fixtures of the export tests: empty event and export tables, exporters writing to a fresh
folder, and a real S3-protocol server (moto's, standalone over HTTP) on a free port, started
by the tests as a process of its own so a test can stop it."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from src.api.config import ExportSettings, ExportTarget, get_settings
from src.api.exports.destinations import Destination, open_destination
from src.api.exports.formats import read_rows
from src.api.exports.service import Exporter

EXPORT_TABLES = ("processed_file", "export_file", "export_run", "export_watermark")


@pytest.fixture
async def export_clean(engine: AsyncEngine, clean: None) -> AsyncIterator[None]:
    """Empty export tables, before and after: runs recorded here name files in this test's
    folders, which no other test's exporter can read."""
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(EXPORT_TABLES)}"))
    yield
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(EXPORT_TABLES)}"))


def folder_settings(root: Path, **changes: Any) -> ExportSettings:
    base = get_settings().exports
    raw = ExportTarget((root / "raw-events").as_uri(), "file", "", str(root / "raw-events"))
    processed = ExportTarget((root / "processed-events").as_uri(), "file", "", str(root / "processed-events"))
    return dataclasses.replace(base, raw=raw, processed=processed, lag=0.0, interval=0.0, **changes)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "exports"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the S3 server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="test-access-key",
            aws_secret_access_key="test-secret-key-0123456789",
        )


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def s3_settings(server: S3Server, bucket: str, **changes: Any) -> ExportSettings:
    base = get_settings().exports
    keys = {"access_key": "test-access-key", "secret_key": "test-secret-key-0123456789"}
    raw = ExportTarget(f"s3://{bucket}/raw-events", "s3", bucket, "raw-events", **keys)
    processed = ExportTarget(
        f"s3://{bucket}-processed/processed-events", "s3", f"{bucket}-processed", "processed-events", **keys
    )
    return dataclasses.replace(
        base, raw=raw, processed=processed, s3_endpoint_url=server.url, lag=0.0, interval=0.0, **changes
    )


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    name = f"raw-{uuid.uuid4().hex[:12]}"
    client = s3_server.client()
    client.create_bucket(Bucket=name)
    client.create_bucket(Bucket=f"{name}-processed")
    return name


def exporter(engine: AsyncEngine, settings: ExportSettings, raw: Destination | None = None) -> Exporter:
    return Exporter(engine, settings, raw=raw)


# --- events and what the files hold ---------------------------------------------------------


def event_row(received_at: datetime, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "time": received_at,
        "site_id": "default",
        "page": "/",
        "received_at": received_at,
        "client_id": None,
        "properties": None,
    }
    row.update(fields)
    return row


INSERT = text(
    "INSERT INTO event (id, time, site_id, page, received_at, updated_at, client_id, properties)"
    " VALUES (:id, :time, :site_id, :page, :received_at, :received_at, :client_id, CAST(:properties AS jsonb))"
    " ON CONFLICT DO NOTHING"
)


async def insert(conn: AsyncConnection | AsyncEngine, rows: list[dict[str, Any]]) -> list[uuid.UUID]:
    if isinstance(conn, AsyncEngine):
        async with conn.begin() as connection:
            await connection.execute(INSERT, rows)
    else:
        await conn.execute(INSERT, rows)
    return [row["id"] for row in rows]


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


async def stored_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return {str(row[0]) for row in await conn.execute(text("SELECT id FROM event"))}


def exported(destination: Destination, under: str = "") -> tuple[Counter[str], list[str]]:
    """Every event id in the destination's data files (manifests aside), counted, and the keys."""
    counts: Counter[str] = Counter()
    keys = [key for key in destination.keys(under) if not key.endswith(".manifest.json")]
    for key in keys:
        local = Path(tempfile.gettempdir()) / f"export-test-{uuid.uuid4().hex}"
        try:
            destination.fetch(key, local)
            for batch in read_rows(local, key):
                counts.update(str(item["id"]) for item in batch)
        finally:
            local.unlink(missing_ok=True)
    return counts, keys


def destination_of(settings: ExportSettings, kind: str = "raw") -> Destination:
    return open_destination(settings.raw if kind == "raw" else settings.processed, settings)


async def next_second() -> None:
    """Runs are stamped to the second: the next one needs a new second."""
    await asyncio.sleep(1.05)
