"""Every SQL statement of the export pipeline: the advisory lock, the watermark, runs, files,
the event reads and the status figures. Callers own the transactions.

Why no committed event is skipped (docs/exports.md#exactly-once): received_at is set by the
application before the transaction that stores the event, so a transaction committing late can
carry a received_at below a watermark already passed. A run therefore reads, besides the new
range, the events received a little before the watermark that the previous run's snapshot did
not see; visibility is judged from each row's inserting transaction (xmin) against the saved
snapshots, so the answer is the same however often a run is retried."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from src.api.exports.formats import COLUMNS
from src.api.exports.models import ExportRun

LOCK_KEY = 0x4558504F  # "EXPO": one exporter at a time, across workers and processes

# A row's inserting transaction as a full 64-bit id: xmin is its low 32 bits; every row this
# statement sees was inserted before the statement's own snapshot's xmax, so the id is the one
# below that xmax with these low bits (rows are read within 2^31 transactions of their insert:
# the late window is minutes, and PostgreSQL freezes long before wrapping around).
_ROW_XID = "(h.base - ((h.base - e.xmin::text::bigint) & 4294967295))::text::xid8"
_SELECT = ", ".join(f"e.{c}::text" if c in ("id", "properties") else f"e.{c}" for c in COLUMNS)
# The CTE is materialized: inlined, PostgreSQL would take a snapshot for every row. Rows come
# in no particular order (sorting a run costs more than reading it; a retry rewrites every
# file of the run whatever order they come in).
EVENTS_SQL = text(
    f"""
    WITH h AS MATERIALIZED (
        SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS base,
               CAST(:snapshot AS pg_snapshot) AS snapshot,
               CAST(:previous AS pg_snapshot) AS previous
    )
    SELECT {_SELECT}
    FROM event e CROSS JOIN h
    WHERE e.received_at >= :low AND e.received_at < :high
      AND (h.snapshot IS NULL OR pg_visible_in_snapshot({_ROW_XID}, h.snapshot))
      AND (e.received_at >= :start OR NOT pg_visible_in_snapshot({_ROW_XID}, h.previous))
    """
)


async def try_lock(conn: AsyncConnection) -> bool:
    locked = await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY})
    return bool(locked.scalar())


async def unlock(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})


@dataclass(frozen=True)
class Watermark:
    exported_until: datetime
    snapshot: str
    open_since: datetime


async def read_watermark(conn: AsyncConnection) -> Watermark | None:
    row = (
        await conn.execute(
            text("SELECT exported_until, snapshot, open_since FROM export_watermark WHERE kind = 'raw'")
        )
    ).first()
    return Watermark(row.exported_until, row.snapshot, row.open_since) if row else None


@dataclass(frozen=True)
class Horizon:
    now: datetime
    open_since: datetime  # start of the oldest transaction open in this database, or now
    snapshot: str


async def capture_horizon(conn: AsyncConnection) -> Horizon:
    """The open transactions' oldest start, then a snapshot (in this order, and in separate
    statements under READ COMMITTED: a transaction that ends between the two is in the snapshot;
    one still open was counted). Transactions of other databases cannot store our events."""
    open_since = (
        await conn.execute(
            text(
                "SELECT least(now(), min(xact_start)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend' AND xact_start IS NOT NULL"
            )
        )
    ).scalar_one()
    row = (
        await conn.execute(text("SELECT pg_current_snapshot()::text AS snapshot, clock_timestamp() AS now"))
    ).one()
    return Horizon(now=row.now, open_since=open_since, snapshot=row.snapshot)


def _run(row: Row[Any]) -> ExportRun:
    return ExportRun.model_validate(dict(row._mapping))


async def pending_raw_run(conn: AsyncConnection) -> ExportRun | None:
    """The raw run that began and did not finish (at most one: runs are made under the lock,
    and none is made while one is pending)."""
    row = (
        await conn.execute(
            text(
                "SELECT * FROM export_run WHERE kind = 'raw' AND status IN ('running', 'failed')"
                " ORDER BY id LIMIT 1"
            )
        )
    ).first()
    return _run(row) if row else None


async def get_run(conn: AsyncConnection, run_id: int) -> ExportRun | None:
    row = (await conn.execute(text("SELECT * FROM export_run WHERE id = :id"), {"id": run_id})).first()
    return _run(row) if row else None


async def create_run(conn: AsyncConnection, run: ExportRun) -> ExportRun:
    values = run.model_dump(
        exclude={"id", "created_at", "finished_at", "events", "files", "bytes", "attempts", "error"}
    )
    names = ", ".join(values)
    binds = ", ".join(f":{name}" for name in values)
    row = (
        await conn.execute(text(f"INSERT INTO export_run ({names}) VALUES ({binds}) RETURNING *"), values)
    ).one()
    return _run(row)


async def set_prefix(conn: AsyncConnection, run_id: int, prefix: str) -> None:
    await conn.execute(text("UPDATE export_run SET prefix = :p WHERE id = :id"), {"p": prefix, "id": run_id})


async def begin_attempt(conn: AsyncConnection, run_id: int) -> None:
    await conn.execute(
        text(
            "UPDATE export_run SET attempts = attempts + 1, status = 'running', error = NULL WHERE id = :id"
        ),
        {"id": run_id},
    )


async def stream_events(
    conn: AsyncConnection, run: ExportRun, rows_per_batch: int
) -> AsyncIterator[Sequence[Row[Any]]]:
    """The run's events in batches, through a server-side cursor (never the whole run at once)."""
    low = run.late_from if run.late_from is not None and run.late_from < run.range_start else run.range_start
    result = await conn.stream(
        EVENTS_SQL.execution_options(yield_per=rows_per_batch),
        {
            "low": low,
            "high": run.range_end,
            "start": run.range_start,
            "snapshot": run.snapshot,
            "previous": run.previous_snapshot,
        },
    )
    async for batch in result.partitions(rows_per_batch):
        yield batch


async def record_file(conn: AsyncConnection, run_id: int, part: int, key: str, rows: int, size: int) -> None:
    await conn.execute(
        text(
            "INSERT INTO export_file (run_id, part, key, rows, bytes) VALUES (:r, :p, :k, :n, :b)"
            " ON CONFLICT (run_id, part) DO UPDATE SET key = excluded.key, rows = excluded.rows,"
            " bytes = excluded.bytes, stored_at = now()"
        ),
        {"r": run_id, "p": part, "k": key, "n": rows, "b": size},
    )


async def leftover_files(conn: AsyncConnection, run_id: int, parts: int) -> list[str]:
    """Keys an earlier attempt of the run began beyond its `parts` files; their rows go."""
    result = await conn.execute(
        text("DELETE FROM export_file WHERE run_id = :r AND part > :p RETURNING key"),
        {"r": run_id, "p": parts},
    )
    return [row.key for row in result]


async def finish_run(conn: AsyncConnection, run: ExportRun, events: int, files: int, size: int) -> None:
    await conn.execute(
        text(
            "UPDATE export_run SET status = 'done', finished_at = clock_timestamp(), events = :e,"
            " files = :f, bytes = :b, error = NULL WHERE id = :id"
        ),
        {"e": events, "f": files, "b": size, "id": run.id},
    )


async def move_watermark(conn: AsyncConnection, run: ExportRun) -> None:
    """After the run's files and manifest are stored: its range and snapshot are exported."""
    await conn.execute(
        text(
            "INSERT INTO export_watermark (kind, exported_until, snapshot, open_since)"
            " VALUES ('raw', :until, :snapshot, :open_since)"
            " ON CONFLICT (kind) DO UPDATE SET exported_until = excluded.exported_until,"
            " snapshot = excluded.snapshot, open_since = excluded.open_since, updated_at = now()"
        ),
        {"until": run.range_end, "snapshot": run.snapshot, "open_since": run.open_since},
    )


async def fail_run(conn: AsyncConnection, run_id: int, error: str) -> None:
    await conn.execute(
        text("UPDATE export_run SET status = 'failed', error = :e WHERE id = :id"), {"e": error, "id": run_id}
    )


# --- processing ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RawFile:
    run_id: int
    part: int
    key: str
    rows: int
    stamp: str


async def unprocessed_files(conn: AsyncConnection, limit: int) -> list[RawFile]:
    result = await conn.execute(
        text(
            "SELECT f.run_id, f.part, f.key, f.rows, r.stamp FROM export_file f"
            " JOIN export_run r ON r.id = f.run_id"
            " WHERE f.processed_at IS NULL AND r.kind = 'raw' AND r.status = 'done'"
            " ORDER BY f.run_id, f.part LIMIT :n"
        ),
        {"n": limit},
    )
    return [RawFile(row.run_id, row.part, row.key, row.rows, row.stamp) for row in result]


async def record_processed(
    conn: AsyncConnection, raw: RawFile, outputs: Sequence[tuple[str, str, int]]
) -> None:
    """The processed files made of `raw` (client, key, rows), and `raw` marked processed."""
    for client, key, rows in outputs:
        await conn.execute(
            text(
                "INSERT INTO processed_file (run_id, part, client, key, rows) VALUES (:r, :p, :c, :k, :n)"
                " ON CONFLICT (run_id, part, client) DO UPDATE SET key = excluded.key, rows = excluded.rows,"
                " stored_at = now()"
            ),
            {"r": raw.run_id, "p": raw.part, "c": client, "k": key, "n": rows},
        )
    await conn.execute(
        text(
            "UPDATE export_file SET processed_at = clock_timestamp(), process_error = NULL"
            " WHERE run_id = :r AND part = :p"
        ),
        {"r": raw.run_id, "p": raw.part},
    )


async def fail_processing(conn: AsyncConnection, raw: RawFile, error: str) -> None:
    await conn.execute(
        text("UPDATE export_file SET process_error = :e WHERE run_id = :r AND part = :p"),
        {"e": error, "r": raw.run_id, "p": raw.part},
    )


# --- status --------------------------------------------------------------------------------


async def last_run(conn: AsyncConnection, kind: str | None = None) -> ExportRun | None:
    row = (
        await conn.execute(
            text(
                "SELECT * FROM export_run WHERE CAST(:k AS text) IS NULL OR kind = :k"
                " ORDER BY id DESC LIMIT 1"
            ),
            {"k": kind},
        )
    ).first()
    return _run(row) if row else None


async def last_error(conn: AsyncConnection) -> tuple[datetime, str] | None:
    row = (
        await conn.execute(
            text("SELECT created_at, error FROM export_run WHERE error IS NOT NULL ORDER BY id DESC LIMIT 1")
        )
    ).first()
    return (row.created_at, row.error) if row else None


@dataclass(frozen=True)
class RawTotals:
    runs: int
    failed_runs: int
    files: int
    events: int
    bytes: int


async def raw_totals(conn: AsyncConnection) -> RawTotals:
    row = (
        await conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE status = 'done') AS runs,"
                " count(*) FILTER (WHERE status = 'failed') AS failed_runs,"
                " coalesce(sum(files) FILTER (WHERE status = 'done'), 0) AS files,"
                " coalesce(sum(events) FILTER (WHERE status = 'done'), 0) AS events,"
                " coalesce(sum(bytes) FILTER (WHERE status = 'done'), 0) AS bytes"
                " FROM export_run WHERE kind = 'raw'"
            )
        )
    ).one()
    return RawTotals(row.runs, row.failed_runs, int(row.files), int(row.events), int(row.bytes))


@dataclass(frozen=True)
class Waiting:
    events: int
    oldest_received_at: datetime | None


async def waiting_events(conn: AsyncConnection, since: datetime, until: datetime) -> Waiting:
    """Events received in [since, until): not yet exported (those below the watermark whose
    transactions committed late are not counted: they are few and go out with the next run)."""
    row = (
        await conn.execute(
            text(
                "SELECT count(*) AS events, min(received_at) AS oldest FROM event"
                " WHERE received_at >= :since AND received_at < :until"
            ),
            {"since": since, "until": until},
        )
    ).one()
    return Waiting(row.events, row.oldest)


@dataclass(frozen=True)
class ProcessTotals:
    pending_files: int
    pending_events: int
    processed_files: int
    processed_outputs: int
    last_processed_at: datetime | None
    last_error: str | None


async def process_totals(conn: AsyncConnection) -> ProcessTotals:
    row = (
        await conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE f.processed_at IS NULL) AS pending_files,"
                " coalesce(sum(f.rows) FILTER (WHERE f.processed_at IS NULL), 0) AS pending_events,"
                " count(*) FILTER (WHERE f.processed_at IS NOT NULL) AS processed_files,"
                " max(f.processed_at) AS last_processed_at,"
                " (SELECT process_error FROM export_file WHERE process_error IS NOT NULL"
                "  ORDER BY run_id DESC, part DESC LIMIT 1) AS last_error"
                " FROM export_file f JOIN export_run r ON r.id = f.run_id"
                " WHERE r.kind = 'raw' AND r.status = 'done'"
            )
        )
    ).one()
    outputs = (await conn.execute(text("SELECT count(*) FROM processed_file"))).scalar_one()
    return ProcessTotals(
        row.pending_files,
        int(row.pending_events),
        row.processed_files,
        outputs,
        row.last_processed_at,
        row.last_error,
    )
