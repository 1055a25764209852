"""The interface both brokers implement, as the API and the workers use it.

Delivery semantics (both brokers): at least once. A message leaves the broker only when a
worker acknowledges it after the commit; a worker that dies leaves its messages to others
after QUEUE_ACK_WAIT; the database's ON CONFLICT DO NOTHING makes a second delivery harmless.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from src.api.config import QueueSettings
from src.api.queue.messages import MalformedMessage, decode_row
from src.api.queue.schemas import DeadLetter, QueueStatus

# Dead letters carry these headers / fields.
REASON = "reason"
ATTEMPTS = "attempts"
SUBJECT = "subject"


class BrokerUnavailable(Exception):
    """The broker did not take (or did not confirm) the messages in time."""


@dataclass
class Delivery:
    """A message handed to a worker."""

    payload: bytes
    subject: str  # as published (the DLQ keeps it)
    deliveries: int  # 1 on the first delivery
    handle: object  # the broker's own reference (a NATS message, a Redis entry id)


class Broker(ABC):
    mode: str

    def __init__(self, settings: QueueSettings) -> None:
        self.settings = settings
        self.started = False  # connect() succeeded once (the client then reconnects itself)

    # --- connection -----------------------------------------------------------------------

    @abstractmethod
    async def connect(self) -> None:
        """Connect and declare the streams; raises when the broker cannot be reached."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """One round trip; raises BrokerUnavailable (and marks the broker down) when it fails."""

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    # --- the API side ---------------------------------------------------------------------

    @abstractmethod
    async def publish(self, route: str, messages: Sequence[tuple[str, bytes]]) -> tuple[bool, ...]:
        """Store (message id, payload) pairs durably; per message, False when the broker
        reports it a duplicate of one it already holds. Raises BrokerUnavailable."""

    # --- the worker side ------------------------------------------------------------------

    @abstractmethod
    async def join(self, consumer: str, lanes: int = 1) -> None:
        """Join the shared consumer (group) as `consumer`, with `lanes` fetches in flight."""

    @abstractmethod
    async def fetch(self, limit: int, timeout: float, lane: int = 0) -> list[Delivery]:
        """Up to `limit` messages, waiting at most `timeout` seconds for the first."""

    @abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    @abstractmethod
    async def retry(self, deliveries: Sequence[Delivery], delay: float) -> None:
        """Give the messages back for redelivery after `delay` seconds."""

    @abstractmethod
    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the message to the DLQ with the reason, attempts and subject, then ack it."""

    @abstractmethod
    async def leave(self) -> None:
        """Stop consuming: messages fetched and not acknowledged go back at once."""

    # --- status and the DLQ ---------------------------------------------------------------

    @abstractmethod
    async def status(self) -> QueueStatus: ...

    @abstractmethod
    async def dead_letters(self, limit: int) -> tuple[list[DeadLetter], int]:
        """The oldest `limit` dead letters and how many there are."""

    @abstractmethod
    async def replay(self, limit: int) -> tuple[int, int]:
        """Re-publish up to `limit` dead letters to their subject and delete them from the
        DLQ; (replayed, remaining)."""


def dead_letter_of(
    letter_id: str, payload: bytes, subject: str, reason: str, attempts: int, dead_at: datetime | None
) -> DeadLetter:
    event_id: str | None = None
    time: str | None = None
    try:
        row = decode_row(payload)
        event_id, time = str(row[0]), row[1].isoformat()
    except MalformedMessage:
        pass  # listed all the same, with its payload as it is
    return DeadLetter(
        id=letter_id,
        subject=subject,
        reason=reason,
        attempts=attempts,
        dead_at=dead_at,
        event_id=event_id,
        time=time,
        payload=payload.decode("utf-8", "replace"),
    )


def create_broker(settings: QueueSettings) -> Broker:
    if settings.mode == "nats":
        from src.api.queue.jetstream import JetStreamBroker

        return JetStreamBroker(settings)
    if settings.mode == "redis":
        from src.api.queue.streams import RedisStreamsBroker

        return RedisStreamsBroker(settings)
    raise ValueError(f"no broker for INGEST_QUEUE={settings.mode}")
