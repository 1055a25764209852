"""NATS JetStream: the events stream, its durable pull consumer, and the dead-letter stream.

- `<stream>` (file storage, work-queue retention): subjects `<stream>.in.<route>`. A message is
  removed once a worker acknowledges it, so the stream's size is the backlog. Every message
  carries `Nats-Msg-Id` = the event's key: a publish retried within QUEUE_DUPLICATE_WINDOW is
  stored once and reported as a duplicate.
- the durable pull consumer `workers`: every worker process pulls from it, so JetStream hands
  each message to one of them (a queue group without push). Explicit acks, unlimited
  deliveries (a database that is down for an hour must not exhaust them: the worker counts
  deliveries itself and dead-letters only rows the database refuses), redelivery after
  QUEUE_ACK_WAIT when a worker goes silent, or after the backoff it asks for with NAK.
- `<stream>_dlq` (file storage, kept until replayed): subjects `<stream>.dlq.<route>`, with
  the reason, the attempt count and the original subject as headers.

A JetStream cluster (3 or 5 servers, QUEUE_REPLICAS = 3) is the distributed part: NATS_URL lists
its servers and the client fails over between them; a PubAck then means a majority stored it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from src.api.config import QueueSettings
from src.api.queue.broker import (
    ATTEMPTS,
    REASON,
    SUBJECT,
    Broker,
    BrokerUnavailable,
    Delivery,
    dead_letter_of,
)
from src.api.queue.schemas import DeadLetter, QueueStatus

log = logging.getLogger(__name__)

DURABLE = "workers"
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, OSError, asyncio.TimeoutError)


class JetStreamBroker(Broker):
    mode = "nats"

    def __init__(self, settings: QueueSettings) -> None:
        super().__init__(settings)
        self.name = settings.stream
        self.dlq_name = f"{settings.stream}_dlq"
        self.in_subjects = f"{settings.stream}.in.>"
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._subs: list[JetStreamContext.PullSubscription] = []

    # --- connection -----------------------------------------------------------------------

    async def connect(self) -> None:
        async def on_error(exc: Exception) -> None:
            log.warning("nats error=%s", type(exc).__name__)

        async def on_disconnected() -> None:
            log.warning("nats disconnected")

        async def on_reconnected() -> None:
            log.info("nats reconnected")

        nc = await nats.connect(
            servers=list(self.settings.nats_servers),
            name=f"event-analytics-{socket.gethostname()}-{os.getpid()}",
            connect_timeout=2,
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # for ever: the broker restarting is routine
            reconnect_time_wait=0.5,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        js = nc.jetstream(timeout=self.settings.publish_timeout, publish_async_max_pending=20_000)
        try:
            await self._declare(js)
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js = nc, js
        self.started = True

    async def _declare(self, js: JetStreamContext) -> None:
        """Create the streams, or bring an existing one to these settings."""
        streams = (
            StreamConfig(
                name=self.name,
                subjects=[self.in_subjects],
                storage=StorageType.FILE,
                retention=RetentionPolicy.WORK_QUEUE,
                duplicate_window=self.settings.duplicate_window,
                num_replicas=self.settings.replicas,
            ),
            StreamConfig(
                name=self.dlq_name,
                subjects=[f"{self.settings.stream}.dlq.>"],
                storage=StorageType.FILE,
                retention=RetentionPolicy.LIMITS,
                num_replicas=self.settings.replicas,
            ),
        )
        for config in streams:
            try:
                await js.stream_info(config.name or "")
            except nats.js.errors.NotFoundError:
                await js.add_stream(config)
            else:
                await js.update_stream(config)

    async def close(self) -> None:
        nc, self._nc, self._js, self._subs = self._nc, None, None, []
        if nc is not None:
            try:
                await nc.drain()
            except _NATS_ERRORS:
                await nc.close()

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def ping(self) -> None:
        if not self.connected:  # the client is reconnecting on its own
            raise BrokerUnavailable("not connected to NATS")
        try:
            await self._context().stream_info(self.name)
        except _NATS_ERRORS as exc:
            raise BrokerUnavailable(type(exc).__name__) from exc

    def _context(self) -> JetStreamContext:
        if self._js is None or not self.connected:
            raise BrokerUnavailable("not connected to NATS")
        return self._js

    # --- the API side ---------------------------------------------------------------------

    async def publish(self, route: str, messages: Sequence[tuple[str, bytes]]) -> tuple[bool, ...]:
        js = self._context()
        subject = f"{self.settings.stream}.in.{route}"
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self.settings.publish_timeout):
                # Asynchronous publishes: one PubAck each, all in flight at once.
                for message_id, payload in messages:
                    futures.append(
                        await js.publish_async(subject, payload, headers={"Nats-Msg-Id": message_id})
                    )
                acks = await asyncio.gather(*futures)
        except (*_NATS_ERRORS, TimeoutError) as exc:
            for future in futures:
                future.cancel()
            raise BrokerUnavailable(f"NATS did not confirm the publish: {type(exc).__name__}") from exc
        return tuple(not ack.duplicate for ack in acks)

    # --- the worker side ------------------------------------------------------------------

    async def join(self, consumer: str, lanes: int = 1) -> None:
        js = self._context()
        config = ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.settings.ack_wait,
            max_deliver=-1,
            max_ack_pending=max(100_000, self.settings.fetch_batch * 16),
            filter_subject=self.in_subjects,
        )
        try:
            await js.consumer_info(self.name, DURABLE)
        except nats.js.errors.NotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):  # another worker made it
                await js.add_consumer(self.name, config)
        # One subscription (inbox) per lane: a pull subscription serves one fetch at a time.
        self._subs = [await js.pull_subscribe_bind(DURABLE, self.name) for _ in range(lanes)]
        log.info("worker joined stream=%s consumer=%s as=%s", self.name, DURABLE, consumer)

    async def fetch(self, limit: int, timeout: float, lane: int = 0) -> list[Delivery]:
        if not self._subs:
            raise BrokerUnavailable("not joined")
        try:
            messages = await self._subs[lane].fetch(batch=limit, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):  # nothing to deliver in time
            return []
        except _NATS_ERRORS as exc:  # disconnected, reconnecting, the server restarting
            raise BrokerUnavailable(f"NATS fetch failed: {type(exc).__name__}") from exc
        return [
            Delivery(payload=m.data, subject=m.subject, deliveries=m.metadata.num_delivered, handle=m)
            for m in messages
        ]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        try:
            for delivery in deliveries:
                await _msg(delivery).ack()
            if self._nc is not None:
                # Acks are fire-and-forget: flush makes sure they left before we go on.
                await self._nc.flush()
        except _NATS_ERRORS as exc:  # unacknowledged: redelivered after QUEUE_ACK_WAIT
            raise BrokerUnavailable(f"NATS ack failed: {type(exc).__name__}") from exc

    async def retry(self, deliveries: Sequence[Delivery], delay: float) -> None:
        try:
            for delivery in deliveries:
                await _msg(delivery).nak(delay=delay if delay > 0 else None)
        except _NATS_ERRORS as exc:  # not given back: redelivered after QUEUE_ACK_WAIT
            raise BrokerUnavailable(f"NATS nak failed: {type(exc).__name__}") from exc

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        js = self._context()
        route = delivery.subject.rsplit(".", 1)[-1]
        sequence = _msg(delivery).metadata.sequence.stream
        try:
            await self._publish_dead_letter(js, route, sequence, delivery, reason)
            await _msg(delivery).ack()
        except _NATS_ERRORS as exc:
            raise BrokerUnavailable(f"NATS dead-letter failed: {type(exc).__name__}") from exc

    async def _publish_dead_letter(
        self, js: JetStreamContext, route: str, sequence: int, delivery: Delivery, reason: str
    ) -> None:
        await js.publish(
            f"{self.settings.stream}.dlq.{route}",
            delivery.payload,
            headers={
                REASON: reason[:1000],
                ATTEMPTS: str(delivery.deliveries),
                SUBJECT: delivery.subject,
                # A dead-letter publish retried after a lost ack is stored once.
                "Nats-Msg-Id": f"dlq-{sequence}",
            },
        )

    async def leave(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except _NATS_ERRORS:
                log.debug("unsubscribe failed", exc_info=True)

    # --- status and the DLQ ---------------------------------------------------------------

    async def status(self) -> QueueStatus:
        try:
            js = self._context()
            stream = await js.stream_info(self.name)
            dlq = await js.stream_info(self.dlq_name)
            try:
                consumer = await js.consumer_info(self.name, DURABLE)
            except nats.js.errors.NotFoundError:
                consumer = None
            oldest = None
            if stream.state.messages:
                first = await js.get_msg(self.name, seq=stream.state.first_seq)
                stored = _stored_at(first.time)
                oldest = (datetime.now(UTC) - stored).total_seconds() if stored else None
        except (BrokerUnavailable, *_NATS_ERRORS) as exc:
            return QueueStatus(mode=self.mode, connected=False, stream=self.name, error=type(exc).__name__)
        return QueueStatus(
            mode=self.mode,
            connected=True,
            stream=self.name,
            depth=stream.state.messages,
            pending=(consumer.num_ack_pending or 0) if consumer else 0,
            redelivered=(consumer.num_redelivered or 0) if consumer else 0,
            consumers=(consumer.num_waiting or 0) if consumer else 0,
            dlq_depth=dlq.state.messages,
            oldest_unprocessed_age_seconds=oldest,
            durable=stream.config.storage == StorageType.FILE,
        )

    async def _dead_letter_messages(self, limit: int) -> list[tuple[int, Any]]:
        js = self._context()
        state = (await js.stream_info(self.dlq_name)).state
        found: list[tuple[int, Any]] = []
        sequence = state.first_seq
        while len(found) < limit and state.messages and sequence <= state.last_seq:
            with contextlib.suppress(nats.js.errors.NotFoundError):  # deleted (replayed)
                found.append((sequence, await js.get_msg(self.dlq_name, seq=sequence)))
            sequence += 1
        return found

    async def dead_letters(self, limit: int) -> tuple[list[DeadLetter], int]:
        try:
            found = await self._dead_letter_messages(limit)
            total = (await self._context().stream_info(self.dlq_name)).state.messages
        except _NATS_ERRORS as exc:
            raise BrokerUnavailable(type(exc).__name__) from exc
        letters = []
        for sequence, raw in found:
            headers = raw.headers or {}
            letters.append(
                dead_letter_of(
                    str(sequence),
                    raw.data or b"",
                    headers.get(SUBJECT, raw.subject or ""),
                    headers.get(REASON, ""),
                    int(headers.get(ATTEMPTS, "0") or 0),
                    _stored_at(raw.time),
                )
            )
        return letters, total

    async def replay(self, limit: int) -> tuple[int, int]:
        try:
            js = self._context()
            replayed = 0
            for sequence, raw in await self._dead_letter_messages(limit):
                headers = raw.headers or {}
                subject = headers.get(SUBJECT) or f"{self.settings.stream}.in.api"
                await js.publish(subject, raw.data or b"", headers={"Nats-Msg-Id": f"replay-{sequence}"})
                await js.delete_msg(self.dlq_name, sequence)
                replayed += 1
            remaining = (await js.stream_info(self.dlq_name)).state.messages
        except _NATS_ERRORS as exc:
            raise BrokerUnavailable(type(exc).__name__) from exc
        return replayed, remaining


def _msg(delivery: Delivery) -> Msg:
    message = delivery.handle
    assert isinstance(message, Msg)
    return message


def _stored_at(value: object) -> datetime | None:
    """A stream message's time: a datetime, or RFC 3339 text with nanoseconds."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        text = value.replace("Z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:  # Python takes at most microseconds
            digits = "".join(c for c in rest if c.isdigit())
            text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None
