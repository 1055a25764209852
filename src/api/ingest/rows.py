"""From a validated event, or straight from a plain JSON item, to the row the writer stores.

`fast_row` is the batch hot path: for an item made only of plain values — strings within their
limits, an integer duration, a canonical ISO 8601 or integer epoch time — it checks exactly what
`EventCreate` checks and builds the same row about four times faster than pydantic plus
`build_row`. Anything else (a float, a numeric string, an over-long or NUL-bearing string, an
invalid value) returns None and the item goes through pydantic, which decides and explains.
tests/ingest/test_rows.py holds the two paths to the same answers.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from src.api.events.enrichment import parse_user_agent, path_of, referrer_domain_of, valid_ip
from src.api.events.models import EVENT_COPY_COLUMNS
from src.api.events.schemas import MAX_FUTURE, EventCreate, _check_properties, _event_id, earliest_time
from src.api.ingest.writer import EventRow


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the request itself says about the client, used when the body is silent."""

    user_agent: str | None
    client_ip: str | None
    received_at: datetime
    trusted: bool = False  # the body's ip_address is believed (trusted proxy or ingest key)
    origin: str | None = None  # a browser's Origin header: checked against the site's hostnames
    key_sites: frozenset[str] | None = None  # the ingest key's sites (None: any, or no key)


def time_bounds(now: datetime) -> tuple[datetime, datetime]:
    """The earliest and latest acceptable event times at `now`."""
    return earliest_time(now), now + MAX_FUTURE


def build_row(event: EventCreate, context: RequestContext) -> EventRow:
    """The event's values in EVENT_COPY_COLUMNS order, enriched."""
    user_agent = event.user_agent if event.user_agent is not None else context.user_agent
    agent = parse_user_agent(user_agent)
    ip = valid_ip(event.ip_address) if event.ip_address and context.trusted else None
    properties = event.properties
    return (
        event.id or uuid.uuid4(),
        event.time or context.received_at,
        event.site_id,
        event.event_type,
        event.page,
        event.url,
        ip or context.client_ip,
        user_agent,
        agent.os,
        agent.browser,
        agent.device,
        agent.is_bot,
        event.referrer,
        referrer_domain_of(event.referrer),
        event.session_id,
        event.visitor_id,
        event.user_id,
        event.duration,
        event.description,
        Jsonb(properties) if properties is not None else None,
        context.received_at,
        context.received_at,
        None,  # client_id
    )


def row_to_dict(row: EventRow) -> dict[str, Any]:
    """The stored event as EventPublic's fields, ready for orjson."""
    values = dict(zip(EVENT_COPY_COLUMNS, row, strict=True))
    properties = values["properties"]
    values["properties"] = properties.obj if isinstance(properties, Jsonb) else properties
    return values


_MISSING: Any = object()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Pydantic reads integers above this as milliseconds, at or below it as seconds.
_MILLISECONDS_ABOVE = 20_000_000_000
# The ISO 8601 forms Python and pydantic parse alike; others go to pydantic.
_PLAIN_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
).fullmatch
_INT4_MAX = 2_147_483_647


def _text(value: object, limit: int) -> bool:
    """An optional string field of EventCreate that is valid as is."""
    return value is None or (type(value) is str and len(value) <= limit and "\x00" not in value)


def _name(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= 128 and "\x00" not in value


def _time(value: object, context: RequestContext, earliest: datetime, latest: datetime) -> datetime | None:
    if value is None:
        return context.received_at
    at: datetime
    if type(value) is str and _PLAIN_TIME(value):
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
    elif type(value) is int:
        try:
            if value > _MILLISECONDS_ABOVE:
                at = _EPOCH + timedelta(milliseconds=value)
            else:
                at = _EPOCH + timedelta(seconds=value)
        except OverflowError:
            return None
    else:
        return None
    if at < earliest or at > latest:
        return None
    return at


def fast_row(
    item: dict[str, Any], context: RequestContext, earliest: datetime, latest: datetime
) -> EventRow | None:
    """The row EventCreate and build_row make from a plain item, or None to let pydantic decide.
    `earliest` and `latest` bound the time (the retention's start, now + 1 hour); they are
    computed once per request (`time_bounds`)."""
    get = item.get
    value = get("id", _MISSING)
    if value is _MISSING:
        value = get("event_id")
    if value is None:
        event_id = uuid.uuid4()
    else:
        try:
            event_id = _event_id(value)
        except ValueError:
            return None
    value = get("time", _MISSING)
    if value is _MISSING:
        value = get("timestamp", _MISSING)
        if value is _MISSING:
            value = get("occurred_at")
    at = _time(value, context, earliest, latest)
    if at is None:
        return None
    site_id = get("site_id", "default")
    event_type = get("event_type", "pageview")
    url = get("url")
    page = get("page")
    ip_address = get("ip_address")
    user_agent = get("user_agent")
    referrer = get("referrer")
    session_id = get("session_id")
    visitor_id = get("visitor_id")
    user_id = get("user_id")
    duration = get("duration", 0)
    description = get("description")
    properties = get("properties")
    if not (
        _name(site_id)
        and _name(event_type)
        and _text(url, 4096)
        and _text(ip_address, 64)
        and _text(user_agent, 1024)
        and _text(referrer, 4096)
        and _text(session_id, 128)
        and _text(visitor_id, 128)
        and _text(description, 4096)
        and type(duration) is int
        and 0 <= duration <= _INT4_MAX
    ):
        return None
    if page is None:
        page = path_of(url)
        if page is None:
            return None
        page = page[:2048]
    elif type(page) is not str or not 0 < len(page) <= 2048 or "\x00" in page:
        return None
    if type(user_id) is int:
        user_id = str(user_id)
    elif not _text(user_id, 128):
        return None
    if properties is not None:
        if type(properties) is not dict:
            return None
        try:
            _check_properties(properties)
        except (ValueError, TypeError):
            return None
    if user_agent is None:
        user_agent = context.user_agent
    agent = parse_user_agent(user_agent)
    ip = valid_ip(ip_address) if ip_address and context.trusted else None
    return (
        event_id,
        at,
        site_id,
        event_type,
        page,
        url,
        ip or context.client_ip,
        user_agent,
        agent.os,
        agent.browser,
        agent.device,
        agent.is_bot,
        referrer,
        referrer_domain_of(referrer),
        session_id,
        visitor_id,
        user_id,
        duration,
        description,
        Jsonb(properties) if properties is not None else None,
        context.received_at,
        context.received_at,
        None,  # client_id
    )
