"""Redis Streams: the events stream, the consumer group `workers`, and the dead-letter stream.

- `<stream>`: one entry per event (`data` = the row, `subject` = the route, `id` = the event's
  key). Workers read with XREADGROUP; an entry is XACKed and XDELeted after its commit (one
  pipeline), so the stream's length is the backlog.
- A message given back (a transient failure, a worker stopping) stays in the group's pending
  list; XCLAIM … IDLE makes it look idle for QUEUE_ACK_WAIT minus the backoff, and every worker
  claims entries idle for QUEUE_ACK_WAIT (XAUTOCLAIM) — the same rule that hands a dead
  worker's entries to the others. So the backoff is capped at QUEUE_ACK_WAIT here.
- `<stream>:dlq`: dead letters (`data`, `subject`, `reason`, `attempts`), written in one
  MULTI with the XACK/XDEL of the original, so a message is in exactly one of the two.

Redis does not deduplicate: a retried publish adds the entry again, and the database's
ON CONFLICT DO NOTHING stores it once. Durability is the server's: the mode refuses a server
without `appendonly yes` (unless REDIS_ALLOW_VOLATILE=true). With `appendfsync everysec` (the
default) an acknowledged XADD survives a Redis crash and loses at most a second on a power
failure; `appendfsync always` loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

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

GROUP = "workers"
_REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, TimeoutError)
_RELEASED = "released"  # the consumer that holds entries given back by a stopping worker


class VolatileRedis(RuntimeError):
    """The Redis server keeps nothing on disk (appendonly no)."""


class RedisStreamsBroker(Broker):
    mode = "redis"

    def __init__(self, settings: QueueSettings) -> None:
        super().__init__(settings)
        self.key = settings.stream
        self.dlq_key = f"{settings.stream}:dlq"
        self._redis: aioredis.Redis | None = None
        self._consumer = f"{socket.gethostname()}-{os.getpid()}"
        self._healthy = False
        self._durable: bool | None = None

    # --- connection -----------------------------------------------------------------------

    async def connect(self) -> None:
        client = aioredis.Redis.from_url(
            self.settings.redis_url,
            socket_connect_timeout=2,
            socket_timeout=max(5.0, self.settings.publish_timeout),
            retry_on_timeout=False,
        )
        try:
            persistence = await client.info("persistence")
            self._durable = bool(int(persistence.get("aof_enabled", 0)))
            if not self._durable and not self.settings.redis_allow_volatile:
                raise VolatileRedis(
                    "the Redis server has appendonly off: accepted events would not survive its"
                    " restart; set appendonly yes (or REDIS_ALLOW_VOLATILE=true)"
                )
            await self._ensure_group(client)
        except BaseException:
            await client.aclose()
            raise
        self._redis = client
        self._healthy = True
        self.started = True

    async def _ensure_group(self, client: aioredis.Redis) -> None:
        try:
            # From the stream's start: entries added before any worker existed are consumed.
            await client.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    @property
    def connected(self) -> bool:
        return self._redis is not None and self._healthy

    async def ping(self) -> None:
        await self._call(self._client().ping())

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise BrokerUnavailable("not connected to Redis")
        return self._redis

    async def _call(self, operation: Any) -> Any:
        """Run a coroutine against Redis, keeping `connected` up to date."""
        try:
            result = await operation
        except _REDIS_ERRORS as exc:
            self._healthy = False
            raise BrokerUnavailable(f"Redis: {type(exc).__name__}") from exc
        self._healthy = True
        return result

    # --- the API side ---------------------------------------------------------------------

    async def publish(self, route: str, messages: Sequence[tuple[str, bytes]]) -> tuple[bool, ...]:
        client = self._client()
        subject = f"{self.key}.in.{route}"
        pipe = client.pipeline(transaction=False)
        for message_id, payload in messages:
            pipe.xadd(self.key, {"data": payload, "subject": subject, "id": message_id})
        try:
            async with asyncio.timeout(self.settings.publish_timeout):
                await self._call(pipe.execute())
        except TimeoutError as exc:
            self._healthy = False
            raise BrokerUnavailable("Redis did not confirm the publish in time") from exc
        return (True,) * len(messages)

    # --- the worker side ------------------------------------------------------------------

    async def join(self, consumer: str, lanes: int = 1) -> None:
        self._consumer = consumer
        await self._call(self._ensure_group(self._client()))
        log.info("worker joined stream=%s group=%s as=%s", self.key, GROUP, consumer)

    async def fetch(self, limit: int, timeout: float, lane: int = 0) -> list[Delivery]:
        # Lanes need nothing of their own: XREADGROUP calls never hand out an entry twice.
        try:
            return await self._fetch(limit, timeout)
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream or group is gone (a Redis restarted without its data): make them again.
            log.warning("consumer group missing; creating it again stream=%s", self.key)
            await self._call(self._ensure_group(self._client()))
            return []

    async def _fetch(self, limit: int, timeout: float) -> list[Delivery]:
        client = self._client()
        deliveries = await self._claim(client, limit)
        if len(deliveries) < limit:
            block = None if deliveries else max(1, int(timeout * 1000))
            answer = await self._call(
                client.xreadgroup(
                    GROUP, self._consumer, {self.key: ">"}, count=limit - len(deliveries), block=block
                )
            )
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    deliveries.append(_delivery(entry_id, fields, 1))
        return deliveries

    async def _claim(self, client: aioredis.Redis, limit: int) -> list[Delivery]:
        """Entries idle for QUEUE_ACK_WAIT: given back for a retry, or held by a dead worker."""
        idle_ms = int(self.settings.ack_wait * 1000)
        answer = await self._call(
            client.xautoclaim(self.key, GROUP, self._consumer, idle_ms, "0-0", count=limit)
        )
        entries, deleted = answer[1], answer[2] if len(answer) > 2 else []
        if deleted:  # deleted while pending: nothing to deliver, drop them from the group
            await self._call(client.xack(self.key, GROUP, *deleted))
        entries = [(entry_id, fields) for entry_id, fields in entries if fields]
        if not entries:
            return []
        pipe = client.pipeline(transaction=False)
        for entry_id, _ in entries:
            pipe.xpending_range(self.key, GROUP, entry_id, entry_id, 1)
        counts = await self._call(pipe.execute())
        return [
            _delivery(entry_id, fields, int(info[0]["times_delivered"]) if info else 1)
            for (entry_id, fields), info in zip(entries, counts, strict=True)
        ]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        ids = [_entry_id(d) for d in deliveries]
        pipe = self._client().pipeline(transaction=True)
        pipe.xack(self.key, GROUP, *ids)
        pipe.xdel(self.key, *ids)
        await self._call(pipe.execute())

    async def retry(self, deliveries: Sequence[Delivery], delay: float) -> None:
        """Due again `delay` seconds from now (at most QUEUE_ACK_WAIT), for any worker."""
        if not deliveries:
            return
        ack_wait_ms = int(self.settings.ack_wait * 1000)
        idle = max(0, ack_wait_ms - int(delay * 1000))
        owner = self._consumer if delay > 0 else _RELEASED
        await self._call(
            self._client().xclaim(
                self.key, GROUP, owner, 0, [_entry_id(d) for d in deliveries], idle=idle, justid=True
            )
        )

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        pipe = self._client().pipeline(transaction=True)
        pipe.xadd(
            self.dlq_key,
            {
                "data": delivery.payload,
                SUBJECT: delivery.subject,
                REASON: reason[:1000],
                ATTEMPTS: str(delivery.deliveries),
            },
        )
        pipe.xack(self.key, GROUP, _entry_id(delivery))
        pipe.xdel(self.key, _entry_id(delivery))
        await self._call(pipe.execute())

    async def leave(self) -> None:
        client = self._client()
        summary = await self._call(
            client.xpending_range(self.key, GROUP, "-", "+", 1, consumername=self._consumer)
        )
        if not summary:  # a consumer with pending entries keeps them: deleting would lose them
            await self._call(client.xgroup_delconsumer(self.key, GROUP, self._consumer))

    # --- status and the DLQ ---------------------------------------------------------------

    async def status(self) -> QueueStatus:
        try:
            client = self._client()
            pipe = client.pipeline(transaction=False)
            pipe.xlen(self.key)
            pipe.xpending(self.key, GROUP)
            pipe.xinfo_consumers(self.key, GROUP)
            pipe.xlen(self.dlq_key)
            pipe.xrange(self.key, "-", "+", count=1)
            pipe.xpending_range(self.key, GROUP, "-", "+", 10_000)
            depth, pending, consumers, dlq_depth, first, sample = await self._call(pipe.execute())
        except (BrokerUnavailable, redis.exceptions.ResponseError) as exc:
            return QueueStatus(mode=self.mode, connected=False, stream=self.key, error=type(exc).__name__)
        oldest = None
        if first:
            added_ms = int(_text(first[0][0]).split("-", 1)[0])
            oldest = max(0.0, datetime.now(UTC).timestamp() - added_ms / 1000)
        return QueueStatus(
            mode=self.mode,
            connected=True,
            stream=self.key,
            depth=depth,
            pending=pending["pending"],
            redelivered=sum(1 for entry in sample if entry["times_delivered"] > 1),
            consumers=sum(1 for c in consumers if _text(c["name"]) != _RELEASED),
            dlq_depth=dlq_depth,
            oldest_unprocessed_age_seconds=oldest,
            durable=self._durable,
        )

    async def dead_letters(self, limit: int) -> tuple[list[DeadLetter], int]:
        client = self._client()
        entries = await self._call(client.xrange(self.dlq_key, "-", "+", count=limit))
        total = await self._call(client.xlen(self.dlq_key))
        letters = [
            dead_letter_of(
                _text(entry_id),
                fields.get(b"data", b""),
                _text(fields.get(SUBJECT.encode(), b"")),
                _text(fields.get(REASON.encode(), b"")),
                int(_text(fields.get(ATTEMPTS.encode(), b"0")) or 0),
                datetime.fromtimestamp(int(_text(entry_id).split("-", 1)[0]) / 1000, UTC),
            )
            for entry_id, fields in entries
        ]
        return letters, total

    async def replay(self, limit: int) -> tuple[int, int]:
        client = self._client()
        entries = await self._call(client.xrange(self.dlq_key, "-", "+", count=limit))
        for entry_id, fields in entries:
            pipe = client.pipeline(transaction=True)
            pipe.xadd(
                self.key,
                {
                    "data": fields.get(b"data", b""),
                    "subject": fields.get(SUBJECT.encode()) or f"{self.key}.in.api",
                },
            )
            pipe.xdel(self.dlq_key, entry_id)
            await self._call(pipe.execute())
        return len(entries), await self._call(client.xlen(self.dlq_key))


def _entry_id(delivery: Delivery) -> bytes:
    entry_id = delivery.handle
    assert isinstance(entry_id, bytes)
    return entry_id


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _delivery(entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> Delivery:
    return Delivery(
        payload=fields.get(b"data", b""),
        subject=_text(fields.get(b"subject", b"")),
        deliveries=deliveries,
        handle=entry_id,
    )
