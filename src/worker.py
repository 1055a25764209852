"""`python -m src.worker`: one queue worker process (INGEST_QUEUE=nats or redis).

It joins the broker's shared consumer, drains messages into the group-commit writer (the same
one the API uses without a queue) and acknowledges them after their commit. Start as many as
the database can take, on as many machines as you like (`boot/worker.sh` starts
QUEUE_WORKERS of them here); the broker hands each message to one of them. SIGTERM or SIGINT:
finish and acknowledge the batch in hand, take no more, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import Settings, SettingsError, configure_logging, get_settings
from src.api.db.engine import create_engine
from src.api.db.schema import TimescaleInfo
from src.api.db.timescale import setup_database
from src.api.errors import ServiceUnavailable
from src.api.ingest.service import create_writer, tune_garbage_collector
from src.api.queue.broker import Broker, create_broker
from src.api.queue.consumer import QueueConsumer
from src.api.queue.streams import VolatileRedis

log = logging.getLogger("src.worker")


async def _database(engine: AsyncEngine, settings: Settings, stop: asyncio.Event) -> TimescaleInfo | None:
    """The schema's edition once the database answers; retried until it does (or a stop)."""
    while not stop.is_set():
        try:
            return await setup_database(engine, settings)
        except ServiceUnavailable:
            log.warning("database unavailable; the worker waits for it")
    return None


async def _connect(broker: Broker, stop: asyncio.Event) -> bool:
    delay = 0.5
    while not stop.is_set():
        try:
            await broker.connect()
            return True
        except VolatileRedis:
            raise
        except Exception as exc:
            log.warning("broker unavailable mode=%s error=%s; retrying", broker.mode, type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                delay = min(delay * 2, 5.0)
    return False


async def run(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    engine = create_engine(settings)
    broker = create_broker(settings.queue)
    try:
        timescale = await _database(engine, settings, stop)
        if timescale is None or not await _connect(broker, stop):
            return
        writer = create_writer(engine, settings, timescale)
        writer.start()
        tune_garbage_collector()
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        consumer = QueueConsumer(broker, writer, settings.queue, name)
        try:
            await consumer.run(stop)
        finally:
            await writer.stop()
    finally:
        await broker.close()
        await engine.dispose()


def main() -> None:
    try:
        settings = get_settings()
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None
    configure_logging(settings)
    if not settings.queue.enabled:
        sys.stderr.write("invalid setting INGEST_QUEUE: a worker needs 'nats' or 'redis' (got 'none')\n")
        raise SystemExit(2)
    try:
        asyncio.run(run(settings))
    except VolatileRedis as exc:
        sys.stderr.write(f"invalid setting REDIS_URL: {exc}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
