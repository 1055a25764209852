"""POST /event: the queued service's shape, {site_id, event_type, path, user_id, timestamp}."""

from __future__ import annotations

from fastapi import APIRouter, Request

from src.api.compat.service import ingest_all_or_nothing, queued_event
from src.api.errors import InvalidParameter
from src.api.events.schemas import PagelessEventCreate
from src.api.ingest.body import read_json_body
from src.api.ingest.service import IngestDep, RequestContextDep

router = APIRouter(tags=["compat"])


@router.post("/event")
async def post_event(request: Request, ingest: IngestDep, context: RequestContextDep) -> dict[str, str]:
    body = await read_json_body(request)
    if not isinstance(body, dict):
        raise InvalidParameter(("body",), "must be a JSON object", None)
    event_id, _, _ = await ingest_all_or_nothing(
        ingest, [queued_event(body)], context, model=PagelessEventCreate, what="event"
    )
    return {"status": "accepted", "event_id": str(event_id)}
