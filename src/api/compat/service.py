"""Shape conversion for the collectors this service replaces. Each older API's body becomes the
canonical event fields; validation, enrichment and the commit are the one ingestion path's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import AliasChoices, Field

from src.api.errors import AppError, InvalidParameter
from src.api.events.schemas import (
    BatchRejected,
    EventCreate,
    EventId,
    EventTime,
    PagelessEventCreate,
)
from src.api.ingest.service import IngestService, RequestContext

# camelCase collector field → canonical field. snake_case spellings are accepted as they are.
_COLLECT_FIELDS: dict[str, str] = {
    "eventId": "id",
    "eventType": "event_type",
    "sessionId": "session_id",
    "visitorId": "visitor_id",
    "siteId": "site_id",
    "userId": "user_id",
    "timestamp": "time",
    "url": "url",
    "path": "page",
    "page": "page",
    "referrer": "referrer",
    "duration": "duration",
    "userAgent": "user_agent",
    "ip": "ip_address",
    "description": "description",
}
_CANONICAL = set(EventCreate.model_fields) | {"event_id", "timestamp", "occurred_at"}
# What a batch child takes from its parent when it does not say otherwise.
_INHERITED = ("session_id", "visitor_id", "site_id", "url", "page")


class Unprocessable(AppError):
    """Events of a request that is all-or-nothing were invalid; names each by index."""

    status_code = 422

    def __init__(self, rejected: Sequence[BatchRejected], what: str = "events") -> None:
        detail = [r.model_dump() for r in rejected]
        first = rejected[0]
        reason = "; ".join(f"{e['field']}: {e['message']}" for e in first.errors)
        super().__init__(f"{what}[{first.index}] is invalid: {reason}", detail=detail)


def collect_event(body: Mapping[str, Any]) -> dict[str, Any]:
    """One /collect object → canonical fields; the rest goes to `properties`."""
    event: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    event_data = body.get("eventData")
    if isinstance(event_data, dict):
        properties.update(event_data)
    elif event_data is not None:
        properties["eventData"] = event_data
    for key, value in body.items():
        if key in ("eventData", "events"):
            continue
        if key in _COLLECT_FIELDS:
            event[_COLLECT_FIELDS[key]] = value
        elif key in _CANONICAL:
            event.setdefault(key, value)
        else:
            # attribution and unknown fields are kept, never dropped; eventData wins on clashes.
            properties.setdefault(key, value)
    if isinstance(body.get("properties"), dict):
        properties = {**body["properties"], **properties}
    if properties:
        event["properties"] = properties
    event.pop("events", None)
    return event


def collect_events(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The parent and, for `eventType: batch`, its children, which inherit the parent's context."""
    parent = collect_event(body)
    events = [parent]
    if body.get("eventType", body.get("event_type")) == "batch":
        children = body.get("events")
        if not isinstance(children, list):
            raise InvalidParameter(("body", "events"), "a batch needs a list of events", None)
        for child in children:
            if not isinstance(child, dict):
                events.append(child)
                continue
            event = collect_event(child)
            own_url = "url" in event
            for name in _INHERITED:
                # A child with its own url takes its page from that url, not from the parent.
                if name == "page" and own_url:
                    continue
                if name not in event and name in parent:
                    event[name] = parent[name]
            events.append(event)
    return events


def queued_event(body: Mapping[str, Any]) -> dict[str, Any]:
    """/event: {site_id, event_type, path, user_id, timestamp} → canonical fields."""
    event = {key: value for key, value in body.items() if key != "path"}
    if "path" in body:
        event["page"] = body["path"]
    return event


class InterviewEventCreate(PagelessEventCreate):
    """/events item: event_id and occurred_at are its idempotency key, so both are required."""

    id: EventId = Field(validation_alias=AliasChoices("event_id", "id"))
    time: EventTime = Field(validation_alias=AliasChoices("occurred_at", "time", "timestamp"))


async def ingest_all_or_nothing(
    ingest: IngestService,
    items: Sequence[object],
    context: RequestContext,
    *,
    model: type[EventCreate] = EventCreate,
    what: str = "events",
) -> tuple[UUID, int, str | None]:
    """The older collectors have no per-item report: any invalid event makes the request a 422
    naming each invalid event by index (an unauthorized site: 403 naming it), and nothing of it
    is stored. Returns the first event's id, the number of events and the first event's client."""
    validated, _ = await ingest.ingest_all(items, context, model)
    if validated.rejected:
        raise Unprocessable(validated.rejected, what)
    assert validated.first_id is not None  # callers never send an empty list
    return validated.first_id, validated.count, validated.first_client_id


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
