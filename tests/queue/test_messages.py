"""A message is an event row that comes back exactly as the writer takes it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from psycopg.types.json import Jsonb

from src.api.events.models import EVENT_COPY_COLUMNS
from src.api.events.schemas import EventCreate
from src.api.ingest.rows import RequestContext, build_row
from src.api.queue.messages import MalformedMessage, decode_row, encode_row, message_id


def test_a_row_with_every_field_round_trips() -> None:
    event = EventCreate.model_validate(
        {
            "event_id": "order-1",
            "time": "2026-11-20T10:00:00.123456Z",
            "site_id": "shop",
            "url": "https://shop.example/cart?x=1",
            "referrer": "https://www.google.com/",
            "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Mobile/15E148 Safari/604.1",
            "duration": 12,
            "properties": {"nested": {"list": [1, 2.5, None, "ü"]}, "flag": True},
            "user_id": "u1",
        }
    )
    context = RequestContext(user_agent=None, client_ip="203.0.113.9", received_at=datetime.now(UTC))
    row = build_row(event, context)
    back = decode_row(encode_row(row))
    assert [type(v) for v in back] == [type(v) for v in row]
    assert [v.obj if isinstance(v, Jsonb) else v for v in back] == [v.obj if isinstance(v, Jsonb) else v for v in row]
    assert message_id(back) == message_id(row)


def test_a_message_from_before_a_column_existed_reads_it_as_null() -> None:
    payload = b'{"v": 1, "event": {"id": "6f1c1c5e-8a57-4a53-9d7e-3c1d0f3b7a11", "time": "2026-11-20T10:00:00+00:00", "page": "/"}}'
    row = decode_row(payload)
    assert row[2:] == tuple(None if i != EVENT_COPY_COLUMNS.index("page") - 2 else "/" for i in range(len(row) - 2))


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b"[1]",
        b'{"v": 2, "event": {}}',
        b'{"v": 1, "event": {"page": "/"}}',
        b'{"v": 1, "event": {"id": "x", "time": "2026-11-20T10:00:00+00:00"}}',
        b'{"v": 1, "event": {"id": "6f1c1c5e-8a57-4a53-9d7e-3c1d0f3b7a11", "time": "yesterday"}}',
        b'{"v": 1, "event": {"id": "6f1c1c5e-8a57-4a53-9d7e-3c1d0f3b7a11", "time": "2026-11-20T10:00:00+00:00", "colour": "red"}}',
    ],
)
def test_anything_else_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_row(payload)
