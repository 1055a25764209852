"""From request items to committed rows: request context, validation, admission, the writer call."""

from __future__ import annotations

import asyncio
import gc
import hmac
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Scope

from src.api.config import Settings, TrustedProxies, get_settings
from src.api.db.schema import TimescaleInfo
from src.api.errors import BadRequest, ServiceUnavailable
from src.api.events.enrichment import valid_ip
from src.api.events.schemas import BatchRejected, BatchResult, EventCreate
from src.api.ingest.access import IngestAccess, RequestAccess, refusal_error, refusal_item_errors, site_ids_of
from src.api.ingest.rows import RequestContext, build_row, fast_row, row_to_dict, time_bounds
from src.api.ingest.writer import EventRow, IngestWriter, PreparedRows, WriteResult, prepare_rows
from src.api.metrics import instruments as metrics
from src.api.sites.service import SiteRefusal

__all__ = [
    "BatchOutcome",
    "IngestDep",
    "IngestService",
    "RequestContext",
    "RequestContextDep",
    "batch_size_guard",
    "build_row",
    "client_ip_of",
    "context_of_scope",
    "create_writer",
    "get_ingest_service",
    "request_context",
    "row_to_dict",
    "tune_garbage_collector",
    "validation_errors",
]

_ADAPTERS: dict[type[EventCreate], TypeAdapter[EventCreate]] = {}


def _adapter(model: type[EventCreate]) -> TypeAdapter[EventCreate]:
    if model not in _ADAPTERS:
        _ADAPTERS[model] = TypeAdapter(model)
    return _ADAPTERS[model]


# Peers and forwarded addresses repeat (a proxy, a NAT, a returning visitor): parse each once.
_cached_ip = lru_cache(maxsize=4096)(valid_ip)


@lru_cache(maxsize=1024)
def _is_trusted(peer: str | None, proxies: TrustedProxies) -> bool:
    return proxies.trusts(peer)


def _client_ip(
    peer: str | None, forwarded: str | None, real_ip: str | None, trusted_proxies: TrustedProxies
) -> str | None:
    if (forwarded or real_ip) and _is_trusted(peer, trusted_proxies):
        if forwarded:
            for candidate in forwarded.split(","):
                ip = _cached_ip(candidate)
                if ip:
                    return ip
        if real_ip:
            ip = _cached_ip(real_ip)
            if ip:
                return ip
    return _cached_ip(peer)


def client_ip_of(request: Request, trusted_proxies: TrustedProxies) -> str | None:
    """The first valid X-Forwarded-For address, else X-Real-IP — both only from a trusted
    peer — else the peer itself. Invalid values are skipped, never an error."""
    peer = request.client.host if request.client else None
    headers = request.headers
    return _client_ip(peer, headers.get("x-forwarded-for"), headers.get("x-real-ip"), trusted_proxies)


def _valid_key(presented: bytes, keys: tuple[str, ...]) -> bool:
    return any(hmac.compare_digest(presented, key.encode()) for key in keys)


async def request_context(request: Request) -> RequestContext:
    return context_of_scope(request.scope)


def context_of_scope(scope: Scope) -> RequestContext:
    # One pass over the raw headers: every request pays for this, and starlette's Headers
    # scans the whole list again for each lookup.
    user_agent = forwarded = real_ip = api_key = origin = None
    for name, value in scope["headers"]:
        if name == b"user-agent":
            user_agent = value.decode("latin-1")
        elif name == b"x-forwarded-for":
            # Repeated headers are one comma-separated list (RFC 9110).
            text = value.decode("latin-1")
            forwarded = text if forwarded is None else f"{forwarded},{text}"
        elif name == b"x-real-ip" and real_ip is None:
            real_ip = value.decode("latin-1")
        elif name == b"x-api-key":
            api_key = value
        elif name == b"origin":
            origin = value.decode("latin-1")
    client = scope.get("client")
    peer = client[0] if client else None
    settings = get_settings()
    proxies = settings.trusted_proxies
    # A body's ip_address is a claim about someone else: believed from a trusted proxy, or
    # from a client holding an ingest key (a server-side forwarder), never from a browser.
    trusted = _is_trusted(peer, proxies) or (
        api_key is not None and bool(settings.api_keys) and _valid_key(api_key, settings.api_keys)
    )
    return RequestContext(
        user_agent=user_agent[:1024].replace("\x00", "") if user_agent else None,
        client_ip=_client_ip(peer, forwarded, real_ip, proxies),
        received_at=datetime.now(UTC),
        trusted=trusted,
        origin=origin,
    )


RequestContextDep = Annotated[RequestContext, Depends(request_context)]

# Below this many items validation takes a few milliseconds at most and stays on the loop.
_INLINE_ITEMS = 200
_MESSAGES = {"string_pattern_mismatch": "must not contain NUL characters"}
_NOT_AN_OBJECT = [{"field": "body", "message": "each event must be a JSON object", "type": "type_error"}]


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
class ValidatedItems:
    """What a request's items became: the rows ready for the writer (not the rows themselves,
    which are dropped once encoded), and the rejects by index."""

    prepared: PreparedRows
    rejected: list[BatchRejected]
    first_id: uuid.UUID | None  # the id of the first valid item
    first_client_id: str | None = None  # its client company (null while sites are not authorized)
    refused: tuple[SiteRefusal, ...] = ()  # items site authorization refused (also in `rejected`)

    @property
    def count(self) -> int:
        return len(self.prepared)


@dataclass(frozen=True)
class BatchOutcome:
    written: WriteResult
    rejected: list[BatchRejected]

    def result(self) -> BatchResult:
        return BatchResult(
            accepted=self.written.accepted,
            duplicates=self.written.duplicates,
            rejected=self.rejected,
        )


class IngestService:
    """The one ingestion path behind every collector shape.

    Admission keeps memory bounded: at most `ingest_queue_max_events` events are held between
    parsing and the answer (validated, queued or being committed), beyond which requests get
    503 with Retry-After before their body is read; the bytes of bodies (and of what they parse
    into) are bounded by the body guard's budget (src/api/ingest/budget.py).
    """

    def __init__(self, writer: IngestWriter, settings: Settings, access: IngestAccess | None = None) -> None:
        self.writer = writer
        self.settings = settings
        # Site authorization and privacy (src/api/ingest/access.py); None when neither is on.
        self.access = access if access is not None and access.active else None
        self.max_in_flight = settings.ingest_queue_max_events
        self.in_flight = 0

    # --- admission -------------------------------------------------------------------------

    def check_open(self) -> None:
        """Before a body is read: refuse at once what could not be queued anyway."""
        self.writer.check_open(0)
        if self.in_flight >= self.max_in_flight:
            raise ServiceUnavailable("ingest is at capacity; retry shortly", retry_after=1)

    @contextmanager
    def holding(self, events: int) -> Iterator[None]:
        """Hold `events` of the in-flight budget from validation until the answer."""
        self.writer.check_open(0)
        if self.in_flight > 0 and self.in_flight + events > self.max_in_flight:
            raise ServiceUnavailable("ingest is at capacity; retry shortly", retry_after=1)
        self.in_flight += events
        try:
            yield
        finally:
            self.in_flight -= events

    # --- validation ------------------------------------------------------------------------

    async def prepare_access(self, items: Sequence[object], context: RequestContext) -> RequestAccess | None:
        """The request's site decisions, made before its items are validated."""
        if self.access is None:
            return None
        return await self.access.prepare(site_ids_of(items), context)

    def validate_items(
        self,
        items: Sequence[object],
        context: RequestContext,
        model: type[EventCreate] = EventCreate,
        access: RequestAccess | None = None,
    ) -> tuple[list[EventRow], list[BatchRejected]]:
        """Rows for the valid items and, by index, why the others were rejected (invalid, or
        refused by site authorization: `access`)."""
        if access is not None:
            return self._admit(*self.validate_items(items, context, model), access)
        adapter = _adapter(model)
        fast = model is EventCreate
        earliest, latest = time_bounds(context.received_at)
        rows: list[EventRow] = []
        rejected: list[BatchRejected] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                rejected.append(BatchRejected(index=index, errors=list(_NOT_AN_OBJECT)))
                continue
            if fast:
                row = fast_row(item, context, earliest, latest)
                if row is not None:
                    rows.append(row)
                    continue
            try:
                event = adapter.validate_python(item)
            except ValidationError as exc:
                rejected.append(BatchRejected(index=index, errors=validation_errors(exc)))
                continue
            rows.append(build_row(event, context))
        return rows, rejected

    def _admit(
        self, rows: list[EventRow], rejected: list[BatchRejected], access: RequestAccess
    ) -> tuple[list[EventRow], list[BatchRejected]]:
        """The rows `access` admits; the refused join the rejected, by their item's index."""
        if not rows:
            return rows, rejected
        # Rows keep their items' order, so an item's index is found by skipping the rejected.
        rejected_at = {r.index for r in rejected}
        admitted: list[EventRow] = []
        refused: list[BatchRejected] = []
        index = -1
        for row in rows:
            index += 1
            while index in rejected_at:
                index += 1
            result = access.admit(row)
            if isinstance(result, tuple):
                admitted.append(result)
            else:
                access.refused.append(result)
                refused.append(BatchRejected(index=index, errors=refusal_item_errors(result)))
                if result.status_code == 503:
                    access.finish()
                    raise refusal_error(result)  # nothing unattributed is stored: retry all
        access.finish()
        if refused:
            rejected = sorted([*rejected, *refused], key=lambda r: r.index)
        return admitted, rejected

    def _validate_and_prepare(
        self,
        items: Sequence[object],
        context: RequestContext,
        model: type[EventCreate],
        access: RequestAccess | None,
    ) -> ValidatedItems:
        rows, rejected = self.validate_items(items, context, model, access)
        first_id = rows[0][0] if rows else None
        first_client = rows[0][22] if rows else None
        return ValidatedItems(
            prepared=prepare_rows(rows),
            rejected=rejected,
            first_id=first_id,
            first_client_id=first_client,
            refused=tuple(access.refused) if access is not None else (),
        )

    async def validate(
        self,
        items: Sequence[object],
        context: RequestContext,
        model: type[EventCreate] = EventCreate,
    ) -> ValidatedItems:
        """Validate, authorize, enrich and encode for COPY; large batches in a thread so the
        event loop keeps serving other requests meanwhile."""
        access = await self.prepare_access(items, context)
        if len(items) < _INLINE_ITEMS:
            return self._validate_and_prepare(items, context, model, access)
        return await asyncio.to_thread(self._validate_and_prepare, items, context, model, access)

    # --- writing ---------------------------------------------------------------------------

    async def ingest_one(self, event: EventCreate, context: RequestContext) -> tuple[EventRow, bool]:
        """The stored row, and whether it is new (False: that id and time were stored before)."""
        row = await self.admit_one(build_row(event, context), context)
        return row, await self.store_one(row)

    async def admit_one(self, row: EventRow, context: RequestContext) -> EventRow:
        """The row as site authorization and privacy let it be stored, or 403 / 503."""
        if self.access is None:
            return row
        access = await self.access.prepare((row[2],), context)
        (admitted,) = access.admit_all((row,))
        access.finish()
        return admitted

    async def store_one(self, row: EventRow) -> bool:
        """Commit one row; whether it is new."""
        written = await self.writer.submit_prepared(prepare_rows((row,), encode=False))
        metrics.record_written(written.accepted, written.duplicates)
        return written.inserted[0]

    async def ingest_rows(self, rows: Sequence[EventRow]) -> WriteResult:
        written = await self.writer.submit(rows)
        metrics.record_written(written.accepted, written.duplicates)
        return written

    async def ingest_batch(self, items: Sequence[object], context: RequestContext) -> BatchOutcome:
        """Per-item: valid items are stored, the others reported by index."""
        with self.holding(len(items)):
            validated = await self.validate(items, context)
            metrics.record_rejected(len(validated.rejected))
            written = await self.writer.submit_prepared(validated.prepared)
        metrics.record_written(written.accepted, written.duplicates)
        return BatchOutcome(written=written, rejected=validated.rejected)

    async def ingest_all(
        self,
        items: Sequence[object],
        context: RequestContext,
        model: type[EventCreate],
    ) -> tuple[ValidatedItems, WriteResult]:
        """All or nothing: when any item is invalid nothing is written (the result is empty)
        and the caller reports `rejected`."""
        with self.holding(len(items)):
            validated = await self.validate(items, context, model)
            if validated.refused:
                # An all-or-nothing request with a refused item is refused whole, naming the site.
                raise refusal_error(validated.refused[0])
            if validated.rejected:
                metrics.record_rejected(len(items))  # all or nothing: every item is refused
                return validated, WriteResult(inserted=())
            written = await self.writer.submit_prepared(validated.prepared)
        metrics.record_written(written.accepted, written.duplicates)
        return validated, written


def create_writer(engine: AsyncEngine, settings: Settings, timescale: TimescaleInfo) -> IngestWriter:
    """The writer as every process that ingests runs it: the app's lifespan and `src.cli import`.
    On Apache the ingest statement keeps the rollups itself (Community's aggregates follow)."""
    return IngestWriter(
        engine,
        maintain_rollup=not timescale.has_continuous_aggregates,
        max_queued_events=settings.ingest_queue_max_events,
        flush_max_events=settings.ingest_flush_max_events,
        flush_interval=settings.ingest_flush_interval,
        writers=settings.ingest_writers,
    )


GC_YOUNG_THRESHOLD = 10_000


def tune_garbage_collector() -> None:
    """Once the process has loaded what it keeps (libraries, User-Agent parsers, settings)."""
    # Freezing what exists now keeps it out of the cyclic GC's full collections, which
    # otherwise stall the event loop for tens of milliseconds (they were the p99 of the
    # single-event benchmark).
    gc.collect()
    gc.freeze()
    # A 10,000-event batch makes some 100,000 container objects that live until its commit; at
    # the default threshold (700) the young-generation collector walks them over and over,
    # about a quarter of the batch path's CPU. Refcounting frees almost all garbage anyway.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


async def get_ingest_service(request: Request) -> IngestService:
    service: IngestService = request.app.state.ingest
    return service


IngestDep = Annotated[IngestService, Depends(get_ingest_service)]


def batch_size_guard(count: int, limit: int) -> None:
    if count > limit:
        raise BadRequest(f"too many events: {count} in one request, the limit is {limit}")
