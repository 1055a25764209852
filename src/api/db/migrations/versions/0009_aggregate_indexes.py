"""Per-site page indexes on the Community edition's tier aggregates.

Revision 0009, after 0008. The Apache tier tables are keyed by (site_id, bucket, …) with a
(site_id, page, bucket) index; the continuous aggregates of the same tiers had only
TimescaleDB's (dimension, bucket) indexes, so a question about a few pages of one site read
those pages' rows of every site. This adds the Apache edition's page index to each tier
aggregate that keeps the page (src/api/rollups/schema.py create_aggregate_indexes; new
aggregates get it when they are made). Nothing changes on the Apache edition."""

from __future__ import annotations

from alembic import op

from src.api.db import schema
from src.api.rollups import schema as rollup_schema
from src.api.rollups.catalogue import CATALOGUE

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if schema.read_edition(op.get_bind()).has_continuous_aggregates:
        # The tiers there were at this revision (later ones get the index when they are made).
        tiers = ("1h", "1h15", "1h30", "1d")
        specs = [s for s in CATALOGUE.tier_rollups if s.tier is not None and s.tier.name in tiers]
        rollup_schema.create_aggregate_indexes(op.get_bind(), specs)


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
