"""Every stored event in exactly one raw file, into a folder: file names and layout, the batch
cap and the manifest, late-timestamped events, duplicates and deletes between runs, and the
hard case of the watermark: transactions that commit after a run passed their received_at."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.exports.conftest import (
    ago,
    destination_of,
    event_row,
    exported,
    exporter,
    folder_settings,
    insert,
    next_second,
    stored_ids,
)

pytestmark = pytest.mark.anyio


async def test_layout_batches_and_manifest(engine: AsyncEngine, export_clean: None, folder: Path) -> None:
    settings = folder_settings(folder, batch_size=10)
    ids = await insert(engine, [event_row(ago(30)) for _ in range(25)])
    [run] = await exporter(engine, settings).run()
    stamp = run.range_end.strftime("%Y%m%d_%H%M%S")
    day = run.range_end.strftime("%Y/%m/%d")
    assert run.events == 25
    assert run.files == [
        f"{day}/raw_export_{stamp}.json",
        f"{day}/raw_export_{stamp}_0002.json",
        f"{day}/raw_export_{stamp}_0003.json",
    ]
    root = folder / "raw-events"
    manifest = json.loads((root / f"{day}/raw_export_{stamp}.manifest.json").read_text())
    assert [(f["key"], f["rows"]) for f in manifest["files"]] == [
        (k, n) for k, n in zip(run.files, (10, 10, 5), strict=False)
    ]
    assert manifest["events"] == 25 and manifest["run_id"] == run.run_id
    first = (root / run.files[0]).read_text().splitlines()
    assert len(first) == 10
    item = json.loads(first[0])
    assert set(item) >= {"id", "time", "site_id", "page", "received_at", "client_id", "properties"}
    counts, _ = exported(destination_of(settings))
    assert counts == {str(i): 1 for i in ids}
    # Nothing new: the next run exports nothing and writes no file.
    await next_second()
    [empty] = await exporter(engine, settings).run()
    assert empty.events == 0 and empty.files == [] and empty.manifest is None
    assert re.fullmatch(r"raw_export_\d{8}_\d{6}\.json", Path(run.files[0]).name)


async def test_every_event_once_across_runs_with_late_events_duplicates_and_deletes(
    engine: AsyncEngine, client: httpx.AsyncClient, export_clean: None, folder: Path
) -> None:
    settings = folder_settings(folder, batch_size=7)
    dest = destination_of(settings)
    first = [{"event_id": f"order-{i}", "time": ago(60).isoformat(), "page": "/a"} for i in range(12)]
    answer = await client.post("/api/events/batch", json={"events": first})
    assert answer.json()["accepted"] == 12
    await next_second()  # runs export below the whole second they start in
    [first_run] = await exporter(engine, settings).run()
    assert first_run.events == 12
    await next_second()
    # The same events again (stored once), events timestamped two days back (exported on
    # arrival, in the next file), and an event stored and deleted before the next run.
    again = await client.post("/api/events/batch", json={"events": first})
    assert again.json()["duplicates"] == 12
    late = [{"page": "/late", "time": (datetime.now(UTC) - timedelta(days=2)).isoformat()} for _ in range(5)]
    assert (await client.post("/api/events/batch", json={"events": late})).json()["accepted"] == 5
    gone = (await client.post("/api/events/", json={"page": "/gone"})).json()["id"]
    assert (await client.delete(f"/api/events/{gone}")).status_code == 200
    await next_second()
    [second] = await exporter(engine, settings).run()
    assert second.events == 5
    await next_second()
    # More after, and a delete of an event already exported (its file keeps it: it was stored).
    await client.post("/api/events/batch", json={"events": [{"page": "/b"} for _ in range(3)]})
    await next_second()
    await exporter(engine, settings).run()
    counts, keys = exported(dest)
    assert max(counts.values()) == 1
    assert set(counts) == await stored_ids(engine)
    assert gone not in counts
    assert sum(counts.values()) == 12 + 5 + 3
    assert all("/backfill/" not in key for key in keys)


async def test_a_transaction_committing_after_the_watermark_passed_is_exported_next(
    engine: AsyncEngine, export_clean: None, folder: Path
) -> None:
    """received_at is the application's clock: an event received at t can commit long after a
    run moved the watermark past t. The next run still exports it, exactly once."""
    settings = folder_settings(folder)
    dest = destination_of(settings)
    on_time = await insert(engine, [event_row(ago(20))])
    async with engine.connect() as slow:
        transaction = await slow.begin()
        # A writer's transaction, open across the run, holding an event received before it.
        held = await insert(slow, [event_row(ago(10))])
        [run] = await exporter(engine, settings).run()
        assert run.events == 1 and run.range_end > datetime.now(UTC) - timedelta(seconds=5)
        await transaction.commit()
    # A transaction that begins after that run, with an event received before its watermark
    # (held in a queue for a minute): still within the late window.
    queued = await insert(engine, [event_row(ago(60))])
    # And one that rolls back: never exported.
    async with engine.connect() as aborted:
        transaction = await aborted.begin()
        await insert(aborted, [event_row(ago(5))])
        await transaction.rollback()
    await next_second()
    [after] = await exporter(engine, settings).run()
    assert after.events == 2
    await next_second()
    await exporter(engine, settings).run()
    counts, _ = exported(dest)
    assert counts == {str(i): 1 for i in [*on_time, *held, *queued]}


async def test_a_long_transaction_widens_the_late_window(
    engine: AsyncEngine, export_clean: None, folder: Path
) -> None:
    """An event received long before the watermark (more than EXPORT_LATE_WINDOW) is still
    found when its transaction was already open at the previous run."""
    settings = folder_settings(folder, late_window=1.0)
    async with engine.connect() as slow:
        transaction = await slow.begin()
        await slow.execute(text("SELECT 1"))  # the transaction starts now
        await exporter(engine, settings).run()  # open_since: this transaction's start
        await next_second()
        await next_second()
        [passed] = await exporter(engine, settings).run()
        assert passed.events == 0
        # Received 1.5 s before the transaction began (a queue's wait): > late_window behind
        # the watermark by now, yet after open_since minus the window of the previous run.
        start = (await slow.execute(text("SELECT now()"))).scalar_one()
        held = await insert(slow, [event_row(start - timedelta(seconds=0.5))])
        await transaction.commit()
    await next_second()
    [found] = await exporter(engine, settings).run()
    assert found.events == 1
    counts, _ = exported(destination_of(settings))
    assert counts == {str(held[0]): 1}
