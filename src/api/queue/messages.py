"""One message is one event row, JSON-encoded with its column names.

One event per message, not one request: the broker deduplicates per event (the id below), a
row the database refuses is dead-lettered alone, and workers batch messages as they please.

Columns by name, not by position: while an upgrade rolls out, API processes and workers of two
versions share the stream. A column the message lacks (published before it existed) is null; a
column the worker does not know (published by a newer API) makes the message malformed, so it
is dead-lettered, not stored without that value, and can be replayed once the workers are
upgraded.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import orjson
from psycopg.types.json import Jsonb

from src.api.events.models import EVENT_COPY_COLUMNS
from src.api.ingest.writer import EventRow

FORMAT_VERSION = 1
_COLUMNS = frozenset(EVENT_COPY_COLUMNS)
_TIME_COLUMNS = frozenset(("time", "received_at", "updated_at"))


class MalformedMessage(ValueError):
    """A payload that is not an event row of this format: it can never be stored as it is."""


def _default(value: object) -> object:
    if isinstance(value, Jsonb):  # properties, wrapped for the writer's jsonb column
        return value.obj
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_row(row: EventRow) -> bytes:
    # orjson writes UUIDs and aware datetimes (RFC 3339, microseconds) natively; properties
    # were proven encodable by orjson when they were validated. Nulls are left out.
    event = {name: value for name, value in zip(EVENT_COPY_COLUMNS, row, strict=True) if value is not None}
    return orjson.dumps({"v": FORMAT_VERSION, "event": event}, default=_default)


def _value(name: str, value: object) -> object:
    if value is None:
        return None
    if name == "id":
        return uuid.UUID(str(value))
    if name in _TIME_COLUMNS:
        return datetime.fromisoformat(str(value))
    if name == "properties":
        return Jsonb(value)
    return value


def decode_row(payload: bytes) -> EventRow:
    try:
        message = orjson.loads(payload)
        if not isinstance(message, dict) or message.get("v") != FORMAT_VERSION:
            raise MalformedMessage(f"not an event message of format {FORMAT_VERSION}")
        event = message["event"]
        if not isinstance(event, dict) or "id" not in event or "time" not in event:
            raise MalformedMessage("not an event: needs at least id and time")
        unknown = set(event) - _COLUMNS
        if unknown:
            raise MalformedMessage(f"columns this worker does not know: {', '.join(sorted(unknown))}")
        return tuple(_value(name, event.get(name)) for name in EVENT_COPY_COLUMNS)
    except MalformedMessage:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedMessage(f"undecodable payload: {type(exc).__name__}") from None


def message_id(row: EventRow) -> str:
    """The event's key (id, time) as the broker's deduplication id (Nats-Msg-Id)."""
    return f"{row[0]}@{row[1].isoformat()}"


def encode_rows(rows: Sequence[EventRow]) -> list[tuple[str, bytes]]:
    return [(message_id(row), encode_row(row)) for row in rows]
