"""SQL over single events. Lookups by id are bounded by the retention window, so chunk
exclusion keeps them to the primary-key index of the chunks that can still hold the event."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.events.models import Event
from src.api.rollups.catalogue import DIMENSIONS
from src.api.rollups.maintenance import maintenance_ctes

_DIMS = ", ".join(DIMENSIONS)
_DELETE_SQL = text("DELETE FROM event WHERE id = :id AND time >= :since RETURNING id")


# Apache edition: the rollups are ours to keep exact, so a delete takes its row back out of them.
_DELETE_WITH_ROLLUP_SQL = text(
    "WITH deleted AS (DELETE FROM event WHERE id = :id AND time >= :since"
    f" RETURNING id, time, duration, {_DIMS}), "
    + maintenance_ctes("deleted", sign=-1)
    + " SELECT id FROM deleted"
)


async def get_event(session: AsyncSession, event_id: uuid.UUID, since: datetime) -> Event | None:
    statement = select(Event).where(Event.id == event_id, col(Event.time) >= since).limit(1)
    return (await session.exec(statement)).first()


async def delete_event(
    session: AsyncSession, event_id: uuid.UUID, since: datetime, *, maintain_rollup: bool
) -> bool:
    sql = _DELETE_WITH_ROLLUP_SQL if maintain_rollup else _DELETE_SQL
    result = await session.execute(sql, {"id": event_id, "since": since})
    return result.first() is not None
