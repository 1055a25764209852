"""Daily salts, shared by every process through the database: the first process to need a day's
salt inserts a random one (ON CONFLICT DO NOTHING), every other reads the same. Today's and
yesterday's are kept (an event of yesterday sent after midnight hashes with its own day's salt,
as Plausible does); older salts are deleted as soon as a new day's is made."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

_ENSURE = text("INSERT INTO privacy_salt (day, salt) VALUES (:day, :salt) ON CONFLICT (day) DO NOTHING")
_READ = text("SELECT day, salt FROM privacy_salt WHERE day >= :yesterday AND day <= :today")
_FORGET = text("DELETE FROM privacy_salt WHERE day < :yesterday")


class DailySalts:
    """Today's and yesterday's salts (UTC days), loaded once a day per process."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._salts: dict[date, bytes] = {}
        self._lock = asyncio.Lock()

    async def ready(self, now: datetime | None = None) -> None:
        """Make sure today's salt is loaded (a database round trip once a day)."""
        today = (now or datetime.now(UTC)).astimezone(UTC).date()
        if today in self._salts:
            return
        async with self._lock:
            if today in self._salts:
                return
            yesterday = today - timedelta(days=1)
            async with self.engine.begin() as conn:
                for day in (yesterday, today):
                    await conn.execute(_ENSURE, {"day": day, "salt": secrets.token_bytes(32)})
                await conn.execute(_FORGET, {"yesterday": yesterday})
                rows = (await conn.execute(_READ, {"yesterday": yesterday, "today": today})).all()
            self._salts = {row.day: bytes(row.salt) for row in rows}

    def salt_for(self, moment: datetime, received_at: datetime) -> bytes:
        """The salt of `moment`'s day when that is today or yesterday, else today's. Call
        `ready(received_at)` first."""
        day = moment.astimezone(UTC).date()
        salt = self._salts.get(day)
        if salt is None:
            salt = self._salts[received_at.astimezone(UTC).date()]
        return salt
