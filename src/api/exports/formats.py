"""File formats of the exports: JSON lines (`.json`, one object per line as the old system
named its files; `.json.gz` gzipped) and Parquet (typed columns, zstd). Writers append batches
of rows to a local file, so a run never holds more than one batch in memory; readers give a
file's rows back in batches, for processing."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol, cast

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from src.api.config import ExportFormat
from src.api.events.models import EVENT_COPY_COLUMNS

# The exported columns: every column of `event`, in the writer's order. `properties` travels as
# JSON text (a JSON object in .json files, a string column in Parquet).
COLUMNS: tuple[str, ...] = EVENT_COPY_COLUMNS
_TIMES = frozenset(("time", "received_at", "updated_at"))
_PROPERTIES = COLUMNS.index("properties")
Row = Sequence[Any]  # one value per COLUMNS

_UTC_MICROS = pa.timestamp("us", tz="UTC")
_ARROW_TYPES: dict[str, pa.DataType] = {
    "time": _UTC_MICROS,
    "received_at": _UTC_MICROS,
    "updated_at": _UTC_MICROS,
    "is_bot": pa.bool_(),
    "duration": pa.int32(),
}
_NOT_NULL = frozenset(
    (
        "id",
        "time",
        "site_id",
        "event_type",
        "page",
        "os",
        "browser",
        "device",
        "is_bot",
        "referrer_domain",
        "duration",
        "received_at",
        "updated_at",
    )
)
PARQUET_SCHEMA = pa.schema(
    [pa.field(name, _ARROW_TYPES.get(name, pa.string()), nullable=name not in _NOT_NULL) for name in COLUMNS]
)


def extension(file_format: ExportFormat, gzipped: bool) -> str:
    if file_format == "parquet":
        return ".parquet"
    return ".json.gz" if gzipped else ".json"


def content_type(file_format: ExportFormat) -> str:
    return "application/vnd.apache.parquet" if file_format == "parquet" else "application/x-ndjson"


class FileWriter(Protocol):
    def write(self, rows: Sequence[Row]) -> None: ...

    def close(self) -> None: ...


class JsonLinesWriter:
    def __init__(self, path: Path, gzipped: bool) -> None:
        raw: IO[bytes] = path.open("wb")
        # Level 6, gzip's own default: most of level 9's size at a fraction of its time.
        self._out: IO[bytes] = (
            cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0))
            if gzipped
            else raw
        )
        self._raw = raw

    def write(self, rows: Sequence[Row]) -> None:
        lines = []
        for row in rows:
            item = dict(zip(COLUMNS, row, strict=True))
            properties = row[_PROPERTIES]
            if isinstance(properties, str):
                # Stored JSON, as the database wrote it: embedded, not parsed and re-encoded.
                item["properties"] = orjson.Fragment(properties)
            lines.append(orjson.dumps(item))
        if lines:
            self._out.write(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        self._out.close()
        if self._out is not self._raw:
            self._raw.close()


class ParquetFileWriter:
    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(str(path), PARQUET_SCHEMA, compression="zstd")

    def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        arrays = []
        for index, name in enumerate(COLUMNS):
            values = columns[index]
            if name == "id":
                values = tuple(str(value) for value in values)
            elif name in _TIMES:
                values = tuple(datetime.fromisoformat(v) if isinstance(v, str) else v for v in values)
            elif name == "properties":
                values = tuple(
                    v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values
                )
            arrays.append(pa.array(values, type=PARQUET_SCHEMA.field(name).type))
        self._writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=PARQUET_SCHEMA))

    def close(self) -> None:
        self._writer.close()


def open_writer(path: Path, file_format: ExportFormat, gzipped: bool) -> FileWriter:
    if file_format == "parquet":
        return ParquetFileWriter(path)
    return JsonLinesWriter(path, gzipped)


def read_rows(path: Path, key: str, batch: int = 5000) -> Iterator[list[dict[str, Any]]]:
    """The rows of an export file, in batches of dicts (by the key's extension)."""
    if key.endswith(".parquet"):
        for record_batch in pq.ParquetFile(str(path)).iter_batches(batch_size=batch):
            yield record_batch.to_pylist()
        return
    with path.open("rb") as raw:
        stream = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if key.endswith(".gz") else raw
        rows: list[dict[str, Any]] = []
        for line in stream:
            if line.strip():
                rows.append(orjson.loads(line))
            if len(rows) >= batch:
                yield rows
                rows = []
        if rows:
            yield rows


def as_row(item: dict[str, Any]) -> tuple[Any, ...]:
    """A row read back from a file, as writers take it."""
    properties = item.get("properties")
    if properties is not None and not isinstance(properties, str):
        properties = orjson.dumps(properties).decode()
    return tuple(properties if name == "properties" else item.get(name) for name in COLUMNS)
