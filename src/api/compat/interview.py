"""POST /events: the interview API, {"events": [{event_id, occurred_at, user_id, event_type,
properties}]}, behind an `ingest` key once any key exists. Idempotent by (event_id, occurred_at)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from src.api.auth.dependencies import IngestKeyDep
from src.api.compat.service import InterviewEventCreate, ingest_all_or_nothing
from src.api.config import get_settings
from src.api.errors import InvalidParameter
from src.api.ingest.body import read_json_body
from src.api.ingest.service import IngestDep, RequestContextDep, batch_size_guard

router = APIRouter(tags=["compat"])


@router.post("/events")
async def post_events(
    request: Request, ingest: IngestDep, context: RequestContextDep, access: IngestKeyDep
) -> dict[str, object]:
    settings = get_settings()
    context = access.ingest_context(context)
    body = await read_json_body(request)
    items = body.get("events") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise InvalidParameter(("body", "events"), "must be a non-empty list of events", None)
    batch_size_guard(len(items), settings.batch_max_events)
    await ingest_all_or_nothing(ingest, items, context, model=InterviewEventCreate)
    return {
        "status": "accepted",
        "message": "Events queued for processing",
        "events_count": len(items),
    }
