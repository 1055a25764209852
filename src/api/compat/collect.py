"""POST /collect: the camelCase collector, with nested batches and query-parameter fallback."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from src.api.compat.service import collect_events, ingest_all_or_nothing, now_iso
from src.api.config import get_settings
from src.api.errors import InvalidParameter
from src.api.events.schemas import PagelessEventCreate
from src.api.ingest.body import read_json_body
from src.api.ingest.service import IngestDep, RequestContextDep, batch_size_guard

router = APIRouter(tags=["compat"])


@router.post("/collect")
async def collect(request: Request, ingest: IngestDep, context: RequestContextDep) -> dict[str, object]:
    settings = get_settings()
    body = await read_json_body(request, allow_empty=True)
    if body is None:
        body = dict(request.query_params)
        if not body:
            raise InvalidParameter(("body",), "send a JSON event, or the event as query parameters")
    if not isinstance(body, dict):
        raise InvalidParameter(("body",), "must be a JSON object", None)
    events = collect_events(body)
    batch_size_guard(len(events), settings.batch_max_events)
    # Custom events need no page: without path and url they are stored with the empty page.
    first_id, count, client_id = await ingest_all_or_nothing(
        ingest, events, context, model=PagelessEventCreate, what="events"
    )
    return {
        "status": "success",
        "message": f"{count} event(s) received and stored",
        "events_processed": count,
        "event_id": str(first_id),
        "client_id": client_id,  # as the replaced collector answered: whose site it is
        "timestamp": now_iso(),
    }


@router.options("/collect")
async def collect_preflight(request: Request) -> Response:
    # The CORS middleware answers real preflights (with Origin); this answers bare OPTIONS
    # probes — with `*` only while sites are not authorized (then any origin may send).
    headers = {"Allow": "POST, OPTIONS"}
    if request.app.state.settings.site_authorization == "off":
        headers.update(
            {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type",
            }
        )
    return Response(status_code=204, headers=headers)
