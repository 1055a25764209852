"""What /queue/* and /health's queue part answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class QueueStatus(BaseModel):
    mode: str  # none, nats or redis
    connected: bool
    stream: str | None = None
    depth: int = 0  # messages stored and not yet acknowledged (delivered or not)
    pending: int = 0  # delivered to a worker, not yet acknowledged
    redelivered: int = 0  # delivered more than once and not yet acknowledged
    consumers: int = 0
    dlq_depth: int = 0
    oldest_unprocessed_age_seconds: float | None = None
    durable: bool | None = None  # the broker keeps messages on disk
    error: str | None = None


class DeadLetter(BaseModel):
    id: str  # the dead letter's own id in the DLQ stream
    subject: str  # where the message was published
    reason: str
    attempts: int
    dead_at: datetime | None
    event_id: str | None
    time: str | None
    payload: str  # the message as published (JSON text)


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetter]
    total: int


class ReplayResult(BaseModel):
    replayed: int
    remaining: int
