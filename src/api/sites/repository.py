"""Every statement over `site` and `site_attribution`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import func, select, union, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.config import PrivacyLevel
from src.api.sites.models import SITE_ATTRIBUTION_TABLE, SITE_TABLE


@dataclass(frozen=True)
class SiteRecord:
    site_id: str
    client_id: str
    allowed_hostnames: tuple[str, ...]
    privacy_level: PrivacyLevel
    timezone: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    def public(self) -> dict[str, Any]:
        return {
            "site_id": self.site_id,
            "client_id": self.client_id,
            "allowed_hostnames": list(self.allowed_hostnames),
            "privacy_level": self.privacy_level,
            "timezone": self.timezone,
            "created_at": self.created_at,
            "disabled_at": self.disabled_at,
        }


def _record(row: Any) -> SiteRecord:
    return SiteRecord(
        site_id=row.site_id,
        client_id=row.client_id,
        allowed_hostnames=tuple(row.allowed_hostnames),
        privacy_level=cast(PrivacyLevel, row.privacy_level),
        timezone=row.timezone,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
    )


async def all_sites(conn: AsyncConnection | AsyncSession) -> list[SiteRecord]:
    result = await conn.execute(select(SITE_TABLE).order_by(SITE_TABLE.c.site_id))
    return [_record(row) for row in result]


async def get_site(session: AsyncSession, site_id: str) -> SiteRecord | None:
    row = (await session.execute(select(SITE_TABLE).where(SITE_TABLE.c.site_id == site_id))).first()
    return _record(row) if row else None


async def create_site(session: AsyncSession, values: dict[str, Any]) -> SiteRecord | None:
    """The new site, or None when that site_id exists."""
    statement = (
        pg_insert(SITE_TABLE)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["site_id"])
        .returning(SITE_TABLE)
    )
    row = (await session.execute(statement)).first()
    return _record(row) if row else None


async def update_site(session: AsyncSession, site_id: str, values: dict[str, Any]) -> SiteRecord | None:
    statement = (
        update(SITE_TABLE).where(SITE_TABLE.c.site_id == site_id).values(**values).returning(SITE_TABLE)
    )
    row = (await session.execute(statement)).first()
    return _record(row) if row else None


async def disable_site(session: AsyncSession, site_id: str) -> SiteRecord | None:
    statement = (
        update(SITE_TABLE)
        .where(SITE_TABLE.c.site_id == site_id)
        .values(disabled_at=func.coalesce(SITE_TABLE.c.disabled_at, func.now()))
        .returning(SITE_TABLE)
    )
    row = (await session.execute(statement)).first()
    return _record(row) if row else None


async def client_site_ids(session: AsyncSession, client_id: str) -> list[str]:
    """Every site known to belong to the client: registered, or attributed by the remote
    service (disabled sites included: their events are still the client's)."""
    statement = union(
        select(SITE_TABLE.c.site_id).where(SITE_TABLE.c.client_id == client_id),
        select(SITE_ATTRIBUTION_TABLE.c.site_id).where(SITE_ATTRIBUTION_TABLE.c.client_id == client_id),
    )
    return sorted(row[0] for row in await session.execute(statement))


async def remember_attribution(
    conn: AsyncConnection, site_id: str, client_id: str, privacy_level: str, hostnames: Sequence[str]
) -> None:
    statement = pg_insert(SITE_ATTRIBUTION_TABLE).values(
        site_id=site_id, client_id=client_id, privacy_level=privacy_level, allowed_hostnames=list(hostnames)
    )
    statement = statement.on_conflict_do_update(
        index_elements=["site_id"],
        set_={
            "client_id": statement.excluded.client_id,
            "privacy_level": statement.excluded.privacy_level,
            "allowed_hostnames": statement.excluded.allowed_hostnames,
            "seen_at": func.now(),
        },
    )
    await conn.execute(statement)


async def attribution(conn: AsyncConnection, site_id: str) -> Any:
    """The last remote answer stored for the site: (client_id, privacy_level, allowed_hostnames)."""
    statement = select(
        SITE_ATTRIBUTION_TABLE.c.client_id,
        SITE_ATTRIBUTION_TABLE.c.privacy_level,
        SITE_ATTRIBUTION_TABLE.c.allowed_hostnames,
    ).where(SITE_ATTRIBUTION_TABLE.c.site_id == site_id)
    return (await conn.execute(statement)).first()


__all__ = [
    "SiteRecord",
    "all_sites",
    "attribution",
    "client_site_ids",
    "create_site",
    "disable_site",
    "get_site",
    "remember_attribution",
    "update_site",
]
