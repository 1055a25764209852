"""The batch fast path (fast_row) must accept exactly what EventCreate accepts and build the same
row as pydantic + build_row — or step aside (None) and let pydantic decide."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter, ValidationError

from src.api.events.schemas import _ID_NAMESPACE, EventCreate, _event_id
from src.api.ingest.rows import RequestContext, build_row, fast_row, time_bounds
from src.api.ingest.writer import EventRow
from tests.events.test_enrichment import AGENTS

ADAPTER = TypeAdapter(EventCreate)
NOW = datetime.now(UTC)
SOON = (NOW + timedelta(minutes=30)).isoformat()
LATE = (NOW + timedelta(hours=2)).isoformat()
UUID = str(uuid.uuid4())
IDS: list[object] = [
    None,
    UUID,
    UUID.upper(),
    "{" + UUID + "}",
    UUID.replace("-", ""),
    "urn:uuid:" + UUID,
    # 36 characters with dashes in place, but not 32 hex digits: a derived id, never a parse
    UUID[:9] + " " + UUID[10:],
    UUID[:9] + "g" + UUID[10:],
    UUID[:9] + "_" + UUID[10:],
    "+" + UUID[1:],
    "\u00e9" + UUID[1:],
    "order-1",
    123,
    True,
    1.5,
    "",
    " ",
    "x" * 300,
    {},
]
TIMES: list[object] = [
    None,
    "2026-03-04T05:06:07Z",
    "2026-03-04T05:06:07+05:30",
    "2026-03-04T05:06:07-08:00",
    "2026-03-04T05:06:07.123Z",
    "2026-03-04T05:06:07.123456+01:00",
    "2026-03-04T05:06:07.1234567Z",
    "2026-03-04T05:06:07",
    "2026-03-04 05:06:07",
    "2026-03-04t05:06:07",
    "2026-03-04",
    "2026-03-04T05:06",
    "2026-03-04T05:06:07+0100",
    "2026-03-04T05:06:07+24:00",
    "2026-13-04T05:06:07Z",
    "2026-02-30T05:06:07Z",
    "2026-03-04T24:00:00Z",
    "2026-03-04T23:59:60Z",
    "1969-12-31T23:59:59Z",
    "\uff11\uff19\uff17\uff10-01-01T00:00:00Z",  # full-width digits
    SOON,
    LATE,
    1_762_000_000,
    1_762_000_000_000,
    20_000_000_000,
    20_000_000_001,
    0,
    -5,
    1_762_000_000.5,
    "1762000000",
    True,
    "yesterday",
    10**30,
    [],
]
NAMES: list[object] = [None, "", "shop", "x" * 128, "x" * 129, "a\x00b", 5, "ünïcode"]
URLS: list[object] = [
    None,
    "https://a.example/p/q?x=1",
    "https://a.example",
    "",
    "not a url",
    "http://[::1",
    "x" * 4097,
    5,
]
PAGES: list[object] = [None, "", "/p", "x" * 2048, "x" * 2049, "/a\x00", 5]
IPS: list[object] = [None, "1.2.3.4", "bad", "::1", "[::1]:80", "1.2.3.4:80", "", "x" * 65, 5]
UA: list[object] = [None, AGENTS[0][0], AGENTS[8][0], "", "x" * 1025, 5]
REFERRERS: list[object] = [None, "https://www.google.com/", "", "nonsense", 5, "x" * 4097]
SHORT: list[object] = [None, "s1", "", "x" * 128, "x" * 129, 5, "a\x00"]
USERS: list[object] = [None, "u1", 42, True, 1.5, "x" * 129, -7]
DURATIONS: list[object] = [None, 0, 15, -1, 2**31 - 1, 2**31, 15.0, 15.5, "15", True]
DESCRIPTIONS: list[object] = [None, "d", "x" * 4097]
PROPERTIES: list[object] = [
    None,
    {},
    {"a": 1, "nested": {"b": [1, 2]}},
    {"big": "x" * 70_000},
    [],
    "str",
    {"n": "\x00"},
    {"huge": 2**70},
]
FIELDS: dict[str, list[object]] = {
    "id": IDS,
    "event_id": IDS,
    "time": TIMES,
    "timestamp": TIMES,
    "occurred_at": TIMES,
    "site_id": NAMES,
    "event_type": NAMES,
    "url": URLS,
    "page": PAGES,
    "ip_address": IPS,
    "user_agent": UA,
    "referrer": REFERRERS,
    "session_id": SHORT,
    "visitor_id": SHORT,
    "user_id": USERS,
    "duration": DURATIONS,
    "description": DESCRIPTIONS,
    "properties": PROPERTIES,
    "unknown": [1, "x", None],
}
CONTEXT = RequestContext(user_agent=AGENTS[2][0], client_ip="203.0.113.9", received_at=NOW)


def comparable(row: EventRow, generated_id: bool) -> list[object]:
    values: list[object] = list(row)
    if generated_id:
        assert isinstance(values[0], uuid.UUID) and values[0].version == 4
        values[0] = "generated"
    values[19] = getattr(values[19], "obj", values[19])
    return values


def check(item: dict[str, object]) -> bool | None:
    """Asserts agreement; None when pydantic rejects, else whether the fast path took the item."""
    fast = fast_row(item, CONTEXT, *time_bounds(CONTEXT.received_at))
    try:
        event = ADAPTER.validate_python(item)
    except ValidationError:
        assert fast is None, item
        return None
    if fast is None:
        return False
    slow = build_row(event, CONTEXT)
    generated = event.id is None
    assert comparable(fast, generated) == comparable(slow, generated), item
    return True


def test_fast_path_agrees_with_pydantic_on_random_items() -> None:
    rng = random.Random(11)
    outcomes: list[bool | None] = []
    for _ in range(5000):
        item = {name: rng.choice(values) for name, values in FIELDS.items() if rng.random() < 0.3}
        if rng.random() < 0.5:
            item.setdefault("page", "/p")
        outcomes.append(check(item))
    valid = [o for o in outcomes if o is not None]
    # Both kinds occur, and the fast path takes most valid items (the rest: floats, numeric
    # strings, exotic time formats, which pydantic handles).
    assert len(valid) > 200 and len(outcomes) - len(valid) > 200
    assert sum(valid) > 0.6 * len(valid)


def test_fast_path_takes_every_plain_item() -> None:
    plain = [
        {"page": "/"},
        {"url": "https://shop.example/cart?x=1"},
        {
            "id": UUID,
            "time": "2026-03-04T05:06:07.5+01:00",
            "site_id": "s",
            "event_type": "click",
            "page": "/a",
            "user_agent": AGENTS[1][0],
            "referrer": "https://news.example/x",
            "session_id": "s1",
            "visitor_id": "v1",
            "user_id": 7,
            "duration": 3,
            "properties": {"k": "v"},
            "ip_address": "198.51.100.2",
        },
        {"event_id": "order-9", "occurred_at": 1_762_000_000_000, "page": "/"},
        {"timestamp": "2026-03-04T05:06:07", "page": "/", "description": "d"},
    ]
    for item in plain:
        assert check(item), item


def test_boundaries_of_each_field() -> None:
    for name, values in FIELDS.items():
        for value in values:
            check({"page": "/", name: value})
            check({"url": "https://a.example/x", name: value})


def test_canonical_ids_parse_as_uuid_does() -> None:
    for value in [UUID, UUID.upper(), *(v for v in IDS if isinstance(v, str) and len(v) == 36)]:
        assert isinstance(value, str)
        try:
            expected = uuid.UUID(value)
        except ValueError:
            expected = uuid.uuid5(_ID_NAMESPACE, value)
        assert _event_id(value) == expected, value
        assert _event_id(value).bytes == expected.bytes
