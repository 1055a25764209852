"""Sessions: the sessionisation job's tables (src/api/sessions/models.py).

Revision 0007. `session_change` (the change log the statements that store or delete events
append to), `session`, `session_daily_metric`, `session_job` (its watermark, NULL: the next
run sessionises every stored event from scratch) and `session_run`. Plain tables on both
editions. Nothing is filled here: the job's first run does it, in the background."""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0004"
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


def upgrade() -> None:
    for statement in _DDL:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
