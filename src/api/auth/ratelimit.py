"""Hourly request limits per API key, shared by every worker and process: the `limits`
library's fixed-window algorithm over Redis (REDIS_URL) or, without Redis, over a PostgreSQL
table through a storage of that library's protocol (`PostgresStorage`)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from limits import RateLimitItemPerHour
from limits.aio.storage import RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

_INCR = text(
    "INSERT INTO rate_limit_counter AS c (key, count, expires_at)"
    " VALUES (:key, :amount, now() + make_interval(secs => :expiry))"
    " ON CONFLICT (key) DO UPDATE SET"
    " count = CASE WHEN c.expires_at <= now() THEN excluded.count ELSE c.count + excluded.count END,"
    " expires_at = CASE WHEN c.expires_at <= now() THEN excluded.expires_at ELSE c.expires_at END"
    " RETURNING count"
)
_GET = text("SELECT count FROM rate_limit_counter WHERE key = :key AND expires_at > now()")
_EXPIRY = text(
    "SELECT extract(epoch FROM expires_at) FROM rate_limit_counter WHERE key = :key AND expires_at > now()"
)
_CLEAR = text("DELETE FROM rate_limit_counter WHERE key = :key")
_RESET = text("DELETE FROM rate_limit_counter")
_EXPIRED = text("DELETE FROM rate_limit_counter WHERE expires_at < now() - interval '1 hour'")


class PostgresStorage(Storage):
    """The limits library's async storage protocol over `rate_limit_counter`: one atomic upsert
    per hit (a window that has expired starts again at the hit's amount)."""

    STORAGE_SCHEME = ["async+event-analytics-postgresql"]  # noqa: RUF012 (the base types it so)

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self.engine = engine

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return SQLAlchemyError

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        async with self.engine.begin() as conn:
            count = (await conn.execute(_INCR, {"key": key, "amount": amount, "expiry": expiry})).scalar_one()
            if random.random() < 0.001:  # now and then, drop windows long over
                await conn.execute(_EXPIRED)
        return int(count)

    async def get(self, key: str) -> int:
        async with self.engine.connect() as conn:
            value = (await conn.execute(_GET, {"key": key})).scalar()
        return int(value or 0)

    async def get_expiry(self, key: str) -> float:
        async with self.engine.connect() as conn:
            value = (await conn.execute(_EXPIRY, {"key": key})).scalar()
        return float(value) if value is not None else time.time()

    async def check(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    async def reset(self) -> int | None:
        async with self.engine.begin() as conn:
            return (await conn.execute(_RESET)).rowcount

    async def clear(self, key: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_CLEAR, {"key": key})


def redis_storage(url: str) -> RedisStorage:
    scheme, rest = url.split("://", 1)
    names = {"redis": "async+redis", "rediss": "async+rediss", "unix": "async+redis+unix"}
    return RedisStorage(f"{names[scheme]}://{rest}", implementation="redispy")


@dataclass(frozen=True)
class Usage:
    allowed: bool
    limit: int
    remaining: int
    reset_at: float  # epoch seconds when the window ends

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_at - time.time())))
        return headers


class KeyRateLimiter:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.strategy = FixedWindowRateLimiter(storage)

    async def hit(self, identity: str, hourly_limit: int) -> Usage:
        item = RateLimitItemPerHour(hourly_limit)
        allowed = await self.strategy.hit(item, "api-key", identity)
        stats = await self.strategy.get_window_stats(item, "api-key", identity)
        return Usage(
            allowed=allowed, limit=hourly_limit, remaining=stats.remaining, reset_at=stats.reset_time
        )
