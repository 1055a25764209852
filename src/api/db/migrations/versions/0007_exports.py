"""The export pipeline's tables and an index on `event.received_at`.

`export_watermark`, `export_run`, `export_file`, `processed_file` (src/api/exports/models.py),
and `ix_event_received_at`: the exporter reads events by when they were received.
Revision 0007, after 0006. New tables and an index only: nothing existing is rewritten. On a
hypertable TimescaleDB makes the index chunk by chunk; a large table takes a while, once."""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATEMENTS = (
    "CREATE INDEX IF NOT EXISTS ix_event_received_at ON event (received_at)",
    """CREATE TABLE IF NOT EXISTS export_watermark (
        kind varchar(16) PRIMARY KEY,
        exported_until timestamptz NOT NULL,
        snapshot text NOT NULL,
        open_since timestamptz NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS export_run (
        id bigserial PRIMARY KEY,
        kind varchar(16) NOT NULL,
        status varchar(16) NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        range_start timestamptz NOT NULL,
        range_end timestamptz NOT NULL,
        late_from timestamptz,
        snapshot text,
        previous_snapshot text,
        open_since timestamptz,
        stamp varchar(32) NOT NULL,
        prefix text NOT NULL,
        format varchar(16) NOT NULL,
        events bigint NOT NULL DEFAULT 0,
        files integer NOT NULL DEFAULT 0,
        bytes bigint NOT NULL DEFAULT 0,
        attempts integer NOT NULL DEFAULT 0,
        error text
    )""",
    "CREATE INDEX IF NOT EXISTS ix_export_run_kind_status ON export_run (kind, status)",
    """CREATE TABLE IF NOT EXISTS export_file (
        run_id bigint NOT NULL REFERENCES export_run (id) ON DELETE CASCADE,
        part integer NOT NULL,
        key text NOT NULL,
        rows bigint NOT NULL,
        bytes bigint NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now(),
        processed_at timestamptz,
        process_error text,
        PRIMARY KEY (run_id, part)
    )""",
    "CREATE INDEX IF NOT EXISTS ix_export_file_unprocessed ON export_file (run_id)"
    " WHERE processed_at IS NULL",
    """CREATE TABLE IF NOT EXISTS processed_file (
        run_id bigint NOT NULL,
        part integer NOT NULL,
        client varchar(160) NOT NULL,
        key text NOT NULL,
        rows bigint NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (run_id, part, client),
        FOREIGN KEY (run_id, part) REFERENCES export_file (run_id, part) ON DELETE CASCADE
    )""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
