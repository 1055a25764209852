"""The rollups' DDL, called by the migrations (src/api/db/migrations/) and at startup: tables
and watermarks on Apache, continuous aggregates and their policies on Community, retention
policies. Each function is idempotent and synchronous (Alembic runs on a sync connection) and
takes the tables or rollups to make as arguments: a migration passes its own frozen copies."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, Table, text

from src.api.config import Duration
from src.api.db.schema import create_tables
from src.api.rollups.catalogue import GRANULE_SQL, HOUR, IS_PAGEVIEW, Rollup, page_index_include


def create_rollup_table(conn: Connection, table: Table, chunk_interval: str) -> None:
    """Apache edition: a rollup kept by the service itself, as a hypertable on `bucket`."""
    create_tables(conn, [table])
    # No index on bucket alone: each primary key serves bucket ranges (the 15-minute rollups'
    # begins with bucket, the tiers' with (site_id, bucket)); one index less is one less for
    # every insert's rollup upsert to maintain, and the tiers' per-site questions are not
    # misplanned onto it. Older versions made one; it goes.
    conn.execute(
        text(
            "SELECT create_hypertable(:table, by_range('bucket', CAST(:chunk AS interval) * 7),"
            " if_not_exists => TRUE, migrate_data => TRUE, create_default_indexes => FALSE)"
        ),
        {"table": table.name, "chunk": chunk_interval},
    )
    # The table name is a constant of the code (a migration's or the catalogue's), never input.
    conn.execute(text(f"DROP INDEX IF EXISTS {table.name}_bucket_idx"))


def create_watermarks(conn: Connection, table: Table, tiers: Iterable[str]) -> None:
    """Apache edition: one row per tier; NULL (nothing complete) until the rollup job first runs.
    A tier's row that exists keeps its value."""
    create_tables(conn, [table])
    for tier in tiers:
        conn.execute(
            text(
                "INSERT INTO rollup_watermark (tier, complete_until) VALUES (:tier, NULL)"
                " ON CONFLICT (tier) DO NOTHING"
            ),
            {"tier": tier},
        )


def create_continuous_aggregate(conn: Connection, spec: Rollup) -> None:
    """Community edition: the rollup as a continuous aggregate of `event`, and its refresh
    policy. Cannot run inside a transaction: the caller's connection must be in autocommit."""
    exists = conn.execute(
        text("SELECT 1 FROM timescaledb_information.continuous_aggregates WHERE view_name = :name"),
        {"name": spec.name},
    ).first()
    width = GRANULE_SQL[spec.granule]
    if exists is None:
        dims = ", ".join(spec.dimensions)
        pageviews = (
            f" count(*) FILTER (WHERE {IS_PAGEVIEW}) AS pageviews," if spec.has_pageviews_column else ""
        )
        # Identifiers here are constants (a migration's rollup specs), never input.
        conn.execute(
            text(
                f"CREATE MATERIALIZED VIEW {spec.name} WITH (timescaledb.continuous,"
                " timescaledb.materialized_only = false) AS"
                f" SELECT {spec.bucket('time')} AS bucket, {dims},"
                f" count(*) AS events,{pageviews} sum(duration)::bigint AS duration_sum,"
                " count(duration) AS duration_count"
                f" FROM event GROUP BY bucket, {dims} WITH NO DATA"
            )
        )
    create_aggregate_indexes(conn, [spec])
    # Materialise whole buckets once they are closed; real-time aggregation answers the rest.
    conn.execute(
        text(
            "SELECT add_continuous_aggregate_policy(CAST(:name AS regclass), start_offset => NULL,"
            " end_offset => CAST(:width AS interval),"
            " schedule_interval => CAST(:every AS interval), if_not_exists => TRUE)"
        ),
        {"name": spec.name, "width": width, "every": "1 minute" if spec.granule <= HOUR else "1 hour"},
    )


def add_retention_policies(conn: Connection, relations: Iterable[str], retention: Duration | None) -> None:
    """Community edition: TimescaleDB drops old chunks itself, of the events and of the
    aggregates alike, so a rollup never answers for a time the raw events no longer cover.
    The policy is replaced on every start, so a changed EVENTS_RETENTION (or `off`) holds."""
    for relation in relations:
        conn.execute(
            text("SELECT remove_retention_policy(CAST(:rel AS regclass), if_exists => TRUE)"),
            {"rel": relation},
        )
        if retention is None:
            continue
        conn.execute(
            text("SELECT add_retention_policy(CAST(:rel AS regclass), CAST(:keep AS interval))"),
            {"rel": relation, "keep": retention.sql},
        )


def create_aggregate_indexes(conn: Connection, specs: Iterable[Rollup]) -> None:
    """Community edition: the per-site page index the Apache tier tables have (models.py
    rollup_table) on each tier aggregate that keeps the page. TimescaleDB gives an aggregate a
    (dimension, bucket) index per dimension, so a question about a few pages of one site read
    every site's rows of those pages and filtered them (two thirds of them, with three sites).
    It holds every other column, as the Apache one does (catalogue.page_index_include).
    Idempotent; names and columns are the catalogue's constants."""
    for spec in specs:
        if spec.tier is not None and "page" in spec.dimensions:
            include = ", ".join(page_index_include(spec))
            conn.execute(
                text(
                    f"CREATE INDEX IF NOT EXISTS ix_{spec.name}_page ON {spec.name} (site_id, page, bucket)"
                    f" INCLUDE ({include})"
                )
            )
