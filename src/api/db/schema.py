"""The schema's lowest layer: which TimescaleDB edition runs, and idempotent table creation.
Everything above (the rollups' DDL, the migrations, startup) builds on these."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection, Table, text
from sqlalchemy.ext.asyncio import AsyncConnection

Edition = Literal["apache", "timescale"]


@dataclass(frozen=True)
class TimescaleInfo:
    edition: Edition
    version: str

    @property
    def has_continuous_aggregates(self) -> bool:
        return self.edition == "timescale"


def read_edition(conn: Connection) -> TimescaleInfo:
    """The edition and version of the installed extension (migrations branch on the edition)."""
    license_ = conn.execute(text("SHOW timescaledb.license")).scalar_one()
    version = conn.execute(
        text("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    ).scalar_one()
    edition: Edition = "timescale" if license_ == "timescale" else "apache"
    return TimescaleInfo(edition=edition, version=str(version))


async def detect_edition(conn: AsyncConnection) -> TimescaleInfo:
    return await conn.run_sync(read_edition)


def create_tables(conn: Connection, tables: Iterable[Table]) -> None:
    """The tables, and any index a newer version added to a table that already exists."""
    for table in tables:
        table.create(conn, checkfirst=True)
        for index in table.indexes:
            index.create(conn, checkfirst=True)
