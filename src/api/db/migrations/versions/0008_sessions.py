"""Sessions: the sessionisation job's tables (src/api/sessions/models.py).

Revision 0008 (issued as 0007; renumbered after 0007_exports took that number).
`session_change` (the change log the statements that store or delete events
append to), `session`, `session_daily_metric`, `session_job` (its watermark, NULL: the next
run sessionises every stored event from scratch) and `session_run`. Plain tables on both
editions. Nothing is filled here: the job's first run does it, in the background.

Also: `page_view` and `$pageview` count as page views in the tiers' `pageviews` column, as
`pageview` does. Apache: the tier rows already filled get the synonyms' events added from the
15-minute rollup (below each tier's watermark; above it the rollup job fills them with the new
sums). Community: the tier continuous aggregates are made again with the new definition (real-
time aggregation answers exactly from raw events until their refresh policies have run)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

from src.api.db import schema
from src.api.rollups import schema as rollup_schema
from src.api.rollups.catalogue import CATALOGUE

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_DDL = (
    """CREATE TABLE IF NOT EXISTS session_change (
        site_id varchar(128) NOT NULL,
        visitor_hash uuid NOT NULL,
        time timestamptz NOT NULL,
        event_type varchar(128) NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS session (
        site_id varchar(128) NOT NULL,
        visitor_hash uuid NOT NULL,
        started_at timestamptz NOT NULL,
        first_event_id uuid NOT NULL,
        ended_at timestamptz NOT NULL,
        visitor varchar(1300) NOT NULL,
        session_id varchar(128),
        duration double precision NOT NULL,
        events integer NOT NULL,
        pageviews integer NOT NULL,
        entry_page varchar(2048),
        exit_page varchar(2048),
        bounce boolean NOT NULL,
        referrer_domain varchar(255) NOT NULL,
        utm_source varchar(255),
        utm_medium varchar(255),
        utm_campaign varchar(255),
        os varchar(32) NOT NULL,
        browser varchar(64) NOT NULL,
        device varchar(16) NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (site_id, visitor_hash, started_at, first_event_id))""",
    "CREATE INDEX IF NOT EXISTS ix_session_site_started ON session (site_id, started_at)",
    "CREATE INDEX IF NOT EXISTS ix_session_started ON session (started_at)",
    """CREATE TABLE IF NOT EXISTS session_daily_metric (
        site_id varchar(128) NOT NULL,
        day date NOT NULL,
        visitors integer NOT NULL,
        sessions integer NOT NULL,
        pageviews bigint NOT NULL,
        events bigint NOT NULL,
        bounces integer NOT NULL,
        bounce_rate double precision NOT NULL,
        avg_session_duration double precision NOT NULL,
        total_duration double precision NOT NULL,
        pages_per_session double precision NOT NULL,
        updated_at timestamptz NOT NULL,
        PRIMARY KEY (site_id, day))""",
    "CREATE INDEX IF NOT EXISTS ix_session_daily_metric_day ON session_daily_metric (day)",
    """CREATE TABLE IF NOT EXISTS session_job (
        id smallint NOT NULL PRIMARY KEY,
        watermark timestamptz)""",
    "INSERT INTO session_job (id, watermark) VALUES (1, NULL) ON CONFLICT (id) DO NOTHING",
    """CREATE TABLE IF NOT EXISTS session_run (
        id uuid NOT NULL PRIMARY KEY,
        trigger varchar(32) NOT NULL,
        event_type varchar(128),
        status varchar(16) NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz,
        duration_seconds double precision,
        result jsonb,
        error text)""",
    "CREATE INDEX IF NOT EXISTS ix_session_run_started ON session_run (started_at)",
)


_SYNONYMS = "('page_view', '$pageview')"
# The tiers there were at this revision (later ones are made with the synonyms).
_TIER_ROLLUPS = [
    s for s in CATALOGUE.tier_rollups if s.tier is not None and s.tier.name in ("1h", "1h15", "1h30", "1d")
]


def _pageview_synonyms() -> None:
    conn = op.get_bind()
    if schema.read_edition(conn).has_continuous_aggregates:
        with op.get_context().autocommit_block():
            bind = op.get_bind()
            for spec in _TIER_ROLLUPS:
                definition = bind.execute(
                    text("SELECT definition FROM pg_views WHERE viewname = :name"), {"name": spec.name}
                ).scalar()
                if definition is not None and "page_view" in definition:
                    continue  # made by this version already
                # Names are the catalogue's constants, never input.
                bind.execute(text(f"DROP MATERIALIZED VIEW IF EXISTS {spec.name}"))
                rollup_schema.create_continuous_aggregate(bind, spec)
        return
    wide = CATALOGUE.wide.name
    for spec in _TIER_ROLLUPS:
        assert spec.tier is not None
        dims = ", ".join(spec.dimensions)
        matches = " AND ".join(f"t.{d} = x.{d}" for d in spec.dimensions)
        conn.execute(
            text(
                f"UPDATE {spec.name} t SET pageviews = t.pageviews + x.extra FROM ("
                f" SELECT {spec.tier.bucket('bucket')} AS b, {dims}, sum(events)::bigint AS extra FROM {wide}"
                f" WHERE event_type IN {_SYNONYMS} AND bucket < (SELECT complete_until FROM rollup_watermark"
                "  WHERE tier = :tier)"
                f" GROUP BY b, {dims}) AS x WHERE t.bucket = x.b AND {matches}"
            ),
            {"tier": spec.tier.name},
        )


def upgrade() -> None:
    for statement in _DDL:
        op.execute(statement)
    _pageview_synonyms()


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
