"""The tiers' page indexes hold every other column.

Revision 0013, after 0012. A question about a few pages (the original API's hourly page x OS
question) read its rows through the tiers' (site_id, page, bucket) indexes and fetched each
from the table, where one page's rows lie scattered among every other page's: about a third
of the statement. Each page index of a tier — the Apache edition's tables and the Community
edition's aggregates alike — is made again with every other column included
(src/api/rollups/catalogue.py page_index_include), so those questions are index-only scans.
The tiers and shapes are those of this revision; an index is built per tier (seconds per
million rows; startup waits for it under its lock)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

MEASURES = ("events", "pageviews", "duration_sum", "duration_count")
# The tier shapes that keep the page, with their other dimensions, per tier.
SHAPES: dict[str, tuple[str, ...]] = {"page": (), "page_os": ("os",)}
TIERS: dict[str, dict[str, tuple[str, ...]]] = {
    "1h": SHAPES,
    "1h15": SHAPES,
    "1h30": SHAPES,
    "1d": SHAPES,
    "6h": {"page": ()},
    "6h15": {"page": ()},
    "6h30": {"page": ()},
}


def upgrade() -> None:
    conn = op.get_bind()
    for tier, shapes in TIERS.items():
        for shape, others in shapes.items():
            name = f"event_rollup_{tier}_{shape}"
            index = f"ix_{name}_page"
            # Where the index lives: beside the table, or the aggregate's materialisation.
            drop = conn.execute(
                text(
                    "SELECT format('DROP INDEX %I.%I', schemaname, indexname)"
                    " FROM pg_indexes WHERE indexname = :i"
                ),
                {"i": index},
            ).scalar()
            if drop is not None:
                conn.execute(text(drop))
            include = ", ".join((*others, *MEASURES))
            create = f"CREATE INDEX {index} ON {name} (site_id, page, bucket) INCLUDE ({include})"
            conn.execute(text(create))


def downgrade() -> None:
    raise NotImplementedError("the service only upgrades")
