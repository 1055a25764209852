"""Processing: each raw file split per client (`client_<id>/…`, `unassigned/…` while events have
no client), every raw event in exactly one processed file, each raw file processed once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.exports.formats import read_rows
from src.api.exports.status import process_status
from tests.exports.conftest import (
    S3Server,
    ago,
    destination_of,
    event_row,
    exported,
    exporter,
    folder_settings,
    insert,
    s3_settings,
)

pytestmark = pytest.mark.anyio
CLIENTS = {"acme": 3, "evothesis_admin": 2, None: 4, "a/b": 1}


async def test_per_client_split_in_a_folder(engine: AsyncEngine, export_clean: None, folder: Path) -> None:
    settings = folder_settings(folder, batch_size=4)
    rows = [event_row(ago(10), client_id=client) for client, n in CLIENTS.items() for _ in range(n)]
    ids = await insert(engine, rows)
    client_of = {str(row["id"]): row["client_id"] for row in rows}
    pipeline = exporter(engine, settings)
    [run] = await pipeline.run()
    assert len(run.files) == 3
    assert (await process_status(engine)).raw_files_pending == 3
    result = await pipeline.process()
    assert result.raw_files == 3 and result.events == 10
    processed = destination_of(settings, "processed")
    stamp = run.range_end.strftime("%Y%m%d_%H%M%S")
    day = run.range_end.strftime("%Y/%m/%d")
    keys = processed.keys()
    assert set(keys) == set(result.files)
    folders = {key.split("/")[0] for key in keys}
    assert folders == {"client_acme", "client_evothesis_admin", "unassigned", "client_a%2Fb"}
    assert (
        f"unassigned/{day}/processed_{stamp}.json" in keys
        or f"unassigned/{day}/processed_{stamp}_0002.json" in keys
    )
    counts: Counter[str] = Counter()
    for key in keys:
        local = folder / "check"
        processed.fetch(key, local)
        for batch in read_rows(local, key):
            for item in batch:
                counts[item["id"]] += 1
                expected = client_of[item["id"]]
                assert key.startswith(
                    f"client_{expected.replace('/', '%2F')}/" if expected else "unassigned/"
                )
    assert counts == {str(i): 1 for i in ids}
    # Processed once: a second run finds nothing, the status nothing pending.
    again = await pipeline.process()
    assert again.raw_files == 0
    status = await process_status(engine)
    assert (
        status.raw_files_pending == 0
        and status.raw_files_processed == 3
        and status.processed_files == len(keys)
    )


async def test_per_client_parquet_in_a_bucket(
    engine: AsyncEngine, export_clean: None, s3_server: S3Server, bucket: str
) -> None:
    settings = s3_settings(s3_server, bucket, format="parquet")
    rows = [event_row(ago(10), client_id=client) for client, n in CLIENTS.items() for _ in range(n)]
    ids = await insert(engine, rows)
    pipeline = exporter(engine, settings)
    await pipeline.run()
    await pipeline.process()
    listed = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=f"{bucket}-processed")["Contents"]]
    assert all(key.startswith("processed-events/") and key.endswith(".parquet") for key in listed)
    counts, _ = exported(destination_of(settings, "processed"))
    assert counts == {str(i): 1 for i in ids}


async def test_a_raw_file_that_cannot_be_read_waits_and_the_others_go_on(
    engine: AsyncEngine, export_clean: None, folder: Path
) -> None:
    from src.api.exports.service import ExportFailed

    settings = folder_settings(folder, batch_size=2)
    ids = await insert(engine, [event_row(ago(10)) for _ in range(6)])
    pipeline = exporter(engine, settings)
    [run] = await pipeline.run()
    raw = folder / "raw-events"
    hidden = raw / run.files[1]
    moved = hidden.with_name("moved-away")
    hidden.rename(moved)
    with pytest.raises(ExportFailed) as failed:
        await pipeline.process()
    assert failed.value.detail == {
        "processed": 2,
        "failed": [{"raw_file": run.files[1], "error": failed.value.detail["failed"][0]["error"]}],  # type: ignore[index]
    }
    status = await process_status(engine)
    assert status.raw_files_pending == 1 and status.last_error and "FileNotFoundError" in status.last_error
    moved.rename(hidden)
    again = await pipeline.process()
    assert again.raw_files == 1
    counts, _ = exported(destination_of(settings, "processed"))
    assert counts == {str(i): 1 for i in ids}
    assert (await process_status(engine)).last_error is None


async def test_each_site_privacy_level_holds_in_the_processed_files(
    engine: AsyncEngine, export_clean: None, folder: Path
) -> None:
    """Stored before their sites' levels were raised: processing applies the level as the files
    leave (hashed: no address; strict: also PII redacted), standard sites are left as stored."""
    from sqlalchemy import text

    settings = folder_settings(folder, format="parquet")
    site_rows = [("exp-open", "standard"), ("exp-hashed", "hashed"), ("exp-strict", "strict")]
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM site WHERE site_id LIKE 'exp-%'"))
        for site_id, level in site_rows:
            await conn.execute(
                text(
                    "INSERT INTO site (site_id, client_id, allowed_hostnames, privacy_level, timezone)"
                    " VALUES (:s, 'acme', '{}', :l, 'UTC')"
                ),
                {"s": site_id, "l": level},
            )
    try:
        rows = [
            event_row(
                ago(10),
                site_id=site_id,
                client_id="acme",
                page="/signup?email=ann@example.com",
                properties='{"email": "ann@example.com"}',
            )
            for site_id, _ in site_rows
        ]
        await insert(engine, rows)
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE event SET ip_address = '198.51.100.9' WHERE site_id LIKE 'exp-%'")
            )
        pipeline = exporter(engine, settings)
        await pipeline.run()
        await pipeline.process()
        processed = destination_of(settings, "processed")
        seen = {}
        for key in processed.keys(""):
            local = folder / "check.parquet"
            processed.fetch(key, local)
            for batch in read_rows(local, key):
                for item in batch:
                    seen[item["site_id"]] = item
        assert seen["exp-open"]["ip_address"] == "198.51.100.9"
        assert "ann@example.com" in seen["exp-open"]["page"]
        assert seen["exp-hashed"]["ip_address"] is None and "ann@example.com" in seen["exp-hashed"]["page"]
        assert seen["exp-strict"]["ip_address"] is None
        assert "ann@example.com" not in seen["exp-strict"]["page"]
        assert "ann@example.com" not in seen["exp-strict"]["properties"]
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM site WHERE site_id LIKE 'exp-%'"))
