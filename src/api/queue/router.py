"""GET /queue/status, GET /queue/dlq, POST /queue/dlq/replay."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from src.api.auth.dependencies import AdminDep
from src.api.errors import NotFound, ServiceUnavailable
from src.api.queue.broker import Broker, BrokerUnavailable
from src.api.queue.schemas import DeadLetterList, QueueStatus, ReplayResult

router = APIRouter(prefix="/queue", tags=["queue"])


async def get_broker(request: Request) -> Broker | None:
    broker: Broker | None = getattr(request.app.state, "broker", None)
    return broker


async def require_broker(broker: Annotated[Broker | None, Depends(get_broker)]) -> Broker:
    if broker is None:
        raise NotFound("queue mode is off (INGEST_QUEUE=none)")
    return broker


OptionalBrokerDep = Annotated[Broker | None, Depends(get_broker)]
BrokerDep = Annotated[Broker, Depends(require_broker)]


async def queue_status(broker: Broker | None) -> QueueStatus:
    if broker is None:
        return QueueStatus(mode="none", connected=False)
    return await broker.status()


@router.get("/status", response_model=QueueStatus)
async def read_status(broker: OptionalBrokerDep) -> QueueStatus:
    return await queue_status(broker)


@router.get("/dlq", response_model=DeadLetterList)
async def read_dead_letters(
    broker: BrokerDep, _admin: AdminDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> DeadLetterList:
    """The oldest dead letters, payloads included (events' data: an admin's, once keys exist)."""
    try:
        letters, total = await broker.dead_letters(limit)
    except BrokerUnavailable as exc:
        raise ServiceUnavailable(f"the event queue is unavailable: {exc}", retry_after=2) from None
    return DeadLetterList(dead_letters=letters, total=total)


@router.post("/dlq/replay", response_model=ReplayResult)
async def replay_dead_letters(
    broker: BrokerDep, _admin: AdminDep, limit: Annotated[int, Query(ge=1, le=100_000)] = 1000
) -> ReplayResult:
    """Re-queue dead letters (oldest first) after the cause is fixed; they are delivered to
    the workers again like new messages."""
    try:
        replayed, remaining = await broker.replay(limit)
    except BrokerUnavailable as exc:
        raise ServiceUnavailable(f"the event queue is unavailable: {exc}", retry_after=2) from None
    return ReplayResult(replayed=replayed, remaining=remaining)
