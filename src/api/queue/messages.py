"""One message is one event row (the writer's EVENT_COPY_COLUMNS order), JSON-encoded.

One event per message, not one request: the broker deduplicates per event (the id below), a
row the database refuses is dead-lettered alone, and workers batch messages as they please.
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
# The ingest routes, as the last token of a message's subject (shown in dead letters).
ROUTES = ("api", "batch", "collect", "event", "events", "import")
_UUID_COLUMNS = frozenset(i for i, c in enumerate(EVENT_COPY_COLUMNS) if c == "id")
_TIME_COLUMNS = frozenset(
    i for i, c in enumerate(EVENT_COPY_COLUMNS) if c in ("time", "received_at", "updated_at")
)
_PROPERTIES = EVENT_COPY_COLUMNS.index("properties")
_WIDTH = len(EVENT_COPY_COLUMNS)


class MalformedMessage(ValueError):
    """A payload that is not an event row of this format: it can never be stored."""


def _default(value: object) -> object:
    if isinstance(value, Jsonb):  # properties, wrapped for the writer's jsonb column
        return value.obj
    raise TypeError(f"cannot encode {type(value).__name__}")


def encode_row(row: EventRow) -> bytes:
    # orjson writes UUIDs and aware datetimes (RFC 3339, microseconds) natively; properties
    # were already proven encodable by orjson when they were validated.
    return orjson.dumps({"v": FORMAT_VERSION, "row": row}, default=_default)


def decode_row(payload: bytes) -> EventRow:
    try:
        message = orjson.loads(payload)
        values = message["row"]
        if message.get("v") != FORMAT_VERSION or not isinstance(values, list) or len(values) != _WIDTH:
            raise MalformedMessage(f"not an event row of format {FORMAT_VERSION}")
        return tuple(
            uuid.UUID(value)
            if i in _UUID_COLUMNS
            else datetime.fromisoformat(value)
            if i in _TIME_COLUMNS and value is not None
            else Jsonb(value)
            if i == _PROPERTIES and value is not None
            else value
            for i, value in enumerate(values)
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, MalformedMessage):
            raise
        raise MalformedMessage(f"undecodable payload: {type(exc).__name__}") from None


def message_id(row: EventRow) -> str:
    """The event's key (id, time) as the broker's deduplication id (Nats-Msg-Id)."""
    return f"{row[0]}@{row[1].isoformat()}"


def encode_rows(rows: Sequence[EventRow]) -> list[tuple[str, bytes]]:
    return [(message_id(row), encode_row(row)) for row in rows]
