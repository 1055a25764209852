"""SQL over single events. Lookups by id are bounded by the retention window, so chunk
exclusion keeps them to the primary-key index of the chunks that can still hold the event."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.events.models import Event
from src.api.rollups import activity, pages
from src.api.rollups.activity import DAY_SQL, KINDS
from src.api.rollups.catalogue import DIMENSIONS
from src.api.rollups.maintenance import maintenance_ctes
from src.api.rollups.repository import fold_late
from src.api.sessions import repository as sessions

_DIMS = ", ".join(DIMENSIONS)
# The deleted row's keys and day, for the activity recount.
_KEYS = ", ".join(
    (
        f"{KINDS['visitors'][1]} AS visitors_key",
        f"{KINDS['sessions'][1]} AS sessions_key",
        f"{DAY_SQL.format(t='time')} AS day",
        pages.DELETED_KEY_SQL,
    )
)
_DELETE_SQL = text(
    "DELETE FROM event WHERE id = :id AND time >= :since"
    f" RETURNING id, site_id, time, event_type, page, {_KEYS}"
)


# Apache edition: the rollups are ours to keep exact, so a delete takes its row back out of them.
_DELETE_WITH_ROLLUP_SQL = text(
    "WITH deleted AS (DELETE FROM event WHERE id = :id AND time >= :since"
    f" RETURNING id, time, duration, {_DIMS}, {_KEYS}), "
    + maintenance_ctes("deleted", sign=-1)
    + " SELECT id, visitors_key, sessions_key, day, page, page_key, site_id, time, event_type FROM deleted"
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
    # Activity: fold what waits (the deleted events' own keys among it), then recount each of
    # their keys' day from the events left.
    await fold_late(session, rollups=False)
    for row in deleted:
        for name in KINDS:
            key = getattr(row, f"{name}_key")
            if key is not None:
                await activity.recount(session, row.site_id, name, key, row.day)
        await pages.recount(session, row.site_id, row.page, str(row.page_key), row.day)
    return True
