"""The export pipeline's work: raw export runs (scheduled, on demand, backfills), processing
into per-client files, and the figures the status routes and metrics show.

One exporter at a time: every run holds a PostgreSQL advisory lock on a connection of its own
(across workers and processes); a second caller gets `ExportBusy`. The commit points are here
and nowhere else in the package: the run row is committed before any upload, each file's row
before its upload, and the watermark only after every file and the manifest are stored."""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from src.api.config import EPOCH, ExportFormat, ExportSettings, PrivacyLevel
from src.api.errors import AppError, BadGateway, Conflict
from src.api.exports import repository
from src.api.exports.destinations import Destination, open_destination
from src.api.exports.formats import FileWriter, as_row, content_type, extension, open_writer, read_rows
from src.api.exports.models import ExportRun
from src.api.exports.privacy import apply_client_privacy, level_of, site_levels

log = logging.getLogger(__name__)
_READ_BATCH = 5000  # rows fetched from the database (and encoded) at a time
_ERROR_CHARS = 500


class ExportBusy(Conflict):
    def __init__(self) -> None:
        super().__init__(
            "an export or processing run is in progress; retry shortly", headers={"Retry-After": "5"}
        )


class ExportFailed(BadGateway):
    pass


@dataclass(frozen=True)
class RunResult:
    run_id: int
    kind: str
    range_start: datetime
    range_end: datetime
    events: int
    files: list[str]
    manifest: str | None
    retried: bool


@dataclass(frozen=True)
class ProcessResult:
    raw_files: int
    events: int
    files: list[str] = field(default_factory=list)


def describe(exc: BaseException) -> str:
    """An error as the status shows it: its kind and text (destinations' errors carry no
    secrets; a database error's text would hold the statement, so only its kind is kept)."""
    module = type(exc).__module__
    if module.startswith(("sqlalchemy", "psycopg")):
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]


def stamp_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d_%H%M%S")


def dated(stamp: str) -> str:
    """'20250719_152643' -> '2025/07/19'."""
    return f"{stamp[0:4]}/{stamp[4:6]}/{stamp[6:8]}"


def part_key(base: str, part: int, suffix: str) -> str:
    """The first file of a run has the old system's name; further ones a part number."""
    return f"{base}{suffix}" if part == 1 else f"{base}_{part:04d}{suffix}"


def run_format(settings: ExportSettings) -> str:
    """A run's format as it records it: its files keep this name and form on every retry,
    whatever the settings say by then."""
    if settings.format == "jsonl" and settings.gzip:
        return "jsonl+gzip"
    return settings.format


def file_kind(recorded: str) -> tuple[ExportFormat, bool]:
    if recorded == "parquet":
        return "parquet", False
    return "jsonl", recorded == "jsonl+gzip"


def client_folder(client_id: str | None) -> str:
    """`client_<id>`, or `unassigned` while an event has no client; characters that a key or a
    path would read as structure are spelled out."""
    if not client_id:
        return "unassigned"
    safe = "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02X}" for c in client_id)
    return f"client_{safe}"


async def _offer(queue: asyncio.Queue[Any], item: Any, sink: asyncio.Task[None]) -> bool:
    """Put `item` on the queue, unless the task reading it ends first (then False)."""
    put = asyncio.ensure_future(queue.put(item))
    done, _ = await asyncio.wait({put, sink}, return_when=asyncio.FIRST_COMPLETED)
    if put in done:
        return True
    put.cancel()
    return False


class _Parts:
    """A run's rows into files of at most EXPORT_BATCH_SIZE rows: each written locally, its row
    recorded, then stored under its key."""

    def __init__(self, exporter: Exporter, run: ExportRun, base: str, suffix: str, path: Path) -> None:
        assert run.id is not None
        self.exporter = exporter
        self.run_id = run.id
        self.format, self.gzipped = file_kind(run.format)
        self.base, self.suffix, self.path = base, suffix, path
        self.files: list[dict[str, Any]] = []
        self.events = self.size = self.part = self.rows = 0
        self.writer: FileWriter | None = None

    async def drain(self, queue: asyncio.Queue[Sequence[Sequence[Any]] | None]) -> None:
        limit = self.exporter.settings.batch_size
        while (batch := await queue.get()) is not None:
            offset = 0
            while offset < len(batch):
                take = min(len(batch) - offset, limit - self.rows)
                await asyncio.to_thread(self._write, batch[offset : offset + take])
                offset += take
                if self.rows >= limit:
                    await self._store()
        if self.writer is not None:
            await self._store()

    def _write(self, rows: Sequence[Sequence[Any]]) -> None:
        """Blocking: rows into the current file (a new one after a stored one)."""
        if self.writer is None:
            self.part += 1
            self.writer = open_writer(self.path, self.format, self.gzipped)
        self.writer.write(rows)
        self.rows += len(rows)
        self.events += len(rows)

    async def _store(self) -> None:
        assert self.writer is not None
        writer, self.writer = self.writer, None
        await asyncio.to_thread(writer.close)
        key = part_key(self.base, self.part, self.suffix)
        length = self.path.stat().st_size
        async with self.exporter.engine.begin() as conn:
            await repository.record_file(conn, self.run_id, self.part, key, self.rows, length)
        await asyncio.to_thread(self.exporter.raw.put, key, self.path, content_type(self.format))
        self.files.append({"key": key, "rows": self.rows, "bytes": length})
        self.size += length
        self.rows = 0


class Exporter:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: ExportSettings,
        raw: Destination | None = None,
        processed: Destination | None = None,
        default_level: PrivacyLevel = "standard",
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.default_level = default_level  # DEFAULT_PRIVACY_LEVEL: sites the registry lacks
        self.raw = raw or open_destination(settings.raw, settings)
        self.processed = processed or open_destination(settings.processed, settings)

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if not await repository.try_lock(conn):
                raise ExportBusy()
            try:
                yield
            finally:
                await repository.unlock(conn)

    # --- raw export ------------------------------------------------------------------------

    async def run(self) -> list[RunResult]:
        """Finish the pending run if one failed, then export what arrived since; the runs done."""
        async with self._exclusive():
            results = []
            async with self.engine.begin() as conn:
                pending = await repository.pending_raw_run(conn)
            if pending is not None:
                results.append(await self._execute(pending, retried=True))
            async with self.engine.begin() as conn:
                run = await self._plan(conn)
            if run is not None:
                results.append(await self._execute(run, retried=False))
            return results

    async def _plan(self, conn: AsyncConnection) -> ExportRun | None:
        """The next run: events received since the watermark up to a few seconds ago, and late
        commits below it. Committed before anything is uploaded, so a retry repeats it."""
        mark = await repository.read_watermark(conn)
        horizon = await repository.capture_horizon(conn)
        until = (horizon.now - timedelta(seconds=self.settings.lag)).replace(microsecond=0)
        start = mark.exported_until if mark else EPOCH
        if until <= start:
            return None  # file names are stamped to the second: at most one run per second
        late_from = None
        if mark is not None:
            # Late commits: transactions open at the previous snapshot, or begun after it, whose
            # events were received before the watermark (at most EXPORT_LATE_WINDOW before
            # their transaction began: the ingest queue's wait).
            late_from = min(mark.exported_until, mark.open_since) - timedelta(
                seconds=self.settings.late_window
            )
        stamp = stamp_of(until)
        run = ExportRun(
            kind="raw",
            status="running",
            range_start=start,
            range_end=until,
            late_from=late_from,
            snapshot=horizon.snapshot,
            previous_snapshot=mark.snapshot if mark else None,
            open_since=horizon.open_since,
            stamp=stamp,
            prefix="",
            format=run_format(self.settings),
        )
        return await repository.create_run(conn, run)

    async def backfill(self, start: datetime, end: datetime) -> RunResult:
        """Events received in [start, end), as stored now, into backfill/<run id>/…; the
        watermark stays where it is."""
        async with self._exclusive():
            async with self.engine.begin() as conn:
                now = datetime.now(UTC)
                run = await repository.create_run(
                    conn,
                    ExportRun(
                        kind="backfill",
                        status="running",
                        range_start=start,
                        range_end=end,
                        stamp=stamp_of(now),
                        prefix="",
                        format=run_format(self.settings),
                    ),
                )
                assert run.id is not None
                run.prefix = f"backfill/{run.id}/"
                await repository.set_prefix(conn, run.id, run.prefix)
            return await self._execute(run, retried=False)

    async def _execute(self, run: ExportRun, *, retried: bool) -> RunResult:
        assert run.id is not None
        async with self.engine.begin() as conn:
            await repository.begin_attempt(conn, run.id)
        try:
            return await self._write(run, retried=retried)
        except Exception as exc:
            error = describe(exc)
            log.warning("export run failed run=%d kind=%s error=%s", run.id, run.kind, error)
            async with self.engine.begin() as conn:
                await repository.fail_run(conn, run.id, error)
            if isinstance(exc, AppError):
                raise
            raise ExportFailed(
                f"export run {run.id} failed: {error}", detail={"run_id": run.id, "error": error}
            ) from exc

    async def _write(self, run: ExportRun, *, retried: bool) -> RunResult:
        assert run.id is not None
        file_format, gzipped = file_kind(run.format)
        suffix = extension(file_format, gzipped)
        base = f"{run.prefix}{dated(run.stamp)}/raw_export_{run.stamp}"
        with tempfile.TemporaryDirectory(prefix="export-") as folder:
            parts = _Parts(self, run, base, suffix, Path(folder) / "part")
            # The database is read while the previous batch is encoded and stored: a queue of
            # two batches between them keeps both busy and the memory to three batches.
            queue: asyncio.Queue[Sequence[Sequence[Any]] | None] = asyncio.Queue(maxsize=2)
            sink = asyncio.create_task(parts.drain(queue))
            try:
                async with self.engine.connect() as conn:
                    async for batch in repository.stream_events(conn, run, _READ_BATCH):
                        if not await _offer(queue, batch, sink):
                            break  # the sink failed: its error is raised below
                if not sink.done():
                    await _offer(queue, None, sink)
                await sink
            finally:
                if not sink.done():
                    sink.cancel()
        files, events, size, part = parts.files, parts.events, parts.size, parts.part
        manifest_key = f"{base}.manifest.json"
        async with self.engine.begin() as conn:
            leftovers = await repository.leftover_files(conn, run.id, part)
        for key in leftovers:  # an earlier attempt wrote more parts (events deleted since)
            await asyncio.to_thread(self.raw.delete, key)
        if files:
            manifest = {
                "run_id": run.id,
                "kind": run.kind,
                "received_from": run.range_start,
                "received_until": run.range_end,
                "late_from": run.late_from,
                "format": run.format,
                "events": events,
                "files": files,
            }
            await asyncio.to_thread(
                self._put_bytes, manifest_key, orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
            )
        else:
            await asyncio.to_thread(self.raw.delete, manifest_key)  # an earlier attempt's
        async with self.engine.begin() as conn:
            await repository.finish_run(conn, run, events, len(files), size)
            if run.kind == "raw":
                await repository.move_watermark(conn, run)
        log.info("export run=%d kind=%s events=%d files=%d", run.id, run.kind, events, len(files))
        return RunResult(
            run_id=run.id,
            kind=run.kind,
            range_start=run.range_start,
            range_end=run.range_end,
            events=events,
            files=[item["key"] for item in files],
            manifest=manifest_key if files else None,
            retried=retried,
        )

    def _put_bytes(self, key: str, data: bytes) -> None:
        with tempfile.NamedTemporaryFile(prefix="manifest-") as handle:
            handle.write(data)
            handle.flush()
            self.raw.put(key, Path(handle.name), "application/json")

    # --- processing ------------------------------------------------------------------------

    async def process(self, limit: int = 1000) -> ProcessResult:
        """Split raw files not yet processed into per-client files (the client's privacy level
        applied), oldest first; a file is marked processed once all its outputs are stored."""
        async with self._exclusive():
            async with self.engine.begin() as conn:
                pending = await repository.unprocessed_files(conn, limit)
                levels = await site_levels(conn)
            events = done = 0
            keys: list[str] = []
            failures: list[dict[str, str]] = []
            for raw in pending:
                # A file that fails (its destination down, the file gone) keeps its error and
                # is tried again next time; the files after it are processed meanwhile.
                try:
                    outputs = await asyncio.to_thread(self._split, raw, levels)
                except Exception as exc:
                    error = describe(exc)
                    log.warning("processing failed raw=%s error=%s", raw.key, error)
                    async with self.engine.begin() as conn:
                        await repository.fail_processing(conn, raw, error)
                    failures.append({"raw_file": raw.key, "error": error})
                    continue
                async with self.engine.begin() as conn:
                    await repository.record_processed(conn, raw, outputs)
                done += 1
                events += sum(rows for _, _, rows in outputs)
                keys.extend(key for _, key, _ in outputs)
            if failures:
                raise ExportFailed(
                    f"processing failed for {len(failures)} of {len(pending)} raw files "
                    f"({done} processed): {failures[0]['error']}",
                    detail={"processed": done, "failed": failures},
                )
            return ProcessResult(raw_files=done, events=events, files=keys)

    def _split(self, raw: repository.RawFile, levels: dict[str, PrivacyLevel]) -> list[tuple[str, str, int]]:
        """Blocking: fetch one raw file, write one file per client, store them."""
        file_format = self.settings.format
        suffix = extension(file_format, self.settings.gzip)
        name = f"processed_{raw.stamp}" if raw.part == 1 else f"processed_{raw.stamp}_{raw.part:04d}"
        with tempfile.TemporaryDirectory(prefix="process-") as folder:
            source = Path(folder) / "raw"
            self.raw.fetch(raw.key, source)
            writers: dict[str, Any] = {}
            counts: dict[str, int] = {}
            for batch in read_rows(source, raw.key):
                grouped: dict[str, list[Sequence[Any]]] = {}
                for item in batch:
                    client_id = item.get("client_id")
                    grouped.setdefault(client_folder(client_id), []).append(
                        as_row(apply_client_privacy(item, level_of(item, levels, self.default_level)))
                    )
                for client, rows in grouped.items():
                    if client not in writers:
                        writers[client] = open_writer(Path(folder) / client, file_format, self.settings.gzip)
                        counts[client] = 0
                    writers[client].write(rows)
                    counts[client] += len(rows)
            outputs = []
            for client, writer in writers.items():
                writer.close()
                key = f"{client}/{dated(raw.stamp)}/{name}{suffix}"
                self.processed.put(key, Path(folder) / client, content_type(file_format))
                outputs.append((client, key, counts[client]))
            return outputs
