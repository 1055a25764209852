"""SQL over single events. Lookups by id are bounded by the retention window, so chunk
exclusion keeps them to the primary-key index of the chunks that can still hold the event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.events.models import Event
from src.api.rollups.activity import DAY_SQL, KINDS, RECOUNT_SQL
from src.api.rollups.catalogue import DIMENSIONS
from src.api.rollups.maintenance import maintenance_ctes
from src.api.rollups.repository import fold_late
from src.api.sessions import repository as sessions

_DIMS = ", ".join(DIMENSIONS)
# The deleted row's keys and day, for the activity masks' recount.
_KEYS = ", ".join(
    (
        f"{KINDS['visitors'][1]} AS visitors_key",
        f"{KINDS['sessions'][1]} AS sessions_key",
        f"{DAY_SQL.format(t='time')} AS day",
    )
)
_DELETE_SQL = text(
    f"DELETE FROM event WHERE id = :id AND time >= :since RETURNING id, site_id, time, event_type, {_KEYS}"
)


# Apache edition: the rollups are ours to keep exact, so a delete takes its row back out of them.
_DELETE_WITH_ROLLUP_SQL = text(
    "WITH deleted AS (DELETE FROM event WHERE id = :id AND time >= :since"
    f" RETURNING id, time, duration, {_DIMS}, {_KEYS}), "
    + maintenance_ctes("deleted", sign=-1)
    + " SELECT id, visitors_key, sessions_key, day, site_id, time, event_type FROM deleted"
)


async def get_event(session: AsyncSession, event_id: uuid.UUID, since: datetime) -> Event | None:
    statement = select(Event).where(Event.id == event_id, col(Event.time) >= since).limit(1)
    return (await session.exec(statement)).first()


async def delete_event(
    session: AsyncSession, event_id: uuid.UUID, since: datetime, *, maintain_rollup: bool
) -> bool:
    sql = _DELETE_WITH_ROLLUP_SQL if maintain_rollup else _DELETE_SQL
    # The key is (id, time): one id may be stored at several times, and all of them go.
    deleted = (await session.execute(sql, {"id": event_id, "since": since})).all()
    if not deleted:
        return False
    for row in deleted:
        # The sessions job reopens each deleted event's session (src/api/sessions/service.py).
        await sessions.append_change(session, row.site_id, row.visitors_key, row.time, row.event_type)
    # The activity masks: fold what waits (the deleted events' own keys among it), then clear
    # the day's bit of each of their keys that no other event of the day still has.
    await fold_late(session, rollups=False)
    for row in deleted:
        day_start = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=row.day)
        bounds = {
            "site_id": row.site_id,
            "day": row.day,
            "day_start": day_start,
            "day_end": day_start + timedelta(days=1),
        }
        for name, statement in RECOUNT_SQL.items():
            key = getattr(row, f"{name}_key")
            if key is not None:
                await session.execute(statement, {**bounds, "key": key})
    return True
