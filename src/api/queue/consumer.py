"""The worker loop: fetch a batch of messages, commit their rows through the group-commit
writer, acknowledge what is committed, give back or dead-letter the rest.

A batch goes to the writer in requests of SUBMIT_ROWS messages (encoded for COPY off the event
loop; the writer commits several at once, INGEST_WRITERS). When the database refuses one of
them, that request is submitted again message by message, and the writer halves the flush until
the refused message stands alone (src/api/ingest/writer.py): the rest is still stored. Per
message:
- committed (stored now, or stored before: ON CONFLICT DO NOTHING) → ack;
- the database unavailable, busy or timing out → given back with exponential backoff
  (QUEUE_RETRY_BASE doubling up to QUEUE_RETRY_MAX), however many times: an outage of hours
  loses nothing; the worker also pauses before its next fetch so it does not spin;
- refused by the database (or not an event row at all) → given back with backoff until it has
  been delivered QUEUE_MAX_DELIVER times, then moved to the DLQ with the reason.
A worker runs LANES such loops at once. Told to stop (SIGTERM), it finishes the batches in
hand — commit and ack — and takes no more; anything it did not acknowledge is redelivered to
the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from src.api.config import QueueSettings
from src.api.errors import AppError, ServiceUnavailable
from src.api.ingest.writer import EventRow, IngestWriter, WriteResult, prepare_rows
from src.api.queue.broker import Broker, BrokerUnavailable, Delivery
from src.api.queue.messages import MalformedMessage, decode_row

log = logging.getLogger(__name__)

FETCH_WAIT = 1.0  # seconds a fetch waits for the first message (also how soon a stop is seen)
# Messages per writer request: large enough for COPY to pay, small enough that several
# requests of one batch are committed in parallel by the writer's tasks.
SUBMIT_ROWS = 1000
# Batches in flight per worker process: while one is being committed, the next is fetched,
# decoded and encoded, and the last one's acks are sent (a single lane leaves the database
# idle during those steps, and them idle during the commit).
LANES = 2
Outcome = WriteResult | BaseException


@dataclass
class BatchReport:
    committed: int = 0  # messages acknowledged after their commit
    stored: int = 0  # of which new rows (not stored before)
    retried: int = 0
    dead: int = 0
    transient: bool = False  # the database was unavailable for (part of) the batch


class QueueConsumer:
    def __init__(self, broker: Broker, writer: IngestWriter, settings: QueueSettings, name: str) -> None:
        self.broker = broker
        self.writer = writer
        self.settings = settings
        self.name = name
        self.totals = BatchReport()

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set."""
        await self.broker.join(self.name, LANES)
        await asyncio.gather(*(self._lane(stop, lane) for lane in range(LANES)))
        with contextlib.suppress(BrokerUnavailable):
            await self.broker.leave()
        log.info(
            "worker stopped name=%s committed=%d stored=%d dead=%d",
            self.name,
            self.totals.committed,
            self.totals.stored,
            self.totals.dead,
        )

    async def _lane(self, stop: asyncio.Event, lane: int) -> None:
        outages = 0  # consecutive batches (or fetches) that met an unavailable service
        while not stop.is_set():
            try:
                deliveries = await self.broker.fetch(self.settings.fetch_batch, FETCH_WAIT, lane)
                report = await self.process(deliveries) if deliveries else BatchReport()
            except BrokerUnavailable as exc:
                log.warning("broker unavailable: %s", exc)
                report = BatchReport(transient=True)
            except Exception:  # keep consuming: whatever was not acknowledged is redelivered
                log.exception("worker batch failed")
                report = BatchReport(transient=True)
            outages = outages + 1 if report.transient else 0
            if outages:
                # Everything failed for want of the database or broker: wait before asking
                # again, as each message waits before its redelivery.
                await _sleep_unless(stop, self.settings.backoff(outages))

    async def process(self, deliveries: Sequence[Delivery]) -> BatchReport:
        report = BatchReport()
        decoded: list[tuple[Delivery, EventRow]] = []
        refused: list[tuple[Delivery, str]] = []
        for delivery in deliveries:
            try:
                decoded.append((delivery, decode_row(delivery.payload)))
            except MalformedMessage as exc:
                refused.append((delivery, f"malformed message: {exc}"))
        parts = await asyncio.gather(
            *(self._store(decoded[i : i + SUBMIT_ROWS]) for i in range(0, len(decoded), SUBMIT_ROWS))
        )
        committed: list[Delivery] = []
        later: dict[float, list[Delivery]] = defaultdict(list)
        for delivery, outcome in (pair for part in parts for pair in part):
            if isinstance(outcome, WriteResult):
                committed.append(delivery)
                report.stored += outcome.accepted
            elif isinstance(outcome, ServiceUnavailable):
                report.transient = True
                later[self.settings.backoff(delivery.deliveries)].append(delivery)
            elif isinstance(outcome, AppError):
                refused.append((delivery, f"refused by the database: {outcome.message}{_sqlstate(outcome)}"))
            else:
                log.error("unexpected failure storing a message", exc_info=outcome)
                report.transient = True
                later[self.settings.backoff(delivery.deliveries)].append(delivery)
        await self.broker.ack(committed)
        report.committed = len(committed)
        for delivery, reason in refused:
            if delivery.deliveries >= self.settings.max_deliver or reason.startswith("malformed"):
                await self.broker.dead_letter(delivery, reason)
                report.dead += 1
                log.warning(
                    "dead letter subject=%s attempts=%d reason=%s",
                    delivery.subject,
                    delivery.deliveries,
                    reason,
                )
            else:
                later[self.settings.backoff(delivery.deliveries)].append(delivery)
        for delay, waiting in later.items():
            await self.broker.retry(waiting, delay)
            report.retried += len(waiting)
        if report.transient:
            log.warning(
                "not committed, the database is unavailable: messages=%d given back for retry",
                report.retried,
            )
        self.totals.committed += report.committed
        self.totals.stored += report.stored
        self.totals.dead += report.dead
        self.totals.retried += report.retried
        log.debug(
            "batch messages=%d committed=%d stored=%d retried=%d dead=%d",
            len(deliveries),
            report.committed,
            report.stored,
            report.retried,
            report.dead,
        )
        return report

    async def _store(self, chunk: list[tuple[Delivery, EventRow]]) -> list[tuple[Delivery, Outcome]]:
        """Commit a chunk's rows as one writer request; per message, what became of it."""
        deliveries = [delivery for delivery, _ in chunk]
        prepared = await asyncio.to_thread(prepare_rows, [row for _, row in chunk])
        try:
            written = await self.writer.submit_prepared(prepared)
        except ServiceUnavailable as exc:
            return [(delivery, exc) for delivery in deliveries]
        except AppError:
            # Refused: one message each, so the writer stores all but the refused one(s).
            outcomes = await asyncio.gather(
                *(self.writer.submit_prepared(prepare_rows((row,), encode=False)) for _, row in chunk),
                return_exceptions=True,
            )
            return list(zip(deliveries, outcomes, strict=True))
        flags = zip(deliveries, written.inserted, strict=True)
        return [(delivery, WriteResult((flag,))) for delivery, flag in flags]


def _sqlstate(error: AppError) -> str:
    detail = error.detail
    if isinstance(detail, dict) and detail.get("sqlstate"):
        return f" (sqlstate {detail['sqlstate']})"
    return ""


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
