"""Streaming readers for files of events: CSV with a header line, and NDJSON (one JSON object a
line), either of them optionally gzipped (recognised by its first bytes, whatever its name).

A reader holds one line and one record at a time, so a file of any size is read in constant
memory. A record that cannot be read — not UTF-8, a line over `MAX_LINE_BYTES`, broken CSV, a
line that is not a JSON object, a `properties_json` that is not a JSON object — comes out with
its errors and its line number; it never stops the file. Only a file that cannot be opened or
read on (a truncated gzip stream, say) raises `UnreadableFile`.

Field names are the ingest API's: the canonical ones (`id`, `time`, `site_id`, `event_type`,
`page`, `url`, `user_id`, …) and the aliases `event_id`, `occurred_at` and `timestamp`. The
NATS-based system's export (`event_id,occurred_at,user_id,event_type,properties_json`) is read
as it is, `properties_json` (JSON text) becoming `properties`; a record in that shape is marked
`nats_shape`, so that it is validated as that system's API (`POST /events`) validates it.
"""

from __future__ import annotations

import csv
import gzip
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, cast

import orjson

from src.api.errors import UnreadableFile
from src.api.events.schemas import EventCreate

log = logging.getLogger(__name__)

ImportFormat = Literal["csv", "ndjson"]
FORMATS: dict[str, ImportFormat] = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}
# An event is at most ~64 KB of properties plus a few KB of text fields: a longer line is not an
# event, and reading it whole would hold an unbounded line in memory.
MAX_LINE_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
# The key of the NATS-based system's events; a file or line naming either is in its shape.
NATS_KEYS = frozenset({"event_id", "occurred_at"})
_JSON_COLUMNS = frozenset({"properties", "properties_json"})
COLUMNS = frozenset(EventCreate.model_fields) | NATS_KEYS | {"timestamp", "properties_json"}


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str | None  # None: the line as a whole
    message: str

    def __str__(self) -> str:
        return self.message if self.field is None else f"{self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Record:
    """One event of the file: the line it starts on, its fields, and why it cannot be read (if
    it cannot, `fields` is empty)."""

    line: int
    fields: dict[str, Any]
    nats_shape: bool = False  # names event_id / occurred_at: both are required, page is not
    errors: tuple[FieldError, ...] = ()


def format_of(path: Path) -> ImportFormat | None:
    """The format a file's name says: .csv, .ndjson or .jsonl, optionally followed by .gz."""
    name = path.name.lower().removesuffix(".gz")
    return next((fmt for suffix, fmt in FORMATS.items() if name.endswith(suffix)), None)


class _Lines:
    """The physical lines of a binary stream, decoded, counted. A line that is not UTF-8 or is
    longer than MAX_LINE_BYTES is given as an empty line and noted in `problems` by number, for
    the record it belongs to to be rejected."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream = stream
        self._name = name
        self.number = 0
        self.problems: dict[int, str] = {}

    def _read(self, limit: int) -> bytes:
        try:
            return self._stream.readline(limit)
        except (OSError, EOFError, zlib.error) as exc:  # a corrupt or truncated gzip stream
            raise UnreadableFile(f"cannot read {self._name} after line {self.number}: {exc}") from exc

    def __iter__(self) -> Iterator[str]:
        while raw := self._read(MAX_LINE_BYTES + 1):
            self.number += 1
            if len(raw) > MAX_LINE_BYTES:
                while raw and not raw.endswith(b"\n"):  # skip the rest of it, a bounded piece at a time
                    raw = self._read(MAX_LINE_BYTES)
                self.problems[self.number] = f"line longer than {MAX_LINE_BYTES} bytes"
                yield "\n"
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                self.problems[self.number] = f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
                yield "\n"
                continue
            yield text.removeprefix("\ufeff") if self.number == 1 else text

    def problem_in(self, first: int, last: int) -> str | None:
        """The first problem of lines first..last, forgetting those lines' problems."""
        found = None
        for number in range(first, last + 1):
            problem = self.problems.pop(number, None)
            found = found or problem
        return found


def _json_object(text: str, column: str) -> tuple[dict[str, Any] | None, FieldError | None]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return None, FieldError(column, f"not valid JSON ({exc})")
    if value is None:
        return None, None
    if not isinstance(value, dict):
        return None, FieldError(column, "must be a JSON object")
    return value, None


class EventFile:
    """An open file of events. Opening reads a CSV's header, so a file that is missing, not a
    file, or without a usable header fails before anything else happens."""

    def __init__(self, path: Path, format: ImportFormat | None = None) -> None:
        chosen = format or format_of(path)
        if chosen is None:
            raise UnreadableFile(
                f"cannot tell the format of {path} from its name (.csv, .ndjson, .jsonl, optionally .gz):"
                " pass --format csv or --format ndjson"
            )
        self.path = path
        self.format: ImportFormat = chosen
        try:
            self._raw = open(path, "rb")  # noqa: SIM115 - closed by close(), after the whole import
        except OSError as exc:
            raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from exc
        self._header: list[str] = []
        self._csv: Iterator[list[str]] | None = None
        try:
            self.size = path.stat().st_size
            self.compressed = self._raw.peek(2)[:2] == _GZIP_MAGIC
            stream: IO[bytes] = (
                cast(IO[bytes], gzip.GzipFile(fileobj=self._raw)) if self.compressed else self._raw
            )
            self._lines = _Lines(stream, str(path))
            if self.format == "csv":
                self._read_header()
        except OSError as exc:
            self.close()
            raise UnreadableFile(f"cannot read {path}: {exc.strerror or exc}") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> EventFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def fraction_read(self) -> float | None:
        """How far into the file (its bytes on disk) reading has got; None when unknown."""
        if not self.size:
            return None
        try:
            return min(1.0, self._raw.tell() / self.size)
        except (OSError, ValueError):  # closed meanwhile
            return None

    def _read_header(self) -> None:
        reader = csv.reader(self._lines)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise UnreadableFile(f"{self.path}: the header line is not valid CSV ({exc})") from exc
        if header is None:
            raise UnreadableFile(f"{self.path} is empty: a CSV file needs a header line")
        if self._lines.problem_in(1, self._lines.number):
            raise UnreadableFile(f"{self.path}: the header line is not valid UTF-8 or too long")
        header = [column.strip() for column in header]
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise UnreadableFile(f"{self.path}: column {', '.join(repeated)} appears more than once")
        if set(header) >= _JSON_COLUMNS:
            raise UnreadableFile(f"{self.path}: properties and properties_json are one field; keep one")
        known = [c for c in header if c in COLUMNS]
        if not known:
            raise UnreadableFile(
                f"{self.path}: no known column in the header line ({','.join(header)[:200]}); expected"
                " event_id,occurred_at,user_id,event_type,properties_json or the ingest API's names"
                " (id, time, site_id, event_type, page, url, user_id, …)"
            )
        unknown = [c for c in header if c not in COLUMNS]
        if unknown:
            log.warning("ignoring unknown columns: %s", ", ".join(unknown))
        self._header = header
        self._csv = reader

    def records(self) -> Iterator[Record]:
        """The file's records, in order (iterate once)."""
        if self.format == "csv":
            return self._csv_records()
        return self._ndjson_records()

    def _csv_records(self) -> Iterator[Record]:
        assert self._csv is not None
        reader, lines, header = self._csv, self._lines, self._header
        nats_shape = not NATS_KEYS.isdisjoint(header)
        width = len(header)
        consumed = lines.number
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a field over the csv module's limit, say
                first, consumed = consumed + 1, lines.number
                lines.problem_in(first, consumed)
                yield Record(first, {}, nats_shape, (FieldError(None, f"not valid CSV ({exc})"),))
                continue
            first, consumed = consumed + 1, lines.number
            problem = lines.problem_in(first, consumed)
            if problem:
                yield Record(first, {}, nats_shape, (FieldError(None, problem),))
                continue
            if not row:  # a blank line
                continue
            if len(row) != width:
                message = f"has {len(row)} fields, the header has {width}"
                yield Record(first, {}, nats_shape, (FieldError(None, message),))
                continue
            fields: dict[str, Any] = {}
            errors: list[FieldError] = []
            for column, value in zip(header, row, strict=True):
                if value == "" or column not in COLUMNS:
                    continue  # an empty cell is an absent field: its default applies
                if column in _JSON_COLUMNS:
                    properties, error = _json_object(value, column)
                    if error:
                        errors.append(error)
                    elif properties is not None:
                        fields["properties"] = properties
                else:
                    fields[column] = value
            if errors:
                yield Record(first, {}, nats_shape, tuple(errors))
            else:
                yield Record(first, fields, nats_shape)

    def _ndjson_records(self) -> Iterator[Record]:
        lines = self._lines
        for text in lines:
            number = lines.number
            problem = lines.problem_in(number, number)
            if problem:
                yield Record(number, {}, errors=(FieldError(None, problem),))
                continue
            if not text.strip():
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                yield Record(number, {}, errors=(FieldError(None, f"not valid JSON ({exc})"),))
                continue
            if not isinstance(value, dict):
                yield Record(number, {}, errors=(FieldError(None, "must be a JSON object"),))
                continue
            yield Record(number, value, not NATS_KEYS.isdisjoint(value))
