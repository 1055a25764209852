"""From validated events to committed rows: request context, enrichment, the writer call."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, Request
from psycopg.types.json import Jsonb
from pydantic import TypeAdapter, ValidationError

from src.api.config import Settings, get_settings
from src.api.errors import BadRequest
from src.api.events.enrichment import parse_user_agent, referrer_domain_of, valid_ip
from src.api.events.models import EVENT_COPY_COLUMNS
from src.api.events.schemas import BatchRejected, BatchResult, EventCreate
from src.api.ingest.writer import EventRow, IngestWriter, WriteResult

_ADAPTERS: dict[type[EventCreate], TypeAdapter[EventCreate]] = {}


def _adapter(model: type[EventCreate]) -> TypeAdapter[EventCreate]:
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the request itself says about the client, used when the body is silent."""

    user_agent: str | None
    client_ip: str | None
    received_at: datetime


@lru_cache(maxsize=64)
def _trusted_networks(
    proxies: tuple[str, ...],
) -> tuple[bool, tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]]:
    if any(p.strip() == "*" for p in proxies):
        return True, ()
    networks = tuple(ipaddress.ip_network(p.strip(), strict=False) for p in proxies if p.strip())
    return False, networks


def _is_trusted(peer: str | None, proxies: tuple[str, ...]) -> bool:
    trust_all, networks = _trusted_networks(proxies)
    if trust_all:
        return True
    if peer is None:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in network for network in networks)


def client_ip_of(request: Request, trusted_proxies: tuple[str, ...]) -> str | None:
    peer = request.client.host if request.client else None
    if _is_trusted(peer, trusted_proxies):
        for candidate in request.headers.get("x-forwarded-for", "").split(","):
            ip = valid_ip(candidate)
            if ip:
                return ip
        ip = valid_ip(request.headers.get("x-real-ip"))
        if ip:
            return ip
    return valid_ip(peer)


async def request_context(request: Request) -> RequestContext:
    settings = get_settings()
    user_agent = request.headers.get("user-agent")
    return RequestContext(
        user_agent=user_agent[:1024].replace("\x00", "") if user_agent else None,
        client_ip=client_ip_of(request, settings.trusted_proxies),
        received_at=datetime.now(UTC),
    )


RequestContextDep = Annotated[RequestContext, Depends(request_context)]


def build_row(event: EventCreate, context: RequestContext) -> EventRow:
    """The event's values in EVENT_COPY_COLUMNS order, enriched. The hot path of ingestion."""
    user_agent = event.user_agent if event.user_agent is not None else context.user_agent
    agent = parse_user_agent(user_agent)
    ip = valid_ip(event.ip_address) if event.ip_address else None
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
    )


def row_to_dict(row: EventRow) -> dict[str, Any]:
    """The stored event as EventPublic's fields, ready for orjson."""
    values = dict(zip(EVENT_COPY_COLUMNS, row, strict=True))
    properties = values["properties"]
    values["properties"] = properties.obj if isinstance(properties, Jsonb) else properties
    return values


# Below this many items validation takes under a few milliseconds and stays on the loop.
_INLINE_ITEMS = 200
_MESSAGES = {"string_pattern_mismatch": "must not contain NUL characters"}


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic errors as small JSON-safe dicts naming the field and the reason."""
    return [
        {
            "field": ".".join(str(p) for p in error["loc"]) or "body",
            "message": _MESSAGES.get(error["type"], error["msg"].removeprefix("Value error, ")),
            "type": error["type"],
        }
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


@dataclass(frozen=True)
class BatchOutcome:
    rows: list[EventRow]
    written: WriteResult
    rejected: list[BatchRejected]

    def result(self) -> BatchResult:
        return BatchResult(
            accepted=self.written.accepted,
            duplicates=self.written.duplicates,
            rejected=self.rejected,
        )


class IngestService:
    """The one ingestion path behind every collector shape."""

    def __init__(self, writer: IngestWriter, settings: Settings) -> None:
        self.writer = writer
        self.settings = settings

    async def ingest_one(self, event: EventCreate, context: RequestContext) -> tuple[EventRow, bool]:
        """The stored row, and whether it is new (False: that id and time were stored before)."""
        row = build_row(event, context)
        written = await self.writer.submit([row])
        return row, written.inserted[0]

    async def ingest_rows(self, rows: Sequence[EventRow]) -> WriteResult:
        return await self.writer.submit(rows)

    def validate_items(
        self,
        items: Sequence[object],
        context: RequestContext,
        model: type[EventCreate] = EventCreate,
    ) -> tuple[list[EventRow], list[BatchRejected]]:
        """Rows for the valid items and, by index, why the others were rejected."""
        adapter = _adapter(model)
        rows: list[EventRow] = []
        rejected: list[BatchRejected] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                rejected.append(
                    BatchRejected(
                        index=index,
                        errors=[
                            {
                                "field": "body",
                                "message": "each event must be a JSON object",
                                "type": "type_error",
                            }
                        ],
                    )
                )
                continue
            try:
                event = adapter.validate_python(item)
            except ValidationError as exc:
                rejected.append(BatchRejected(index=index, errors=validation_errors(exc)))
                continue
            rows.append(build_row(event, context))
        return rows, rejected

    async def validate_items_off_loop(
        self,
        items: Sequence[object],
        context: RequestContext,
        model: type[EventCreate] = EventCreate,
    ) -> tuple[list[EventRow], list[BatchRejected]]:
        """Large batches are validated in a thread so the event loop keeps serving others."""
        if len(items) < _INLINE_ITEMS:
            return self.validate_items(items, context, model)
        return await asyncio.to_thread(self.validate_items, items, context, model)

    async def ingest_batch(self, items: Sequence[object], context: RequestContext) -> BatchOutcome:
        rows, rejected = await self.validate_items_off_loop(items, context)
        written = await self.writer.submit(rows)
        return BatchOutcome(rows=rows, written=written, rejected=rejected)


async def get_ingest_service(request: Request) -> IngestService:
    service: IngestService = request.app.state.ingest
    return service


IngestDep = Annotated[IngestService, Depends(get_ingest_service)]


def batch_size_guard(count: int, limit: int) -> None:
    if count > limit:
        raise BadRequest(f"too many events: {count} in one request, the limit is {limit}")
