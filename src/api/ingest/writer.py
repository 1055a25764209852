"""The group-commit writer.

Requests put their rows on a bounded in-memory queue and wait; a few writer tasks take
everything queued (whole requests, up to a size) and store it in one transaction, then answer
every waiting request at once. A 2xx is therefore only ever sent for rows that are committed.
This writer, like the session dependency, is a commit point. A writer flushes at once when no
other flush is running, and waits a few milliseconds for more requests when one is.

Two ways to store a flush, chosen by its size:
- large: the rows, already encoded as binary COPY data by `prepare_rows` (off the event loop
  for big requests), are copied into a per-connection staging table and moved into `event` with
  one `INSERT … ON CONFLICT DO NOTHING`; the statement returns only the keys it did *not*
  insert (usually none), so no per-row answer crosses the wire. The insert is first tried
  without ON CONFLICT (cheaper); a duplicate key makes it fail, and the flush is redone with it;
- small (the single-event traffic): one multi-row `INSERT … VALUES … ON CONFLICT DO NOTHING
  RETURNING` in autocommit, a single round trip instead of BEGIN, COPY, INSERT and COMMIT.

On the Apache edition the same statement also upserts the 15-minute rollups (and, for late
events, the hourly and daily tiers) from the rows that were really inserted, so duplicates never
count twice and backfills land in their bucket (src/api/rollups/maintenance.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast
from uuid import UUID

import orjson
import psycopg
from psycopg import abc as pg_abc
from psycopg import errors as pg_errors
from psycopg import postgres
from psycopg.adapt import AdaptersMap, PyFormat, Transformer
from psycopg.pq import Format
from psycopg.types.json import set_json_dumps
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from src.api.errors import AppError, BadRequest, ServiceUnavailable
from src.api.events.models import EVENT_COPY_COLUMNS, EVENT_COPY_TYPES
from src.api.metrics import instruments as metrics
from src.api.rollups import pages
from src.api.rollups.activity import KEY_COLUMNS, append_cte
from src.api.rollups.catalogue import DIMENSIONS
from src.api.rollups.maintenance import maintenance_ctes
from src.api.sessions import repository as sessions

try:  # psycopg's C row encoder (psycopg[binary]); the pure-Python one below is the fallback
    from psycopg._copy_base import format_row_binary as _format_row_binary
except ImportError:  # pragma: no cover - only without psycopg's compiled extension
    _format_row_binary = None

log = logging.getLogger(__name__)

EventRow = tuple[Any, ...]  # values in EVENT_COPY_COLUMNS order
EventKey = tuple[UUID, datetime]

_COLUMNS = ", ".join(EVENT_COPY_COLUMNS)
_WIDTH = len(EVENT_COPY_COLUMNS)
_STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS event_stage (LIKE event INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
# Binary COPY: psycopg's C dumpers write each row about four times faster than text format.
_COPY_SQL = f"COPY event_stage ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
# Flushes up to this many rows go through one INSERT … VALUES round trip instead of COPY.
SMALL_FLUSH_ROWS = 64
# The days (chunks, with the default chunk interval) one transaction may write. Each new day
# means new chunks of `event` and of the rollups, with their locks held to the commit: a
# request over a thousand old days once ran a minute and exhausted the lock table while the
# requests sharing its flush waited. Wider requests are committed alone, in parts of this many
# days; a retried part stores nothing twice (ids are fixed before the first attempt).
MAX_DAYS_PER_FLUSH = 40
# After a large flush met a stored key, this many seconds of large flushes use ON CONFLICT at
# once: a client that retries tends to retry again, and a refused flush is work thrown away.
_CONFLICTS_MEMORY = 60.0


_FROM_STAGE = f"SELECT {_COLUMNS} FROM event_stage ORDER BY time"
# The staged keys the INSERT skipped: already stored (or, after a lost connection, stored by
# the attempt that lost it). A hash anti-join in the server is far cheaper than sending every
# inserted key back; the one-time filter skips it when everything was inserted.
_SKIPPED = (
    " SELECT s.id, s.time FROM event_stage s"
    " WHERE (SELECT count(*) FROM inserted) < (SELECT count(*) FROM event_stage)"
    " AND NOT EXISTS (SELECT 1 FROM inserted i WHERE i.id = s.id AND i.time = s.time)"
)
_NOTHING_SKIPPED = " SELECT id, time FROM inserted WHERE false"


def _insert(source: str, returning: str, *, rollup: bool, on_conflict: bool = True) -> str:
    """The one statement that stores a flush. From the rows it really inserted (RETURNING), so
    duplicates never count twice and backfills land in their own bucket, it appends their keys
    to the activity tables' changes and to the sessions' change log, and, with rollups
    (Apache), changes the rollups."""
    returned = ", ".join(
        dict.fromkeys(
            (
                "id",
                "time",
                *(("duration", *DIMENSIONS) if rollup else ()),
                *KEY_COLUMNS,
                *sessions.CHANGE_COLUMNS,
            )
        )
    )
    conflict = " ON CONFLICT DO NOTHING" if on_conflict else ""
    sql = f"WITH inserted AS (INSERT INTO event ({_COLUMNS}) {source}{conflict} RETURNING {returned})"
    sql += ", " + append_cte("inserted") + ", " + pages.append_cte("inserted")
    sql += ", " + sessions.append_cte("inserted")
    if rollup:
        sql += ", " + maintenance_ctes("inserted")
    return sql + returning


def copy_insert_sql(*, rollup: bool) -> str:
    """The statement that moves a staged flush into `event` (with ON CONFLICT DO NOTHING),
    upserting the rollups when `rollup`; it returns the staged keys it skipped."""
    return _insert(_FROM_STAGE, _SKIPPED, rollup=rollup)


def _values_source(rows: int) -> str:
    # $n placeholders for psycopg's raw cursor: no per-call placeholder conversion, which
    # psycopg does not cache for statements with this many parameters.
    return "VALUES " + ", ".join(
        "(" + ", ".join(f"${row * _WIDTH + column + 1}" for column in range(_WIDTH)) + ")"
        for row in range(rows)
    )


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


@dataclass(frozen=True, slots=True)
class PreparedRows:
    """A request's rows, ready for the writer: each key once (the first row with a key owns
    it; later copies are duplicates already), optionally encoded as binary COPY rows."""

    rows: tuple[EventRow, ...]  # the first row of each key, in order; () once encoded
    keys: tuple[EventKey, ...]  # the key of every submitted row
    first: tuple[bool, ...]  # per submitted row: the first with its key in this request
    unique: frozenset[EventKey]
    copy_data: bytes | None
    days: frozenset[int] = frozenset()  # the days (proleptic ordinals) its times fall on
    # A request over more than MAX_DAYS_PER_FLUSH days: its rows by time, encoded in parts of
    # at most that many days, each committed in a transaction of its own (copy_data is None).
    parts: tuple[bytes, ...] = ()

    def __len__(self) -> int:
        return len(self.keys)


# Encoding rows needs a psycopg Transformer (per thread: it caches dumpers) whose JSON dumper
# is orjson, which _check_properties already proved can encode every properties value.
_ADAPTERS = AdaptersMap(psycopg.adapters)
set_json_dumps(orjson.dumps, _ADAPTERS)
_COPY_OIDS = [postgres.types[name].oid for name in EVENT_COPY_TYPES]
_local = threading.local()


def _transformer() -> pg_abc.Transformer:
    tx: pg_abc.Transformer | None = getattr(_local, "transformer", None)
    if tx is None:
        tx = Transformer(_ADAPTERS)
        tx.set_dumper_types(_COPY_OIDS, Format.BINARY)
        _local.transformer = tx
    return tx


def encode_copy_rows(rows: Sequence[EventRow]) -> bytes:
    """Binary COPY rows (without the stream's header and trailer)."""
    tx = _transformer()
    out = bytearray()
    if _format_row_binary is not None:
        for row in rows:
            _format_row_binary(row, tx, out)
        return bytes(out)
    formats = [PyFormat.BINARY] * _WIDTH  # pragma: no cover - fallback without the C extension
    for row in rows:  # pragma: no cover
        out += _WIDTH.to_bytes(2, "big")
        for value in tx.dump_sequence(row, formats):
            if value is None:
                out += b"\xff\xff\xff\xff"
            else:
                out += len(value).to_bytes(4, "big") + bytes(value)
    return bytes(out)  # pragma: no cover


def prepare_rows(rows: Sequence[EventRow], *, encode: bool | None = None) -> PreparedRows:
    """Deduplicate by key and (for requests too large for the small path, unless told) encode.
    `encode=False` keeps the rows as they are, however many days they span (queue mode
    publishes rows; its workers submit them one by one). Pure CPU: call it off the event loop
    for big requests."""
    if len(rows) == 1 and not encode:  # the single-event route: skip the loop
        row = rows[0]
        key = (row[0], row[1])
        return PreparedRows(
            rows=(row,),
            keys=(key,),
            first=(True,),
            unique=frozenset((key,)),
            copy_data=None,
            days=frozenset((row[1].toordinal(),)),
        )
    seen: set[EventKey] = set()
    unique: list[EventRow] = []
    keys: list[EventKey] = []
    first: list[bool] = []
    days: set[int] = set()
    for row in rows:
        key = (row[0], row[1])
        keys.append(key)
        if key in seen:
            first.append(False)
        else:
            seen.add(key)
            first.append(True)
            unique.append(row)
            days.add(row[1].toordinal())
    if len(days) > MAX_DAYS_PER_FLUSH and encode is not False:
        return PreparedRows(
            rows=(),
            keys=tuple(keys),
            first=tuple(first),
            unique=frozenset(seen),
            copy_data=None,
            days=frozenset(days),
            parts=tuple(encode_copy_rows(part) for part in _by_days(unique)),
        )
    if encode is None:
        encode = len(unique) > SMALL_FLUSH_ROWS
    # Encoded rows are not kept: while a batch waits for its commit, memory holds it once.
    return PreparedRows(
        rows=() if encode else tuple(unique),
        keys=tuple(keys),
        first=tuple(first),
        unique=frozenset(seen),
        copy_data=encode_copy_rows(unique) if encode else None,
        days=frozenset(days),
    )


def _by_days(rows: list[EventRow]) -> list[list[EventRow]]:
    """The rows in time order, cut into runs of at most MAX_DAYS_PER_FLUSH days."""
    parts: list[list[EventRow]] = []
    part: list[EventRow] = []
    part_days: set[int] = set()
    for row in sorted(rows, key=lambda r: r[1]):
        day = row[1].toordinal()
        if day not in part_days and len(part_days) == MAX_DAYS_PER_FLUSH:
            parts.append(part)
            part, part_days = [], set()
        part.append(row)
        part_days.add(day)
    if part:
        parts.append(part)
    return parts


_RETRYABLE = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure)
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError)
# admin_shutdown, crash_shutdown, cannot_connect_now, database_dropped, idle_session_timeout
_SERVER_GOING = frozenset(("57P01", "57P02", "57P03", "57P04", "57P05"))


@dataclass
class _Slot:
    """One writer task's connection, and whether its temp staging table exists yet."""

    conn: AsyncConnection | None = None
    staged: bool = False


@dataclass
class _Pending:
    prepared: PreparedRows
    future: asyncio.Future[WriteResult]
    # A wide request's progress: parts committed so far, and the keys they skipped (a retry
    # resumes after them, so its own rows are not reported back to it as duplicates).
    parts_done: int = 0
    parts_skipped: set[EventKey] = field(default_factory=set)


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
        self._rollup = maintain_rollup
        self._copy_insert_sql = copy_insert_sql(rollup=maintain_rollup)
        # Without ON CONFLICT: about a fifth less database work, and correct while no key is
        # stored twice — the primary key refuses a duplicate, and the flush is redone with
        # ON CONFLICT DO NOTHING (see _write).
        self._copy_insert_new_sql = _insert(
            _FROM_STAGE, _NOTHING_SKIPPED, rollup=maintain_rollup, on_conflict=False
        )
        self._conflicts_until = 0.0
        self._values_sql: dict[int, bytes] = {}
        self._max_queued = max_queued_events
        self._flush_max = flush_max_events
        self._flush_interval = flush_interval
        self._writers = max(1, writers)
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._has_work = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._flushing = 0
        self.committed_events = 0

    @property
    def queued_events(self) -> int:
        return self._queued_events

    @property
    def closing(self) -> bool:
        return self._closing

    def has_room(self, events: int = 1) -> bool:
        return self._queued_events + events <= self._max_queued

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

    def check_open(self, events: int = 1) -> None:
        """Refuse early (before a body is read and validated) what submit would refuse."""
        if self._closing:
            raise ServiceUnavailable("the service is shutting down; retry shortly", retry_after=2)
        if not self.has_room(events):
            raise ServiceUnavailable("ingest queue is full; retry shortly", retry_after=1)

    async def submit(self, rows: Sequence[EventRow]) -> WriteResult:
        """Queue rows and wait until they are committed (or refused)."""
        return await self.submit_prepared(prepare_rows(rows))

    async def submit_prepared(self, prepared: PreparedRows) -> WriteResult:
        """Queue prepared rows and wait until they are committed (or refused)."""
        if not prepared.keys:
            return WriteResult(inserted=())
        self.check_open(len(prepared))
        pending = _Pending(prepared=prepared, future=asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._queued_events += len(prepared)
        metrics.set_ingest_queue(self._queued_events)
        self._has_work.set()
        # Not shielded, and it need not be: cancelling this wait (a client gone) cancels only
        # the future; the rows stay queued or in flight and are committed with the others.
        return await pending.future

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
            # Group commit: with no other flush running, the database is idle and waiting would
            # only add latency; while one runs, wait a little so more requests share this one.
            if (
                self._flushing
                and self._flush_interval > 0
                and self._queued_events < self._flush_max
                and not self._closing
            ):
                await asyncio.sleep(self._flush_interval)
            batch = self._take()
            if not batch:
                continue
            self._flushing += 1
            try:
                with metrics.observe_flush(sum(len(pending.prepared) for pending in batch)):
                    await self._flush(batch, slot)
            finally:
                self._flushing -= 1

    def _take(self) -> list[_Pending]:
        """Whole requests up to the flush size and MAX_DAYS_PER_FLUSH days. A request sharing a
        key with one already taken waits for the next flush, so every key appears once per
        statement and the first request to send a key owns it."""
        batch: list[_Pending] = []
        keys: set[EventKey] = set()
        days: set[int] = set()
        taken = 0
        while self._queue:
            pending = self._queue[0]
            prepared = pending.prepared
            if batch and (
                prepared.parts
                or taken + len(prepared) > self._flush_max
                or not keys.isdisjoint(prepared.unique)
                or len(days | prepared.days) > MAX_DAYS_PER_FLUSH
            ):
                break
            self._queue.popleft()
            batch.append(pending)
            keys.update(prepared.unique)
            days.update(prepared.days)
            taken += len(prepared)
            if prepared.parts:  # a wide request is flushed alone
                break
        self._queued_events -= taken
        metrics.set_ingest_queue(self._queued_events)
        if not self._queue and not self._closing:
            self._has_work.clear()
        return batch

    async def _flush(self, batch: list[_Pending], slot: _Slot) -> None:
        try:
            skipped = await self._write_with_retry(batch, slot)
        except AppError as exc:
            if len(batch) > 1 and not isinstance(exc, ServiceUnavailable):
                # One request's bad data must not fail the others it shared a commit with:
                # halve the flush until the refused request stands alone (a queue worker's
                # flush is thousands of one-event requests: log2 of that, not thousands).
                middle = len(batch) // 2
                await self._flush(batch[:middle], slot)
                await self._flush(batch[middle:], slot)
                return
            metrics.record_flush_failure(sum(len(pending.prepared) for pending in batch))
            for pending in batch:
                _resolve(pending, exc)
            return
        except Exception as exc:  # never leave a request waiting forever
            log.exception("ingest flush failed")
            metrics.record_flush_failure(sum(len(pending.prepared) for pending in batch))
            for pending in batch:
                _resolve(pending, ServiceUnavailable(f"ingest failed: {type(exc).__name__}"))
            return
        for pending in batch:
            prepared = pending.prepared
            if skipped:
                flags = tuple(
                    f and key not in skipped for f, key in zip(prepared.first, prepared.keys, strict=True)
                )
            else:
                flags = prepared.first
            self.committed_events += sum(flags)
            _resolve(pending, WriteResult(flags))

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
                # The database's text names values and statement parameters: it goes to the
                # log, never to the client (validation should have refused such a row).
                detail = exc.orig if isinstance(exc, DBAPIError) else exc
                sqlstate = getattr(detail, "sqlstate", None)
                log.warning(
                    "flush refused by the database sqlstate=%s error=%s", sqlstate, type(detail).__name__
                )
                raise BadRequest(
                    "an event was refused by the database; check its values",
                    detail={"sqlstate": sqlstate} if sqlstate else None,
                ) from exc
        raise ServiceUnavailable("database busy; retry shortly", retry_after=1)

    async def _connection(self, slot: _Slot) -> psycopg.AsyncConnection[Any]:
        # Each writer keeps one connection: no pool checkout or pre-ping round trip per flush.
        # Autocommit: the small path's single statement is its own transaction; the COPY path
        # opens one explicitly.
        if slot.conn is None:
            slot.conn = await self._engine.connect()
            slot.staged = False
            fairy = await slot.conn.get_raw_connection()
            pg = cast(psycopg.AsyncConnection[Any], fairy.driver_connection)
            if pg.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await pg.rollback()
            await pg.set_autocommit(True)
        fairy = await slot.conn.get_raw_connection()
        return cast(psycopg.AsyncConnection[Any], fairy.driver_connection)

    async def _discard(self, slot: _Slot) -> None:
        """After a failure the connection's state is unknown: invalidate it, reconnect next time."""
        conn, slot.conn = slot.conn, None
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception:  # closing a broken connection must not mask the first error
                log.debug("discarding writer connection failed", exc_info=True)

    async def _copy(
        self, pg: psycopg.AsyncConnection[Any], blobs: list[bytes], slot: _Slot, insert_sql: str
    ) -> set[EventKey]:
        """COPY the encoded rows into the staging table and move them into `event`, in one
        transaction."""
        async with pg.transaction(), pg.cursor() as cur:
            if not slot.staged:
                await cur.execute(_STAGE_DDL)
            async with cur.copy(_COPY_SQL) as copy:
                await copy.write(_COPY_HEADER)
                for blob in blobs:
                    await copy.write(blob)
                await copy.write(_COPY_TRAILER)
            await cur.execute(insert_sql)
            skipped = {(r[0], r[1]) for r in await cur.fetchall()}
        slot.staged = True
        return skipped

    async def _copy_new_or_not(
        self, pg: psycopg.AsyncConnection[Any], blobs: list[bytes], slot: _Slot
    ) -> set[EventKey]:
        if time.monotonic() < self._conflicts_until:
            return await self._copy(pg, blobs, slot, self._copy_insert_sql)
        try:
            return await self._copy(pg, blobs, slot, self._copy_insert_new_sql)
        except pg_errors.UniqueViolation:
            # An event was stored before (a retry): this flush, and the next ones for a while,
            # go through ON CONFLICT DO NOTHING, which skips and reports it.
            log.debug("duplicate in a flush; ON CONFLICT for %.0f s", _CONFLICTS_MEMORY)
            self._conflicts_until = time.monotonic() + _CONFLICTS_MEMORY
            return await self._copy(pg, blobs, slot, self._copy_insert_sql)

    def _values_insert(self, rows: int) -> bytes:
        sql = self._values_sql.get(rows)
        if sql is None:
            text = _insert(_values_source(rows), " SELECT id, time FROM inserted", rollup=self._rollup)
            sql = self._values_sql[rows] = text.encode()
        return sql

    async def _write(self, batch: list[_Pending], slot: _Slot) -> set[EventKey]:
        """Store the batch; the keys it did not insert (already stored)."""
        started = time.perf_counter()
        total = sum(len(p.prepared.unique) for p in batch)
        small = total <= SMALL_FLUSH_ROWS and all(
            p.prepared.copy_data is None and not p.prepared.parts for p in batch
        )
        pg = await self._connection(slot)
        try:
            if small:
                params = [value for p in batch for row in p.prepared.rows for value in row]
                async with psycopg.AsyncRawCursor(pg) as cur:
                    await cur.execute(self._values_insert(total), params)
                    inserted = {(r[0], r[1]) for r in await cur.fetchall()}
                skipped = {key for p in batch for key in p.prepared.unique if key not in inserted}
            elif batch[0].prepared.parts:
                wide = batch[0]
                for part in wide.prepared.parts[wide.parts_done :]:  # one transaction each
                    wide.parts_skipped |= await self._copy_new_or_not(pg, [part], slot)
                    wide.parts_done += 1
                skipped = wide.parts_skipped
            else:
                blobs = [
                    p.prepared.copy_data
                    if p.prepared.copy_data is not None
                    else encode_copy_rows(p.prepared.rows)
                    for p in batch
                ]
                skipped = await self._copy_new_or_not(pg, blobs, slot)
        except BaseException:
            await self._discard(slot)
            raise
        log.debug(
            "flush rows=%d skipped=%d requests=%d ms=%.1f",
            total,
            len(skipped),
            len(batch),
            (time.perf_counter() - started) * 1000,
        )
        return skipped


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
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "unavailable"
    if isinstance(original, psycopg.Error) and original.sqlstate:
        # The server answered: unavailable only when it is going away or not accepting
        # connections (class 08, 57P0x). Anything else — out of memory or locks (class 53), a
        # bad value — retried would fail again, so it is the request's to fix, not to retry.
        state = original.sqlstate
        return "unavailable" if state.startswith("08") or state in _SERVER_GOING else "rejected"
    if isinstance(original, _UNAVAILABLE):
        return "unavailable"
    return "rejected"
