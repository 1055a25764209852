"""The import loop: a file's records through the one ingestion path — the batch API's validation
(or, for the NATS-based system's shape, that of its API, `POST /events`) and the group-commit
writer — a batch at a time.

Reading and validating a batch (in a thread) overlaps with the writer committing the batches
before it; at most `in_flight` batches wait for their commit, so memory stays the same for a
file of any size. Re-running an import stores nothing twice: every row's key is fixed by the
file (its id and time; a row without an id gets one made from its content), and the writer skips
keys that are stored, reporting them as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Protocol

import orjson

from src.api.compat.service import InterviewEventCreate
from src.api.config import Settings
from src.api.db.engine import create_engine
from src.api.db.timescale import setup_database
from src.api.errors import AppError, BadRequest, ServiceUnavailable, UnreadableFile
from src.api.events.schemas import EventCreate
from src.api.imports.reader import EventFile, FieldError, Record
from src.api.ingest.access import create_access
from src.api.ingest.rows import RequestContext
from src.api.ingest.service import IngestService, create_writer
from src.api.ingest.writer import EventRow, PreparedRows, WriteResult, prepare_rows

# Ids made from a row's content live in a namespace of their own: the same content imported
# twice is the same event, and never the same as an API client's string id.
IMPORT_NAMESPACE = uuid.UUID("c945c912-471f-45e2-9ec6-097a1aa2e768")
MAX_REPORTED_REJECTS = 10
_TIME_FIELDS = ("time", "timestamp")
_NO_TIME = (FieldError("time", "required for import"),)


@dataclass(frozen=True)
class ImportOptions:
    site_id: str = "default"  # for rows that carry none
    batch_size: int = 5000
    in_flight: int = 3  # batches submitted to the writer and not yet committed, at most


@dataclass(frozen=True, slots=True)
class Reject:
    line: int
    errors: tuple[FieldError, ...]

    def __str__(self) -> str:
        return f"line {self.line}: " + "; ".join(str(error) for error in self.errors)


@dataclass
class ImportCounts:
    read: int = 0  # records read (lines, for NDJSON; header and blank lines aside)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0

    @property
    def done(self) -> int:
        """Records with an outcome: committed, found stored before, or rejected."""
        return self.accepted + self.duplicates + self.rejected


@dataclass
class ImportReport:
    counts: ImportCounts = field(default_factory=ImportCounts)
    first_rejects: list[Reject] = field(default_factory=list)  # by line, at most MAX_REPORTED_REJECTS
    seconds: float = 0.0
    # Why the import stopped before the end of the file (the file or the database failed).
    # Whatever was committed stays; a re-run reports it as duplicates.
    stopped: AppError | None = None

    def reject(self, rejects: Iterable[Reject]) -> None:
        for reject in rejects:
            self.counts.rejected += 1
            if len(self.first_rejects) < MAX_REPORTED_REJECTS:
                self.first_rejects.append(reject)

    def add(self, written: WriteResult) -> None:
        self.counts.accepted += written.accepted
        self.counts.duplicates += written.duplicates

    @property
    def rate(self) -> float:
        """Records done per second."""
        return self.counts.done / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _Batch:
    read: int
    prepared: PreparedRows
    # Kept until the commit: should the database refuse one, the rows are written one by one,
    # so the others are stored and the refused one is reported by its line.
    rows: list[EventRow]
    lines: list[int]  # of each row
    rejects: list[Reject]


def content_id(item: dict[str, Any]) -> uuid.UUID:
    """A row's id when it has none: the same content (its site included) is the same event."""
    return uuid.uuid5(IMPORT_NAMESPACE, orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode())


class _Batches:
    """Reads and validates the next batch of records. Runs in a worker thread, one call at a
    time (the records are a generator over the open file)."""

    def __init__(
        self,
        records: Iterator[Record],
        ingest: IngestService,
        options: ImportOptions,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._records = records
        self._ingest = ingest
        self._options = options
        self._failure: UnreadableFile | None = None
        self._loop = loop  # where site decisions are made (they are async; this is a thread)

    def next(self) -> _Batch | None:
        if self._failure is not None:
            raise self._failure
        # Received now: the retention window and "at most an hour ahead" are judged per batch.
        context = RequestContext(user_agent=None, client_ip=None, received_at=datetime.now(UTC), trusted=True)
        site_id = self._options.site_id
        # Per model: the items and their lines. The NATS system's events are validated as its
        # API validates them (event_id and occurred_at required, no page needed), the others as
        # the batch API does (page or url required), plus a time.
        groups: dict[type[EventCreate], tuple[list[dict[str, Any]], list[int]]] = {}
        rejects: list[Reject] = []
        read = 0
        try:
            for record in islice(self._records, self._options.batch_size):
                read += 1
                if record.errors:
                    rejects.append(Reject(record.line, record.errors))
                    continue
                item = record.fields
                if item.get("site_id") in (None, ""):
                    item["site_id"] = site_id
                if record.nats_shape:
                    model: type[EventCreate] = InterviewEventCreate
                else:
                    model = EventCreate
                    # Without a time the service would stamp the import's own: every re-run
                    # would store the row again, at another time.
                    if all(item.get(name) in (None, "") for name in _TIME_FIELDS):
                        rejects.append(Reject(record.line, _NO_TIME))
                        continue
                    if item.get("id") in (None, ""):
                        item["id"] = content_id(item)
                items, lines = groups.setdefault(model, ([], []))
                items.append(item)
                lines.append(record.line)
        except UnreadableFile as exc:
            if read == 0:
                raise
            self._failure = exc  # store what was read before it; stop at the next call
        if read == 0:
            return None
        rows: list[EventRow] = []
        row_lines: list[int] = []
        for model, (items, lines) in groups.items():
            # Site authorization and privacy levels, as on every ingest route (none while off).
            access = None
            if self._ingest.access is not None and self._loop is not None:
                prepared = self._ingest.prepare_access(items, context)
                access = asyncio.run_coroutine_threadsafe(prepared, self._loop).result()
            valid, rejected = self._ingest.validate_items(items, context, model, access)
            refused = {r.index for r in rejected}
            rows.extend(valid)  # in item order, the rejected left out
            row_lines.extend(line for index, line in enumerate(lines) if index not in refused)
            rejects.extend(
                Reject(lines[r.index], tuple(FieldError(e["field"], e["message"]) for e in r.errors))
                for r in rejected
            )
        rejects.sort(key=lambda r: r.line)
        return _Batch(read, prepare_rows(rows), rows, row_lines, rejects)


async def _settle(
    batch: _Batch, written: asyncio.Task[WriteResult], ingest: IngestService, report: ImportReport
) -> None:
    try:
        report.add(await written)
    except BadRequest:
        # The database refused a row that validation let through (it should not happen): find
        # it, and store the rest.
        for row, line in zip(batch.rows, batch.lines, strict=True):
            try:
                report.add(await ingest.writer.submit_prepared(prepare_rows((row,), encode=False)))
            except BadRequest as exc:
                report.reject([Reject(line, (FieldError(None, f"refused by the database: {exc}"),))])


class Progress(Protocol):
    """Told about the report as the import goes (often: it decides itself what to show), and
    when the import is over."""

    def __call__(self, report: ImportReport) -> None: ...

    def finish(self) -> None: ...


async def import_records(
    records: Iterator[Record],
    ingest: IngestService,
    options: ImportOptions | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Validate and store every record; the counts, the first rejects, and why it stopped early
    (if it did)."""
    options = options or ImportOptions()
    report = ImportReport()
    started = time.monotonic()
    batches = _Batches(records, ingest, options, asyncio.get_running_loop())
    waiting: deque[tuple[_Batch, asyncio.Task[WriteResult]]] = deque()

    def notify() -> None:
        report.seconds = time.monotonic() - started
        if progress is not None:
            progress(report)

    reading = asyncio.create_task(asyncio.to_thread(batches.next))
    try:
        while True:
            if len(waiting) >= options.in_flight:
                # Full: wait for the oldest commit while the next batch is being read.
                await _settle(*waiting.popleft(), ingest, report)
                notify()
                continue
            batch = await reading
            if batch is None:
                break
            report.counts.read += batch.read
            report.reject(batch.rejects)
            waiting.append((batch, asyncio.create_task(ingest.writer.submit_prepared(batch.prepared))))
            reading = asyncio.create_task(asyncio.to_thread(batches.next))
            notify()
        while waiting:
            await _settle(*waiting.popleft(), ingest, report)
            notify()
    except (UnreadableFile, ServiceUnavailable) as exc:
        report.stopped = exc
        # What was submitted is committed or failed; count what was committed.
        for _, written in waiting:
            with contextlib.suppress(AppError):
                report.add(await written)
    finally:
        if not reading.done():  # a thread cannot be cancelled: let it finish its batch
            with contextlib.suppress(Exception):
                await reading
    report.first_rejects.sort(key=lambda r: r.line)
    notify()
    if progress is not None:
        progress.finish()
    return report


async def import_file(
    events: EventFile,
    settings: Settings,
    options: ImportOptions | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """What a worker does at start (wait for the database, migrate under the lock), then the
    import through a writer of its own, built as the app builds its writer."""
    engine = create_engine(settings)
    try:
        timescale = await setup_database(engine, settings)
        writer = create_writer(engine, settings, timescale)
        writer.start()
        access = create_access(engine, settings)
        try:
            ingest = IngestService(writer, settings, access)
            return await import_records(events.records(), ingest, options, progress)
        finally:
            await writer.stop()
            if access.authorizer.remote is not None:
                await access.authorizer.remote.close()
    finally:
        await engine.dispose()
