"""The exporter against a real S3-protocol server (moto's standalone server, over HTTP, started
by the tests): layout in the bucket, gzip, Parquet's schema, a run that fails mid-upload (the
server stopped; a destination that breaks after some files) and its retry with the same file
names, leaving every event in exactly one file."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.exports.destinations import Destination
from src.api.exports.service import ExportFailed
from src.api.exports.status import export_status
from tests.exports.conftest import (
    S3Server,
    ago,
    destination_of,
    event_row,
    exported,
    exporter,
    free_port,
    insert,
    next_second,
    s3_settings,
    stored_ids,
)

pytestmark = pytest.mark.anyio


async def test_gzipped_json_lines_in_a_bucket(
    engine: AsyncEngine, export_clean: None, s3_server: S3Server, bucket: str
) -> None:
    settings = s3_settings(s3_server, bucket, gzip=True, batch_size=4)
    ids = await insert(engine, [event_row(ago(10), properties='{"plan": "pro", "n": 3}') for _ in range(6)])
    [run] = await exporter(engine, settings).run()
    stamp = run.range_end.strftime("%Y%m%d_%H%M%S")
    day = run.range_end.strftime("%Y/%m/%d")
    listed = sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == [
        f"raw-events/{day}/raw_export_{stamp}.json.gz",
        f"raw-events/{day}/raw_export_{stamp}.manifest.json",
        f"raw-events/{day}/raw_export_{stamp}_0002.json.gz",
    ]
    body = s3_server.client().get_object(Bucket=bucket, Key=listed[0])["Body"].read()
    lines = gzip.decompress(body).splitlines()
    assert len(lines) == 4
    assert orjson.loads(lines[0])["properties"] == {"plan": "pro", "n": 3}
    counts, _ = exported(destination_of(settings))
    assert counts == {str(i): 1 for i in ids}


async def test_parquet_schema(
    engine: AsyncEngine, export_clean: None, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    settings = s3_settings(s3_server, bucket, format="parquet")
    await insert(engine, [event_row(ago(10), properties='{"a": 1}', client_id="acme") for _ in range(3)])
    [run] = await exporter(engine, settings).run()
    assert run.files[0].endswith(".parquet")
    local = tmp_path / "file.parquet"
    destination_of(settings).fetch(run.files[0], local)
    parquet = pq.ParquetFile(str(local))
    schema = parquet.schema_arrow
    assert schema.field("time").type == pa.timestamp("us", tz="UTC")
    assert schema.field("received_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("is_bot").type == pa.bool_()
    assert schema.field("duration").type == pa.int32()
    assert schema.field("properties").type == pa.string()
    assert not schema.field("id").nullable and schema.field("client_id").nullable
    assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    rows = parquet.read().to_pylist()
    assert [r["client_id"] for r in rows] == ["acme"] * 3
    assert orjson.loads(rows[0]["properties"]) == {"a": 1}


async def test_a_run_whose_destination_is_down_fails_and_its_retry_exports_once(
    engine: AsyncEngine, export_clean: None, bucket: str
) -> None:
    """A server of its own, stopped before the run: the run fails, is recorded with its error,
    the watermark stays; started again, the next run finishes that run (same range, same
    names) before it exports what came since."""
    server = S3Server(free_port())
    server.start()
    try:
        server.client().create_bucket(Bucket="down")
        settings = s3_settings(server, "down")
        first = await insert(engine, [event_row(ago(10)) for _ in range(5)])
        server.stop()
        with pytest.raises(ExportFailed):
            await exporter(engine, settings).run()
        status = await export_status(engine, settings)
        assert status.watermark is None and status.failed_runs == 1 and status.events_waiting == 5
        assert status.last_error is not None and "test-secret" not in status.last_error.error
        assert status.last_run is not None and status.last_run.status == "failed"
        server.start()  # an empty store again (moto keeps objects in memory)
        server.client().create_bucket(Bucket="down")
        later = await insert(engine, [event_row(ago(0.5))])
        await next_second()
        retried, new = await exporter(engine, settings).run()
        assert retried.retried and retried.run_id == status.last_run.id and retried.events == 5
        assert not new.retried and new.events == 1
        counts, _ = exported(destination_of(settings))
        assert counts == {str(i): 1 for i in [*first, *later]}
        after = await export_status(engine, settings)
        assert after.events_waiting == 0 and after.lag_seconds == 0 and after.last_run is not None
        assert after.last_run.status == "done" and after.last_run.attempts == 1
    finally:
        server.stop()


class BreaksAfter:
    """A real destination that fails once `puts` uploads have succeeded: a run cut off
    mid-upload, as a crash or a lost connection would cut it."""

    def __init__(self, inner: Destination, puts: int) -> None:
        self.inner = inner
        self.left = puts
        self.description = inner.description

    def put(self, key: str, source: Path, content_type: str) -> None:
        if self.left == 0:
            raise ConnectionError("connection reset during upload")
        self.left -= 1
        self.inner.put(key, source, content_type)

    def fetch(self, key: str, target: Path) -> None:
        self.inner.fetch(key, target)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def keys(self, under: str = "") -> list[str]:
        return self.inner.keys(under)


async def test_a_run_cut_off_mid_upload_is_retried_with_the_same_names_and_no_leftovers(
    engine: AsyncEngine, export_clean: None, s3_server: S3Server, bucket: str
) -> None:
    settings = s3_settings(s3_server, bucket, batch_size=10)
    real = destination_of(settings)
    ids = await insert(engine, [event_row(ago(10)) for _ in range(25)])
    # Three data files stored, the manifest not: the run has not happened as far as the
    # watermark knows.
    with pytest.raises(ExportFailed):
        await exporter(engine, settings, raw=BreaksAfter(real, 3)).run()
    names_before = real.keys()
    assert len(names_before) == 3 and not any(k.endswith("manifest.json") for k in names_before)
    # Meanwhile five events of the range are deleted: the retry writes two files, not three,
    # and removes the third that the cut-off attempt left.
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM event WHERE id = ANY(:ids)"), {"ids": ids[:5]})
    # A second cut: after one file of the retry.
    with pytest.raises(ExportFailed):
        await exporter(engine, settings, raw=BreaksAfter(real, 1)).run()
    retried, *since = await exporter(engine, settings).run()
    assert sum(run.events for run in since) == 0  # nothing new since the range of the retry
    assert retried.retried and retried.events == 20 and len(retried.files) == 2
    assert set(retried.files) <= set(names_before)
    counts, keys = exported(real)
    assert counts == {str(i): 1 for i in ids[5:]}
    assert set(counts) == await stored_ids(engine)
    assert len(keys) == 2
    async with engine.connect() as conn:
        attempts = (
            await conn.execute(text("SELECT attempts FROM export_run WHERE id = :i"), {"i": retried.run_id})
        ).scalar()
    assert attempts == 3
