from __future__ import annotations

import asyncio
import dataclasses

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.db.engine import create_engine
from src.api.db.schema import TimescaleInfo
from src.api.db.timescale import setup_database
from src.api.rollups.catalogue import CATALOGUE
from tests.conftest import requires_community

ROLLUPS = CATALOGUE.names

pytestmark = pytest.mark.anyio


async def test_event_is_a_hypertable_with_the_configured_chunk_interval(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT column_name, time_interval FROM timescaledb_information.dimensions"
                    " WHERE hypertable_name = 'event'"
                )
            )
        ).one()
        expected = (
            await conn.execute(
                text("SELECT CAST(:i AS interval)"), {"i": get_settings().events_chunk_interval}
            )
        ).scalar_one()
    assert row.column_name == "time"
    assert row.time_interval == expected


async def test_edition_is_detected(engine: AsyncEngine, timescale: TimescaleInfo) -> None:
    async with engine.connect() as conn:
        license_ = (await conn.execute(text("SHOW timescaledb.license"))).scalar_one()
    assert timescale.edition == ("timescale" if license_ == "timescale" else "apache")
    assert timescale.version[0].isdigit()


async def test_setup_twice_and_concurrently_is_harmless(engine: AsyncEngine) -> None:
    settings = get_settings()
    engines = [create_engine(settings) for _ in range(3)]
    try:
        infos = await asyncio.gather(*(setup_database(e, settings) for e in engines))
        again = await setup_database(engines[0], settings)
    finally:
        for e in engines:
            await e.dispose()
    assert len({dataclasses.astuple(i) for i in [*infos, again]}) == 1
    async with engine.connect() as conn:
        count = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'event'"
                )
            )
        ).scalar_one()
    assert count == 1


async def test_apache_edition_has_its_own_rollup_hypertable(
    engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    if timescale.has_continuous_aggregates:
        pytest.skip("Community edition uses a continuous aggregate instead")
    async with engine.connect() as conn:
        found = (
            await conn.execute(
                text(
                    "SELECT 1 FROM timescaledb_information.hypertables"
                    " WHERE hypertable_name = 'event_rollup_15m'"
                )
            )
        ).first()
    assert found is not None


async def test_apache_rollups_are_indexed_by_their_keys_only(
    engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    """Every rollup insert maintains each index: the primary key serves bucket ranges, so a
    bucket-only index (TimescaleDB's default) must not exist. (That the upgrade drops the one
    older versions made is tests/db/test_migrations.py's.)"""
    if timescale.has_continuous_aggregates:
        pytest.skip("Community edition uses continuous aggregates instead")
    async with engine.connect() as conn:
        indexes = {
            (row.tablename, row.indexdef.split(" USING ")[1])
            for row in await conn.execute(
                text("SELECT tablename, indexdef FROM pg_indexes WHERE tablename = ANY(:names)"),
                {"names": list(ROLLUPS)},
            )
        }
    assert ("event_rollup_15m", "btree (bucket)") not in indexes
    for name in ROLLUPS:
        defs = [d for t, d in indexes if t == name]
        assert defs and all(not d.startswith("btree (bucket") or "site_id" in d for d in defs), (name, defs)


async def test_community_edition_has_a_continuous_aggregate_and_policy(
    engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    requires_community(timescale)
    async with engine.connect() as conn:
        view = (
            await conn.execute(
                text(
                    "SELECT materialized_only FROM timescaledb_information.continuous_aggregates"
                    " WHERE view_name = 'event_rollup_15m'"
                )
            )
        ).one()
        jobs = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM timescaledb_information.jobs"
                    " WHERE proc_name = 'policy_refresh_continuous_aggregate'"
                )
            )
        ).scalar_one()
    assert view.materialized_only is False
    assert jobs >= 1
    async with engine.connect() as conn:
        retention = (
            await conn.execute(
                text("SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'")
            )
        ).scalar_one()
    assert retention == 1 + len(ROLLUPS)


async def test_every_tier_that_keeps_the_page_has_a_per_site_page_index(
    engine: AsyncEngine, timescale: TimescaleInfo
) -> None:
    """Questions about a few pages of one site read just those rows, on both editions: the
    Apache tier tables' (site_id, page, bucket) index, and the same on each tier aggregate
    (migration 0009), whose materialisation holds it."""
    wanted = {f"ix_{r.name}_page": r.name for r in CATALOGUE.tier_rollups if "page" in r.dimensions}
    assert wanted
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT i.relname, pg_get_indexdef(i.oid) AS definition FROM pg_class i"
                " JOIN pg_index x ON x.indexrelid = i.oid WHERE i.relname = ANY(:names)"
            ),
            {"names": list(wanted)},
        )
        found = {row.relname: row.definition for row in rows}
    assert set(found) == set(wanted)
    for definition in found.values():
        assert "(site_id, page, bucket)" in definition
