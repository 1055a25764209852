"""The original /api/events API: create, batch, read, delete, and page/OS buckets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import ORJSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

from src.api.auth.dependencies import AdminDep, IngestKeyDep, StatsReadDep
from src.api.config import get_settings
from src.api.db.engine import SessionDep, TimescaleDep
from src.api.errors import InvalidParameter, NotFound
from src.api.events import repository
from src.api.events.schemas import BatchResult, EventBucket, EventCreate, EventPublic
from src.api.ingest.body import check_json_media_type, read_json_body
from src.api.ingest.service import (
    IngestDep,
    RequestContextDep,
    batch_size_guard,
    get_ingest_service,
    request_context,
    row_to_dict,
)
from src.api.ingest.single import single_event_app
from src.api.stats.params import QueryText, parse_interval, parse_range
from src.api.stats.service import page_os_buckets

router = APIRouter(prefix="/api/events", tags=["events"])

DEFAULT_PAGES: tuple[str, ...] = (
    "/",
    "/about",
    "/pricing",
    "/contact",
    "/blog",
    "/products",
    "/login",
    "/register",
    "/services",
    "/support",
    "/dashboard",
    "/settings",
)


class EventIdConvertor(StringConvertor):
    """A path segment that is not the name of a sibling route. With a plain `{event_id}`,
    GET /api/events/batch is GET /api/events/{event_id} with a bad id (422); excluded here, it
    is the batch route's wrong method (405). Any other segment still reaches the route, whose
    UUID validation names a bad id."""

    regex = "(?!batch$)[^/]+"


register_url_convertor("event_id", EventIdConvertor())


def _json_body_only(route_app: ASGIApp) -> ASGIApp:
    """The route's app behind the ingest routes' content-type rule (src/api/ingest/body.py):
    415 before the body is read; text/plain (sendBeacon) and any +json type parsed as JSON."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        for index, (name, value) in enumerate(headers):
            if name == b"content-type":
                check_json_media_type(value.decode("latin-1"))
                media_type = value.split(b";", 1)[0].strip().lower()
                # FastAPI parses only application/json and application/*+json bodies as JSON.
                if not media_type.startswith(b"application/"):
                    headers = [*headers[:index], (name, b"application/json"), *headers[index + 1 :]]
                    scope = {**scope, "headers": headers}
                break
        await route_app(scope, receive, send)

    return app


class SingleEventRoute(APIRoute):
    """The hottest route: plain events are answered in front of FastAPI (src/api/ingest/single.py);
    what that leaves to FastAPI meets the same content-type rule as every ingest route."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = single_event_app(_json_body_only(self.app))


async def create_event(event: EventCreate, request: Request) -> Response:
    # What the fast path leaves here: services come straight off app.state and the stored row
    # is serialised as is, skipping dependency solving and response-model re-validation.
    ingest = await get_ingest_service(request)
    row, _ = await ingest.ingest_one(event, await request_context(request))
    return ORJSONResponse(row_to_dict(row))


router.add_api_route(
    "", create_event, methods=["POST"], response_model=EventPublic, route_class_override=SingleEventRoute
)


@router.post("/batch", response_model=BatchResult)
async def create_events(
    request: Request, ingest: IngestDep, context: RequestContextDep, access: IngestKeyDep
) -> BatchResult:
    settings = get_settings()
    context = access.ingest_context(context)
    body = await read_json_body(request)
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise InvalidParameter(("body", "events"), "must be a list of events", None)
    batch_size_guard(len(items), settings.batch_max_events)
    outcome = await ingest.ingest_batch(items, context)
    return outcome.result()


@router.get("", response_model=list[EventBucket])
async def read_event_buckets(
    session: SessionDep,
    timescale: TimescaleDep,
    access: StatsReadDep,
    duration: Annotated[QueryText, Query(max_length=32)] = "1 day",
    pages: Annotated[list[QueryText] | None, Query(max_length=200)] = None,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> list[EventBucket]:
    interval = parse_interval(duration, "duration")
    window = parse_range(start, end)
    return await page_os_buckets(
        session,
        timescale,
        interval,
        window,
        list(pages) if pages else list(DEFAULT_PAGES),
        sites=access.sites,
    )


@router.get("/{event_id:event_id}", response_model=EventPublic)
async def read_event(event_id: uuid.UUID, session: SessionDep, access: StatsReadDep) -> EventPublic:
    event = await repository.get_event(session, event_id, get_settings().stored_since(datetime.now(UTC)))
    if event is None:
        raise NotFound(f"Event {event_id} not found")
    access.check_site(event.site_id)  # it holds the visitor's address and User-Agent
    return EventPublic.model_validate(event, from_attributes=True)


class DeleteResult(BaseModel):
    detail: str


@router.delete("/{event_id:event_id}", response_model=DeleteResult)
async def delete_event(
    event_id: uuid.UUID, session: SessionDep, timescale: TimescaleDep, access: AdminDep
) -> dict[str, str]:
    if access.sites is not None:
        event = await repository.get_event(session, event_id, get_settings().stored_since(datetime.now(UTC)))
        if event is None:
            raise NotFound(f"Event {event_id} not found")
        access.check_site(event.site_id)
    deleted = await repository.delete_event(
        session,
        event_id,
        get_settings().stored_since(datetime.now(UTC)),
        maintain_rollup=not timescale.has_continuous_aggregates,
    )
    if not deleted:
        raise NotFound(f"Event {event_id} not found")
    return {"detail": f"Event {event_id} deleted"}
