"""Versioned migrations, each test on a database of its own (made on the server DATABASE_URL
names, dropped afterwards): upgrading one the service made before migrations loses nothing,
an empty one gets the whole schema, a second upgrade does nothing, concurrent upgrades apply
each revision once, and `python -m src.cli db upgrade` does what startup does."""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from src.api.config import Settings, get_settings
from src.api.db import migrate
from src.api.db.engine import create_engine
from src.api.db.timescale import setup_database
from src.api.rollups import activity, pages
from src.api.rollups.catalogue import CATALOGUE
from src.cli import main as cli_main
from tests.db import legacy_schema

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
EVENTS = 3000


@dataclasses.dataclass(frozen=True)
class Scratch:
    settings: Settings
    engine: AsyncEngine


@pytest.fixture
async def scratch(anyio_backend: str) -> AsyncIterator[Scratch]:
    """An empty database beside the test database: `<its name>_mig_<random>`."""
    base = make_url(get_settings().database_url)
    name = f"{base.database}_mig_{secrets.token_hex(4)}"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    # `name` is made here from the configured name and hex digits, never input.
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    settings = dataclasses.replace(get_settings(), database_url=url, db_pool_size=4)
    engine = create_engine(settings)
    try:
        yield Scratch(settings, engine)
    finally:
        await engine.dispose()
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


async def relations(engine: AsyncEngine) -> dict[str, int]:
    """Every table, view and index of the public schema, by name: its OID, which changes when a
    relation is dropped and made again."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.relname, c.oid::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'm', 'i', 'p')"
                " AND c.relname NOT LIKE 'alembic_version%'"
            )
        )
        return {row.relname: row.oid for row in rows}


async def remade_by_0008(engine: AsyncEngine) -> set[str]:
    """The tier aggregates and their materialisations, as relations() and contents() name them."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT view_name, quote_ident(materialization_hypertable_schema) || '.'"
                " || quote_ident(materialization_hypertable_name) AS materialization,"
                " materialization_hypertable_name AS hypertable"
                " FROM timescaledb_information.continuous_aggregates WHERE view_name = ANY(:names)"
            ),
            {"names": [spec.name for spec in CATALOGUE.tier_rollups]},
        )
        names: set[str] = set()
        for row in rows:
            names |= {row.view_name, row.materialization, row.hypertable}
        indexes = await conn.execute(
            text(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " JOIN pg_class t ON t.oid = i.indrelid WHERE t.relname = ANY(:tables)"
            ),
            {"tables": list(names)},
        )
        return names | {row.relname for row in indexes}


async def watermark_rows(engine: AsyncEngine) -> dict[str, object]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT tier, complete_until FROM rollup_watermark"))
        return {row.tier: row.complete_until for row in rows}


async def contents(engine: AsyncEngine) -> dict[str, tuple[int, str]]:
    """Every row of every table of the public schema and of every hypertable (a continuous
    aggregate's materialisation too), as (count, digest); and the hypertables' dimensions."""
    async with engine.connect() as conn:
        names = (
            await conn.execute(
                text(
                    "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables"
                    " WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                    " UNION SELECT quote_ident(hypertable_schema) || '.' || quote_ident(hypertable_name)"
                    " FROM timescaledb_information.hypertables"
                )
            )
        ).scalars()
        found: dict[str, tuple[int, str]] = {}
        for name in names:
            # `name` comes from the catalogue, quoted by PostgreSQL.
            row = (
                await conn.execute(
                    text(
                        # Without nulls: a revision that adds a nullable column keeps the rows.
                        f"SELECT count(*) AS n, md5(coalesce(string_agg(r, '|' ORDER BY r), '')) AS digest"
                        f" FROM (SELECT jsonb_strip_nulls(to_jsonb(t))::text AS r FROM {name} t) rows"
                    )
                )
            ).one()
            found[name] = (row.n, row.digest)
        # Where the rows are kept: the hypertables' dimensions and chunks.
        for catalogue in ("dimensions", "chunks"):
            row = (
                await conn.execute(
                    text(
                        f"SELECT count(*), md5(string_agg(c::text, '|' ORDER BY c::text)) FROM timescaledb_information.{catalogue} c"
                    )
                )
            ).one()
            found[catalogue] = (row[0], row[1])
    return found


async def revision_and_differences(engine: AsyncEngine) -> tuple[str | None, list[Any]]:
    async with engine.connect() as conn:
        revision = await conn.run_sync(migrate.current_revision)
        differences = list(await conn.run_sync(migrate.schema_differences))
    return revision, differences


def upgrades_run(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Running upgrade")]


async def fill_legacy_database(engine: AsyncEngine, edition: str) -> None:
    """Events over several days (so several chunks), the rollups of them, a watermark set."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(
            text(
                "INSERT INTO event (id, time, site_id, event_type, page, url, ip_address, user_agent, os,"
                " browser, device, is_bot, referrer, referrer_domain, session_id, visitor_id, user_id,"
                " duration, description, properties)"
                " SELECT gen_random_uuid(), now() - INTERVAL '10 days' + n * INTERVAL '4 minutes',"
                " 'site-' || n % 3, CASE WHEN n % 5 = 0 THEN 'signup' ELSE 'pageview' END,"
                " '/page/' || n % 11, 'https://example.com/page/' || n % 11, '203.0.113.' || n % 250,"
                " 'agent ' || n % 7, (ARRAY['Linux', 'Mac OS X', 'Windows'])[1 + n % 3],"
                " (ARRAY['Firefox', 'Chrome'])[1 + n % 2], (ARRAY['desktop', 'mobile'])[1 + n % 2],"
                " n % 13 = 0, 'https://ref' || n % 4 || '.example/', 'ref' || n % 4 || '.example',"
                " 's' || n / 10, 'v' || n % 17, CASE WHEN n % 3 = 0 THEN 'u' || n END, n % 90,"
                " CASE WHEN n % 9 = 0 THEN 'described' END, jsonb_build_object('n', n)"
                " FROM generate_series(1, :events) AS n"
            ),
            {"events": EVENTS},
        )
        if edition == "timescale":
            for spec in legacy_schema.ROLLUP_SPECS:
                await conn.execute(
                    text("CALL refresh_continuous_aggregate(CAST(:v AS regclass), NULL, NULL)"),
                    {"v": spec.name},
                )
            return
        for spec in legacy_schema.ROLLUP_SPECS:
            dims = ", ".join(spec.dimensions)
            pageviews = ", count(*) FILTER (WHERE event_type = 'pageview')" if spec.tiered else ""
            # Names and bucket SQL are the fixture's constants.
            await conn.execute(
                text(
                    f"INSERT INTO {spec.name} SELECT {spec.bucket('time')} AS bucket, {dims}, count(*)"
                    f"{pageviews}, sum(duration), count(duration) FROM event GROUP BY bucket, {dims}"
                )
            )
        await conn.execute(
            text("UPDATE rollup_watermark SET complete_until = date_trunc('hour', now()) WHERE tier = '1h'")
        )


def legacy_retention(settings: Settings) -> str:
    """The retention as the code before migrations took it: interval text."""
    return settings.events_retention.sql if settings.events_retention else "3 months"


async def test_upgrade_keeps_every_row_of_a_database_made_before_migrations(
    scratch: Scratch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = scratch.settings
    edition = await legacy_schema.create_legacy_schema(
        scratch.engine, settings.events_chunk_interval, legacy_retention(settings)
    )
    await fill_legacy_database(scratch.engine, edition)
    before, relations_before = await contents(scratch.engine), await relations(scratch.engine)
    assert before["public.event"][0] == EVENTS
    assert before["chunks"][0] > 5, "events in several chunks"
    if edition == "apache":
        assert all(before[f"public.{spec.name}"][0] > 0 for spec in legacy_schema.ROLLUP_SPECS), (
            "every rollup has rows"
        )
    caplog.set_level(logging.INFO)
    # Community: 0008 makes the tier aggregates again, so that page_view and $pageview count as
    # page views (a continuous aggregate's query cannot be altered); they hold no event, only
    # sums of them, and answer the same (tests/compat/test_collector_monitoring.py).
    remade = await remade_by_0008(scratch.engine) if edition == "timescale" else set()
    before = {name: value for name, value in before.items() if name not in remade}
    if remade:  # the remade aggregates' hypertables have new ids, chunks and dimensions
        before = {name: value for name, value in before.items() if name not in ("chunks", "dimensions")}
    relations_before = {name: oid for name, oid in relations_before.items() if name not in remade}
    # 0013 builds the tiers' page indexes again, with every other column included: an index
    # holds no row of its own, so that is all it remakes.
    relations_before = {
        name: oid
        for name, oid in relations_before.items()
        if not (name.startswith("ix_event_rollup_") and name.endswith("_page"))
    }
    # 0010 adds hypertables (the six-hour tiers), so the catalogue of dimensions grows; and, on
    # Apache, their watermarks: the rows there were stay as they were.
    before.pop("dimensions", None)
    before.pop("public.rollup_watermark", None)
    watermarks_before = await watermark_rows(scratch.engine) if edition == "apache" else {}

    await setup_database(scratch.engine, settings)

    assert len(upgrades_run(caplog)) == len(migrate.history()), "the baseline ran, and every later revision"
    after, relations_after = await contents(scratch.engine), await relations(scratch.engine)
    assert {name: after[name] for name in before} == before
    if edition == "apache":
        watermarks_after = await watermark_rows(scratch.engine)
        assert {tier: watermarks_after[tier] for tier in watermarks_before} == watermarks_before
        assert set(watermarks_after) - set(watermarks_before) == {"6h", "6h15", "6h30"}
    # What later revisions add is new: 0002 the late changes' table (Apache), empty; 0003 the
    # activity masks, filled from the events already there, and their changes, empty (0011 makes
    # them the activity tables, filled the same way: as a rebuild from the events; 0012 adds
    # the per-day counts of first and last quarters and each row's `prev_last`, filled from
    # them, the same as a rebuild too); 0006 the
    # sites and keys tables, empty; 0007 the export pipeline's tables, empty (nothing is
    # exported until the first run); 0008 the sessions' tables, empty until the job first
    # runs (session_job: its one row).
    added = {
        name
        for name in set(after) - set(before)
        if not name.startswith("_timescaledb_internal.")
        and name not in ("chunks", "dimensions", "public.rollup_watermark")  # compared above
    }
    late = {"public.rollup_late"} if edition == "apache" else set()
    # 0010 the six-hour tiers' tables (Apache; Community's aggregates are views), which the
    # rollup job fills from the hourly tiers.
    six_hours = (
        {f"public.event_rollup_{t}_{s}" for t in ("6h", "6h15", "6h30") for s in ("site", "page")}
        if edition == "apache"
        else set()
    )
    sites = {
        f"public.{t}" for t in ("site", "site_attribution", "api_key", "privacy_salt", "rate_limit_counter")
    }
    exports = {f"public.{t}" for t in ("export_watermark", "export_run", "export_file", "processed_file")}
    sessions = {
        f"public.{name}" for name in ("session", "session_change", "session_daily_metric", "session_run")
    }
    assert added == {
        *late,
        *six_hours,
        "public.activity",
        "public.activity_first",
        "public.activity_day",
        "public.activity_late",
        "public.page_activity",
        "public.page_day",
        "public.page_activity_late",
        *sites,
        *exports,
        *sessions,
        "public.session_job",
    }
    assert all(
        after[name][0] == 0
        for name in (*late, "public.activity_late", "public.page_activity_late", *sites, *exports, *sessions)
    )
    assert after["public.activity"][0] > 0 and after["public.activity_first"][0] > 0
    filled = {
        name: after[name]
        for name in (
            "public.activity",
            "public.activity_first",
            "public.activity_day",
            "public.page_activity",
            "public.page_day",
        )
    }
    async with scratch.engine.begin() as conn:
        for statement in (*activity.REBUILD_SQL, *pages.REBUILD_SQL):
            await conn.execute(statement)
    rebuilt = await contents(scratch.engine)
    assert {name: rebuilt[name] for name in filled} == filled
    # Nothing was dropped and made again (with its rows copied, say): the same relations.
    assert {name: relations_after[name] for name in relations_before} == relations_before
    assert await revision_and_differences(scratch.engine) == (migrate.head_revision(), [])


async def test_upgrade_completes_a_database_of_an_older_version(scratch: Scratch) -> None:
    """A database from before migrations is not merely stamped: the baseline brings one made
    by an older version to today's schema, as every start used to (here: without the
    (site_id, time) index, without the :30 tier, with the bucket index since dropped)."""
    settings = scratch.settings
    edition = await legacy_schema.create_legacy_schema(
        scratch.engine, settings.events_chunk_interval, legacy_retention(settings)
    )
    older = [spec.name for spec in legacy_schema.ROLLUP_SPECS if spec.name.startswith("event_rollup_1h30_")]
    async with scratch.engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("DROP INDEX ix_event_site_time"))
        # Names are the fixture's constants.
        for name in older:
            await conn.execute(
                text(f"DROP {'MATERIALIZED VIEW' if edition == 'timescale' else 'TABLE'} {name}")
            )
        if edition == "apache":
            await conn.execute(text("DELETE FROM rollup_watermark WHERE tier = '1h30'"))
            await conn.execute(text("CREATE INDEX event_rollup_15m_bucket_idx ON event_rollup_15m (bucket)"))

    info = await setup_database(scratch.engine, settings)

    assert await revision_and_differences(scratch.engine) == (migrate.head_revision(), [])
    async with scratch.engine.connect() as conn:
        if info.has_continuous_aggregates:
            query = "SELECT view_name FROM timescaledb_information.continuous_aggregates"
            assert set((await conn.execute(text(query))).scalars()) == set(CATALOGUE.names)
        else:
            watermarks = set((await conn.execute(text("SELECT tier FROM rollup_watermark"))).scalars())
            assert watermarks == {tier.name for tier in CATALOGUE.tiers}
            query = "SELECT indexname FROM pg_indexes WHERE indexname = 'event_rollup_15m_bucket_idx'"
            assert (await conn.execute(text(query))).first() is None


async def test_upgrade_creates_the_schema_on_an_empty_database(scratch: Scratch) -> None:
    info = await setup_database(scratch.engine, scratch.settings)

    assert await revision_and_differences(scratch.engine) == (migrate.head_revision(), [])
    async with scratch.engine.connect() as conn:
        dimension = (
            await conn.execute(
                text(
                    "SELECT column_name, time_interval = CAST(:chunk AS interval) AS configured"
                    " FROM timescaledb_information.dimensions WHERE hypertable_name = 'event'"
                ),
                {"chunk": scratch.settings.events_chunk_interval},
            )
        ).one()
        hypertables = set(
            (
                await conn.execute(text("SELECT hypertable_name FROM timescaledb_information.hypertables"))
            ).scalars()
        )
        aggregates = set(
            (
                await conn.execute(
                    text("SELECT view_name FROM timescaledb_information.continuous_aggregates")
                )
            ).scalars()
        )
        watermarks = (
            set((await conn.execute(text("SELECT tier FROM rollup_watermark"))).scalars())
            if not info.has_continuous_aggregates
            else set()
        )
    assert (dimension.column_name, dimension.configured) == ("time", True)
    assert "event" in hypertables
    if info.has_continuous_aggregates:
        assert aggregates == set(CATALOGUE.names)
    else:
        assert set(CATALOGUE.names) <= hypertables
        assert watermarks == {tier.name for tier in CATALOGUE.tiers}


async def test_upgrading_twice_changes_nothing(scratch: Scratch, caplog: pytest.LogCaptureFixture) -> None:
    await setup_database(scratch.engine, scratch.settings)
    before, relations_before = await contents(scratch.engine), await relations(scratch.engine)
    caplog.set_level(logging.INFO)

    await setup_database(scratch.engine, scratch.settings)

    assert upgrades_run(caplog) == []
    assert await relations(scratch.engine) == relations_before
    assert await contents(scratch.engine) == before
    assert (await revision_and_differences(scratch.engine))[0] == migrate.head_revision()


async def test_the_models_check_sees_a_schema_change_without_its_migration(scratch: Scratch) -> None:
    """The comparison the tests above rely on (and `db check`) reports a difference: here the
    database lacks an index and has a column the models do not know."""
    await setup_database(scratch.engine, scratch.settings)
    async with scratch.engine.begin() as conn:
        await conn.execute(text("DROP INDEX ix_event_site_time"))
        await conn.execute(text("ALTER TABLE event ADD COLUMN country varchar(2)"))

    _, differences = await revision_and_differences(scratch.engine)

    assert sorted(difference[0] for difference in differences) == ["add_index", "remove_column"], differences


async def test_concurrent_starts_apply_each_revision_once(
    scratch: Scratch, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers starting together on an empty database: the advisory lock lets one migrate."""
    caplog.set_level(logging.INFO)
    engines = [create_engine(scratch.settings) for _ in range(3)]
    try:
        # Without the lock they interleave, collide or wait on each other for ever.
        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for engine in engines:
                    group.start_soon(setup_database, engine, scratch.settings)
    finally:
        for engine in engines:
            await engine.dispose()
    assert len(upgrades_run(caplog)) == len(migrate.history())
    assert await revision_and_differences(scratch.engine) == (migrate.head_revision(), [])


async def run_cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "DATABASE_URL": settings.database_url}
    done = await anyio.run_process([sys.executable, "-m", "src.cli", *args], cwd=ROOT, env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def test_cli_upgrades_a_fresh_database_and_prints_the_head(scratch: Scratch) -> None:
    """Three at once, like the workers of a deployment that also runs `db upgrade` before them:
    each waits for the lock and prints the head; one of them applied the revisions."""
    head = migrate.head_revision()
    results: list[tuple[int, str, str]] = []

    async def upgrade() -> None:
        results.append(await run_cli(scratch.settings, "db", "upgrade"))

    with anyio.fail_after(180):
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(upgrade)
    assert [(code, out) for code, out, _ in results] == [(0, f"{head} (head)\n")] * 3, results
    logs = "".join(err for _, _, err in results)
    assert logs.count("Running upgrade") == len(migrate.history()), logs
    assert await revision_and_differences(scratch.engine) == (head, [])

    assert (await run_cli(scratch.settings, "db", "current"))[:2] == (0, f"{head} (head)\n")
    assert (await run_cli(scratch.settings, "db", "check"))[:2] == (0, "the models match the database\n")


def test_cli_lists_the_revisions(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["db", "history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [r.revision for r in migrate.history()]
    assert lines[-1].endswith("(head)")


def test_revisions_form_one_line_numbered_in_order() -> None:
    """0001, 0002, …: each after the one before it, in a file named by its number (two branches
    that both add a revision must renumber one before merging, or this fails)."""
    history = migrate.history()
    assert [r.revision for r in history] == [f"{n:04d}" for n in range(1, len(history) + 1)]
    assert [r.down_revision for r in history] == [None, *(r.revision for r in history[:-1])]
    assert all(r.path.name.startswith(f"{r.revision}_") for r in history)
    assert migrate.head_revision() == history[-1].revision
