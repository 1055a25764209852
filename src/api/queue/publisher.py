"""The API side of queue mode: publish a request's rows and answer once the broker has them.

IngestService (src/api/ingest/service.py) hands every accepted request here instead of to the
writer when INGEST_QUEUE is set. A broker that cannot be reached is a 503 with Retry-After —
before the body is read when the connection is known to be down — never a false 2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from src.api.errors import ServiceUnavailable
from src.api.ingest.writer import EventKey, PreparedRows, WriteResult
from src.api.queue.broker import Broker, BrokerUnavailable
from src.api.queue.messages import encode_rows
from src.api.queue.streams import VolatileRedis

log = logging.getLogger(__name__)

RECONNECT_EVERY = 1.0  # seconds between attempts while the broker is away


class QueuePublisher:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, or keep trying in the background (ingest answers 503 meanwhile). A Redis
        that keeps nothing on disk stops the service here."""
        try:
            await self.broker.connect()
        except VolatileRedis:
            raise
        except Exception as exc:  # unreachable for now: the service starts, ingest waits
            log.warning(
                "queue broker unavailable at startup mode=%s error=%s", self.broker.mode, type(exc).__name__
            )
        self._watch = asyncio.create_task(self._keep_connected(), name="queue-broker-watch")

    async def _keep_connected(self) -> None:
        """The NATS client reconnects by itself once connected; this makes the first connection
        and lets a Redis marked down by a failed call prove itself up again."""
        while True:
            await asyncio.sleep(RECONNECT_EVERY)
            if self.broker.connected:
                continue
            try:
                if self.broker.started:
                    await self.broker.ping()
                else:
                    await self.broker.connect()
                    log.info("queue broker connected mode=%s", self.broker.mode)
            except VolatileRedis:
                log.error("the Redis server keeps nothing on disk; queue mode stays unavailable")
            except Exception as exc:
                log.debug("queue broker still unavailable: %s", type(exc).__name__)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await self.broker.close()

    def check_open(self) -> None:
        if not self.broker.connected:
            raise ServiceUnavailable(
                f"the event queue ({self.broker.mode}) is unavailable; retry shortly", retry_after=2
            )

    async def publish(self, route: str, prepared: PreparedRows) -> WriteResult:
        """Per submitted row: True when the broker took it now, False for a duplicate (of an
        earlier row of this request, or of a message the broker already holds)."""
        if not prepared.keys:
            return WriteResult(inserted=())
        self.check_open()
        try:
            taken = await self.broker.publish(route, encode_rows(prepared.rows))
        except BrokerUnavailable as exc:
            log.warning("publish failed mode=%s: %s", self.broker.mode, exc)
            raise ServiceUnavailable(
                f"the event queue ({self.broker.mode}) did not confirm; retry shortly", retry_after=2
            ) from None
        new: dict[EventKey, bool] = {
            (row[0], row[1]): flag for row, flag in zip(prepared.rows, taken, strict=True)
        }
        flags = zip(prepared.first, prepared.keys, strict=True)
        return WriteResult(tuple(first and new[key] for first, key in flags))
