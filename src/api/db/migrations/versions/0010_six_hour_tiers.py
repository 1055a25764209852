"""Six-hour tiers at the hours' three phases (`6h`, `6h15`, `6h30`), of the site and page shapes.

Revision 0010, after 0009. A daily question in a zone whose midnight is not UTC's summed 24
hourly rows per group and day (a Kathmandu day by page: 144k rows over 30 days); it now reads
mostly six-hour granules (src/api/rollups/catalogue.py). Apache: six tables, keyed and indexed
like the other tiers, and their watermarks, empty (NULL): the rollup job fills them from the
hourly tiers of the same phase, and the planner uses them once it has. Community: six
continuous aggregates, materialised by their refresh policies (real-time until then)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, PrimaryKeyConstraint, String, Table

from src.api.db import migrate, schema
from src.api.rollups import schema as rollup_schema
from src.api.rollups.catalogue import Rollup, Tier

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SIX_HOURS = 6 * 3600
TIERS = (Tier("6h", SIX_HOURS), Tier("6h15", SIX_HOURS, 15 * 60), Tier("6h30", SIX_HOURS, 30 * 60))
SHAPES = {"site": ("site_id", "event_type"), "page": ("site_id", "page")}
SPECS = tuple(
    Rollup(f"event_rollup_{tier.name}_{shape}", tier.granule, dims, tier)
    for tier in TIERS
    for shape, dims in SHAPES.items()
)
_MEASURES = ("events", "pageviews", "duration_sum", "duration_count")
_TYPES = {"site_id": String(128), "event_type": String(128), "page": String(2048)}
metadata = MetaData()
rollup_watermark = Table(
    "rollup_watermark",
    metadata,
    Column("tier", String(8), primary_key=True),
    Column("complete_until", DateTime(timezone=True)),
)


def _table(spec: Rollup) -> Table:
    """As models.rollup_table makes a tier's table today (frozen here)."""
    others = [d for d in spec.dimensions if d != "site_id"]
    pages = [Index(f"ix_{spec.name}_page", "site_id", "page", "bucket")] if "page" in spec.dimensions else []
    return Table(
        spec.name,
        metadata,
        Column("bucket", DateTime(timezone=True), nullable=False),
        *(Column(d, _TYPES[d], nullable=False) for d in spec.dimensions),
        *(Column(m, BigInteger, nullable=False) for m in _MEASURES),
        PrimaryKeyConstraint("site_id", "bucket", *others),
        *pages,
    )


def upgrade() -> None:
    conn = op.get_bind()
    if schema.read_edition(conn).has_continuous_aggregates:
        with op.get_context().autocommit_block():
            for spec in SPECS:
                rollup_schema.create_continuous_aggregate(op.get_bind(), spec)
        return
    chunk = migrate.settings().events_chunk_interval
    for spec in SPECS:
        rollup_schema.create_rollup_table(conn, _table(spec), chunk)
    rollup_schema.create_watermarks(conn, rollup_watermark, [tier.name for tier in TIERS])


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
