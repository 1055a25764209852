"""Every statement over `api_key`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.auth.models import API_KEY_TABLE

Connection = AsyncConnection | AsyncSession  # a request's session, or a command's connection
_PUBLIC = [c for c in API_KEY_TABLE.c if c.name != "secret_hash"]


async def insert_key(conn: Connection, values: dict[str, Any]) -> Any:
    statement = API_KEY_TABLE.insert().values(**values).returning(*_PUBLIC)
    return (await conn.execute(statement)).one()


async def list_keys(conn: Connection) -> Sequence[Any]:
    statement = select(*_PUBLIC).order_by(API_KEY_TABLE.c.created_at, API_KEY_TABLE.c.id)
    return (await conn.execute(statement)).all()


async def revoke_key(conn: Connection, key_id: uuid.UUID) -> Any:
    statement = (
        update(API_KEY_TABLE)
        .where(API_KEY_TABLE.c.id == key_id)
        .values(revoked_at=func.coalesce(API_KEY_TABLE.c.revoked_at, func.now()))
        .returning(*_PUBLIC)
    )
    return (await conn.execute(statement)).first()


async def live_keys_with_prefix(conn: AsyncConnection, prefix: str) -> Sequence[Any]:
    statement = select(API_KEY_TABLE).where(
        API_KEY_TABLE.c.prefix == prefix, API_KEY_TABLE.c.revoked_at.is_(None)
    )
    return (await conn.execute(statement)).all()


async def any_live_key(conn: AsyncConnection) -> bool:
    statement = select(exists().where(API_KEY_TABLE.c.revoked_at.is_(None)))
    return bool((await conn.execute(statement)).scalar_one())


async def touch(conn: AsyncConnection, key_id: uuid.UUID) -> None:
    await conn.execute(
        update(API_KEY_TABLE).where(API_KEY_TABLE.c.id == key_id).values(last_used_at=func.now())
    )
