"""The sessions job: keeps `session` and `session_daily_metric` equal to a from-scratch
sessionisation of the stored events below a watermark, at a cost that grows with the changes
since the last run (docs/sessions.md).

How a run stays exact. Every statement that stores or deletes events appends one change per
row (site, visitor, time, type) to `session_change`, in its own transaction. A run, in one
REPEATABLE READ transaction (one snapshot) under an advisory lock (one run at a time):

1. moves the watermark to max(old, candidate) and takes (deletes) every change below it of
   the chosen visitors — all their changes, so what the run reads of a visitor's events is
   exactly what its stored sessions plus the taken changes describe;
2. groups each visitor's change times into windows, and widens each window over every stored
   session within SESSION_TIMEOUT of it, until none is left outside; windows of one visitor
   that come within the timeout of each other are merged. A window's edges are then gaps of
   more than the timeout before and after the change, so no session crosses them;
3. sessionises the events inside each window (window functions, bounded by the window and
   the watermark), replaces the stored sessions there, and recomputes the daily metrics of
   every (site, UTC day) whose sessions it touched.

The first run (watermark NULL) sessionises every stored event from scratch instead.
"""

from __future__ import annotations

import asyncio
import logging
import time as clock
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from src.api.config import Settings
from src.api.metrics import instruments as metrics
from src.api.sessions import repository

log = logging.getLogger(__name__)
# The scheduled job stays this far behind now: sessions still in progress are not rewritten
# every minute, and events of the last minutes arrive first. The ETL routes run up to now.
SCHEDULED_LAG = timedelta(minutes=2)


@dataclass(frozen=True)
class SessionSettings:
    timeout: timedelta
    stored_since: datetime  # the oldest time that may hold events (bounds the full run)

    @classmethod
    def of(cls, settings: Settings, now: datetime) -> SessionSettings:
        return cls(timeout=settings.session_timeout, stored_since=settings.stored_since(now))


@dataclass(frozen=True)
class RunResult:
    run_id: uuid.UUID
    events_processed: int
    sessions_created: int
    sessions_updated: int
    sessions_deleted: int
    daily_metrics_updated: int
    duration_seconds: float
    watermark: datetime
    full: bool

    def public(self) -> dict[str, Any]:
        return {
            "status": "completed",
            "run_id": str(self.run_id),
            "events_processed": self.events_processed,
            "sessions_created": self.sessions_created,
            "sessions_updated": self.sessions_updated,
            "sessions_deleted": self.sessions_deleted,
            "daily_metrics_updated": self.daily_metrics_updated,
            "duration_seconds": round(self.duration_seconds, 6),
            "watermark": self.watermark.isoformat(),
            "full": self.full,
        }


async def _process(
    conn: AsyncConnection,
    config: SessionSettings,
    run_id: uuid.UUID,
    candidate: datetime,
    event_type: str | None,
    batch_size: int,
) -> RunResult:
    """One run in the connection's new transaction (the caller commits)."""
    started = clock.monotonic()
    await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
    await conn.execute(text("SELECT set_config('jit', 'off', true)"))
    old = await repository.read_watermark(conn)
    mark = candidate if old is None else max(old, candidate)
    full = old is None
    await repository.start_days(conn)
    if full:
        # Every stored event from scratch: the changes below the mark are all in it.
        processed = await repository.take_changes(conn, mark, None)
        created, updated, deleted = await repository.sessionise_batch(
            conn, None, mark, config.stored_since, config.timeout
        )
        processed = int(
            (
                await conn.execute(
                    text("SELECT COALESCE(sum(events), 0) FROM session WHERE started_at < :mark"),
                    {"mark": mark},
                )
            ).scalar_one()
        )
    else:
        processed = await repository.take_changes(conn, mark, event_type)
        created = updated = deleted = 0
        if processed:
            batches = await repository.build_windows(conn, config.timeout, batch_size)
            for batch in range(batches):
                c, u, d = await repository.sessionise_batch(
                    conn, batch, mark, config.stored_since, config.timeout
                )
                created, updated, deleted = created + c, updated + u, deleted + d
    daily = await repository.refresh_daily(conn)
    await repository.write_watermark(conn, mark)
    return RunResult(
        run_id=run_id,
        events_processed=processed,
        sessions_created=created,
        sessions_updated=updated,
        sessions_deleted=deleted,
        daily_metrics_updated=daily,
        duration_seconds=clock.monotonic() - started,
        watermark=mark,
        full=full,
    )


async def _run_locked(
    conn: AsyncConnection,
    config: SessionSettings,
    run_id: uuid.UUID,
    trigger: str,
    candidate: datetime,
    event_type: str | None,
    batch_size: int,
    *,
    recorded: bool = False,
) -> RunResult:
    """A run on a connection that holds the job's lock: recorded in session_run, then done."""
    started_at = datetime.now(UTC)
    if not recorded:
        await repository.insert_run(conn, run_id, trigger, event_type, started_at)
        await conn.commit()
    started = clock.monotonic()
    try:
        result = await _process(conn, config, run_id, candidate, event_type, batch_size)
        await conn.commit()
    except asyncio.CancelledError:
        raise  # shutting down: no more statements (the caller drops the connection)
    except BaseException as exc:
        await conn.rollback()
        await repository.finish_run(
            conn, run_id, "failed", datetime.now(UTC), clock.monotonic() - started, None, type(exc).__name__
        )
        await conn.commit()
        raise
    await repository.finish_run(
        conn, run_id, "completed", datetime.now(UTC), result.duration_seconds, result.public(), None
    )
    await conn.commit()
    log.info(
        "sessions run=%s trigger=%s events=%d created=%d updated=%d deleted=%d days=%d seconds=%.3f",
        run_id,
        trigger,
        result.events_processed,
        result.sessions_created,
        result.sessions_updated,
        result.sessions_deleted,
        result.daily_metrics_updated,
        result.duration_seconds,
    )
    return result


async def run(
    engine: AsyncEngine,
    config: SessionSettings,
    *,
    trigger: str = "sync",
    until: datetime | None = None,
    event_type: str | None = None,
    batch_size: int = 1000,
    wait: bool = True,
) -> RunResult | None:
    """Run the job now, up to `until` (default now). With `wait`, waits for a run in progress
    to end first; without, returns None when one is in progress."""
    candidate = until or datetime.now(UTC)
    async with engine.connect() as conn:
        if wait:
            await repository.lock(conn)
        elif not await repository.try_lock(conn):
            await conn.rollback()
            return None
        await conn.commit()
        try:
            result = await _run_locked(conn, config, uuid.uuid4(), trigger, candidate, event_type, batch_size)
        except asyncio.CancelledError:
            # Shutting down: a statement may be cut off mid-way, so the connection is dropped,
            # not pooled; its session lock goes with it. No await may swallow the cancellation.
            await conn.invalidate()
            raise
        except BaseException:
            await repository.unlock(conn)
            await conn.commit()
            raise
        await repository.unlock(conn)
        await conn.commit()
        return result


_background: set[asyncio.Task[None]] = set()


async def start_background(
    engine: AsyncEngine, config: SessionSettings, *, batch_size: int = 1000
) -> tuple[bool, uuid.UUID | None]:
    """Start a run in the background unless one is in progress (in any worker):
    (started, run id — the new run's, or the one in progress when known)."""
    conn = await engine.connect()
    try:
        locked = await repository.try_lock(conn)
    except BaseException:
        await conn.close()
        raise
    if not locked:
        await conn.rollback()
        running = await repository.last_run(conn)
        await conn.close()
        if running is not None and running["status"] == "running":
            return False, running["id"]
        return False, None
    run_id = uuid.uuid4()
    await repository.insert_run(conn, run_id, "background", None, datetime.now(UTC))
    await conn.commit()
    candidate = datetime.now(UTC)

    async def work() -> None:
        try:
            await _run_locked(conn, config, run_id, "background", candidate, None, batch_size, recorded=True)
        except (DBAPIError, OSError) as exc:
            log.warning("sessions background run failed: %s", type(exc).__name__)
        finally:
            try:
                await repository.unlock(conn)
                await conn.commit()
            finally:
                await conn.close()

    task = asyncio.create_task(work())
    _background.add(task)
    task.add_done_callback(_background.discard)
    return True, run_id


async def scheduled_turn(engine: AsyncEngine, settings: Settings) -> RunResult | None:
    """One turn of the scheduled job, counted in /metrics with its lag; None when another run
    is in progress."""
    now = datetime.now(UTC)
    config = SessionSettings.of(settings, now)
    with metrics.job_run("sessions"):
        result = await run(engine, config, trigger="schedule", until=now - SCHEDULED_LAG, wait=False)
    if result is not None:
        metrics.set_job_lag("sessions", (datetime.now(UTC) - result.watermark).total_seconds())
    return result


async def run_session_loop(engine: AsyncEngine, settings: Settings, every: float) -> None:
    """The scheduled job: every `every` seconds, up to SCHEDULED_LAG behind now; a worker that
    finds a run in progress skips its turn."""
    while True:
        try:
            await scheduled_turn(engine, settings)
        except (DBAPIError, OSError) as exc:
            log.warning("sessions job failed: %s", type(exc).__name__)
        await asyncio.sleep(every)
