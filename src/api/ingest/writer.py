"""The group-commit writer.

Requests put their rows on a bounded in-memory queue and wait; a few writer tasks take
everything queued (whole requests, up to a size), COPY it into a per-connection staging
table and move it into `event` with one `INSERT … ON CONFLICT DO NOTHING RETURNING`, then
commit and answer every waiting request at once. A 2xx is therefore only ever sent for rows
that are committed. This writer, like the session dependency, is a commit point.

On the Apache edition the same statement also upserts the 15-minute rollup from the rows
that were really inserted, so duplicates never count twice and backfills land in their bucket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from src.api.errors import AppError, BadRequest, ServiceUnavailable
from src.api.events.models import EVENT_COPY_COLUMNS, EVENT_COPY_TYPES, ROLLUP_DIMENSIONS, ROLLUPS

log = logging.getLogger(__name__)

EventRow = tuple[Any, ...]  # values in EVENT_COPY_COLUMNS order
EventKey = tuple[UUID, datetime]

_COLUMNS = ", ".join(EVENT_COPY_COLUMNS)
_DIMS = ", ".join(ROLLUP_DIMENSIONS)
_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS event_stage (LIKE event INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
# Binary COPY: psycopg's C dumpers write each row about four times faster than text format.
_COPY_SQL = f"COPY event_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_INSERT_SQL = (
    f"INSERT INTO event ({_COLUMNS}) SELECT {_COLUMNS} FROM event_stage ORDER BY time"
    " ON CONFLICT DO NOTHING RETURNING id, time"
)


def _rollup_upsert(name: str, dims: tuple[str, ...]) -> str:
    columns = ", ".join(dims)
    return f"""{name}_upsert AS (
    INSERT INTO {name} AS r (bucket, {columns}, events, duration_sum, duration_count)
    SELECT time_bucket(INTERVAL '15 minutes', time) AS bucket, {columns},
           count(*), sum(duration), count(duration)
    FROM inserted
    GROUP BY bucket, {columns}
    ORDER BY bucket, {columns}
    ON CONFLICT (bucket, {columns}) DO UPDATE SET
        events = r.events + excluded.events,
        duration_sum = r.duration_sum + excluded.duration_sum,
        duration_count = r.duration_count + excluded.duration_count
)"""


# Every rollup is upserted from the rows this statement really inserted (RETURNING), so
# duplicates never count twice and backfills land in their own bucket.
_INSERT_WITH_ROLLUP_SQL = (
    f"WITH inserted AS (INSERT INTO event ({_COLUMNS}) SELECT {_COLUMNS} FROM event_stage"
    f" ORDER BY time ON CONFLICT DO NOTHING RETURNING id, time, duration, {_DIMS}), "
    + ", ".join(_rollup_upsert(name, dims) for name, dims in ROLLUPS.items())
    + " SELECT id, time FROM inserted"
)
_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError)


@dataclass(frozen=True)
class WriteResult:
    """Per submitted row, in order: True when stored now, False when it was already stored."""

    inserted: tuple[bool, ...]

    @property
    def accepted(self) -> int:
        return sum(self.inserted)

    @property
    def duplicates(self) -> int:
        return len(self.inserted) - self.accepted


@dataclass
class _Slot:
    """One writer task's connection, and whether its temp staging table exists yet."""

    conn: AsyncConnection | None = None
    staged: bool = False


@dataclass
class _Pending:
    rows: Sequence[EventRow]
    future: asyncio.Future[WriteResult]
    keys: list[EventKey] = field(default_factory=list)


class IngestWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        maintain_rollup: bool,
        max_queued_events: int,
        flush_max_events: int,
        flush_interval: float,
        writers: int,
    ) -> None:
        self._engine = engine
        self._insert_sql = _INSERT_WITH_ROLLUP_SQL if maintain_rollup else _INSERT_SQL
        self._max_queued = max_queued_events
        self._flush_max = flush_max_events
        self._flush_interval = flush_interval
        self._writers = max(1, writers)
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._has_work = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.committed_events = 0

    @property
    def queued_events(self) -> int:
        return self._queued_events

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name=f"ingest-writer-{i}") for i in range(self._writers)
        ]

    async def stop(self) -> None:
        """Stop taking work and flush everything already accepted."""
        self._closing = True
        self._has_work.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("ingest writer stopped committed_events=%d", self.committed_events)

    async def submit(self, rows: Sequence[EventRow]) -> WriteResult:
        """Queue rows and wait until they are committed (or refused)."""
        if not rows:
            return WriteResult(inserted=())
        if self._closing:
            raise ServiceUnavailable("the service is shutting down; retry shortly", retry_after=2)
        if self._queued_events + len(rows) > self._max_queued:
            raise ServiceUnavailable("ingest queue is full; retry shortly", retry_after=1)
        pending = _Pending(rows=rows, future=asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._queued_events += len(rows)
        self._has_work.set()
        # Shielded: a client that disconnects must not cancel rows another request shares a commit with.
        return await asyncio.shield(pending.future)

    async def _run(self) -> None:
        slot = _Slot()
        try:
            await self._loop(slot)
        finally:
            await self._discard(slot)

    async def _loop(self, slot: _Slot) -> None:
        while True:
            await self._has_work.wait()
            if not self._queue:
                if self._closing:
                    return
                self._has_work.clear()
                continue
            if self._flush_interval > 0 and self._queued_events < self._flush_max and not self._closing:
                await asyncio.sleep(self._flush_interval)
            batch = self._take()
            if not batch:
                continue
            await self._flush(batch, slot)

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        taken = 0
        while self._queue and (not batch or taken + len(self._queue[0].rows) <= self._flush_max):
            pending = self._queue.popleft()
            batch.append(pending)
            taken += len(pending.rows)
        self._queued_events -= taken
        if not self._queue and not self._closing:
            self._has_work.clear()
        return batch

    async def _flush(self, batch: list[_Pending], slot: _Slot) -> None:
        try:
            inserted = await self._write_with_retry(batch, slot)
        except AppError as exc:
            if len(batch) > 1 and not isinstance(exc, ServiceUnavailable):
                # One request's bad data must not fail the others it shared a commit with.
                for pending in batch:
                    await self._flush([pending], slot)
                return
            for pending in batch:
                _resolve(pending, exc)
            return
        except Exception as exc:  # never leave a request waiting forever
            log.exception("ingest flush failed")
            for pending in batch:
                _resolve(pending, ServiceUnavailable(f"ingest failed: {type(exc).__name__}"))
            return
        self.committed_events += len(inserted)
        for pending in batch:
            _resolve(pending, WriteResult(tuple(_owned(pending, inserted))))

    async def _write_with_retry(self, batch: list[_Pending], slot: _Slot) -> set[EventKey]:
        """Deadlocks are retried; a lost connection is retried once on a fresh one. Retrying is
        safe: ids are fixed before the first attempt, so a commit that did land is not doubled."""
        reconnected = False
        for attempt in range(4):
            try:
                return await self._write(batch, slot)
            except (psycopg.Error, DBAPIError, OSError) as exc:
                kind = _classify(exc)
                if kind == "retry":
                    await asyncio.sleep(0.01 * (attempt + 1))
                    continue
                if kind == "unavailable":
                    if not reconnected:
                        reconnected = True
                        continue
                    raise ServiceUnavailable("database unavailable; retry shortly", retry_after=2) from exc
                detail = exc.orig if isinstance(exc, DBAPIError) else exc
                raise BadRequest(f"event rejected by the database: {detail}") from exc
        raise ServiceUnavailable("database busy; retry shortly", retry_after=1)

    async def _connection(self, slot: _Slot) -> AsyncConnection:
        # Each writer keeps one connection: no pool checkout or pre-ping round trip per flush.
        if slot.conn is None:
            slot.conn = await self._engine.connect()
            slot.staged = False
        return slot.conn

    async def _discard(self, slot: _Slot) -> None:
        """After a failure the connection's state is unknown: invalidate it, reconnect next time."""
        conn, slot.conn = slot.conn, None
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception:  # closing a broken connection must not mask the first error
                log.debug("discarding writer connection failed", exc_info=True)

    async def _write(self, batch: list[_Pending], slot: _Slot) -> set[EventKey]:
        started = time.perf_counter()
        # The first row with a key owns it; later copies in this flush are duplicates already.
        seen: set[EventKey] = set()
        rows: list[EventRow] = []
        for pending in batch:
            pending.keys = [(row[0], row[1]) for row in pending.rows]
            for key, row in zip(pending.keys, pending.rows, strict=True):
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
        conn = await self._connection(slot)
        fairy = await conn.get_raw_connection()
        pg = cast(psycopg.AsyncConnection[Any], fairy.driver_connection)
        try:
            async with pg.cursor() as cur:
                if not slot.staged:
                    await cur.execute(_STAGE_DDL)
                async with cur.copy(_COPY_SQL) as copy:
                    copy.set_types(EVENT_COPY_TYPES)
                    for row in rows:
                        await copy.write_row(row)
                await cur.execute(self._insert_sql)
                inserted = {(r[0], r[1]) for r in await cur.fetchall()}
            await pg.commit()
            slot.staged = True
        except BaseException:
            await self._discard(slot)
            raise
        log.debug(
            "flush rows=%d inserted=%d requests=%d ms=%.1f",
            len(rows),
            len(inserted),
            len(batch),
            (time.perf_counter() - started) * 1000,
        )
        return inserted


def _owned(pending: _Pending, inserted: set[EventKey]) -> list[bool]:
    # Each inserted key is claimed once, by the first row that carries it.
    result = []
    for key in pending.keys:
        if key in inserted:
            inserted.discard(key)
            result.append(True)
        else:
            result.append(False)
    return result


def _resolve(pending: _Pending, outcome: WriteResult | BaseException) -> None:
    if pending.future.done():
        return
    if isinstance(outcome, BaseException):
        pending.future.set_exception(outcome)
    else:
        pending.future.set_result(outcome)


def _classify(exc: BaseException) -> Literal["retry", "unavailable", "rejected"]:
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(original, _RETRYABLE):
        return "retry"
    if isinstance(original, _UNAVAILABLE) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return "unavailable"
    return "rejected"
