"""The catalogue: every rollup and tier, in one collection, and the granule arithmetic.

A *granule* is a rollup's bucket width in seconds: a quarter hour for the 15-minute rollups
(the wide one keeps every dimension, the site one only site and event type), an hour, six
hours or a day for the *tiers* above them. A tier is a set of rollups of narrow *shapes* (dimension sets) at
one granule and phase: UTC hours, hours at :15 and :30 past the UTC hour (the local hours of
Kathmandu, Kolkata, St John's), six hours at each of those phases, and UTC days. Names, columns
and bucket SQL are the same on both editions: continuous aggregates on Community, the
service's own tables on Apache.

Identifiers and SQL fragments here are constants: nothing is built from input.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

QUARTER = 900  # seconds: the 15-minute rollups' granule
HOUR = 3600
SIX_HOURS = 6 * HOUR
DAY = 86400
GRANULE_SQL: dict[int, str] = {QUARTER: "15 minutes", HOUR: "1 hour", SIX_HOURS: "6 hours", DAY: "1 day"}

# The dimensions rollups group by, in column order (the wide rollup keeps them all); the stats
# planner whitelists them.
DIMENSIONS: tuple[str, ...] = ("site_id", "event_type", "page", "os", "browser", "device", "referrer_domain")
# Every spelling of a page view the collectors we replace send: all count as page views.
PAGEVIEW_TYPES: tuple[str, ...] = ("pageview", "page_view", "$pageview")
IS_PAGEVIEW = "event_type IN ('pageview', 'page_view', '$pageview')"


def floor_to(value: datetime, seconds: int, phase: int = 0) -> datetime:
    """The UTC-aligned multiple of `seconds` (a quarter, hour, day), shifted on by `phase`
    seconds (an hour that starts at :15), at or before `value`."""
    whole = int(value.timestamp())
    return datetime.fromtimestamp(whole - (whole - phase) % seconds, tz=UTC)


def ceil_to(value: datetime, seconds: int, phase: int = 0) -> datetime:
    floor = floor_to(value, seconds, phase)
    return floor if floor == value else floor + timedelta(seconds=seconds)


def floor_quarter(value: datetime) -> datetime:
    return floor_to(value, QUARTER)


def ceil_quarter(value: datetime) -> datetime:
    return ceil_to(value, QUARTER)


def bucket_sql(column: str, granule: int, phase: int = 0) -> str:
    """SQL: the bucket of `column` (a constant column name) of this width and phase."""
    width = GRANULE_SQL[granule]
    if not phase:
        return f"time_bucket(INTERVAL '{width}', {column})"
    origin = f"2000-01-03 00:{phase // 60:02d}:00+00"
    return f"time_bucket(INTERVAL '{width}', {column}, origin => TIMESTAMPTZ '{origin}')"


def sum_sql(expression: str) -> str:
    """SQL: the sum of a bigint expression as a bigint, exact (rollup_sum, migration 0014).
    PostgreSQL's sum(bigint) is numeric, accumulated in a state allocated per group: summing
    rollup rows by the thousand, rollup_sum takes half the time."""
    return f"rollup_sum({expression})"


@dataclass(frozen=True)
class Tier:
    """Buckets of `granule` seconds that start `phase` seconds after the UTC hour. No zone in
    use starts its hours at :45."""

    name: str  # the tables' infix and the watermark's key
    granule: int
    phase: int = 0
    # The finer tier (of the same phase) this one is summed from, once complete there; None:
    # from the wide 15-minute rollup.
    summed_from: str | None = None
    # The TIER_SHAPES it keeps; None: all of them.
    shapes: tuple[str, ...] | None = None

    def bucket(self, column: str) -> str:
        return bucket_sql(column, self.granule, self.phase)


@dataclass(frozen=True)
class Rollup:
    """One rollup relation: its granule, the dimensions it keeps and, above the 15-minute
    rollups, its tier. The 15-minute rollups derive pageviews from `event_type`; the tiers keep
    a `pageviews` column instead, so they need not keep `event_type`."""

    name: str
    granule: int
    dimensions: tuple[str, ...]
    tier: Tier | None = None

    @property
    def has_pageviews_column(self) -> bool:
        return self.tier is not None

    @property
    def phase(self) -> int:
        return self.tier.phase if self.tier else 0

    @property
    def measures(self) -> tuple[str, ...]:
        pageviews = ("pageviews",) if self.has_pageviews_column else ()
        return ("events", *pageviews, "duration_sum", "duration_count")

    def bucket(self, column: str) -> str:
        """SQL: the rollup's bucket of `column` (a constant column name)."""
        return bucket_sql(column, self.granule, self.phase)


def page_index_include(rollup: Rollup) -> list[str]:
    """The columns a tier's (site_id, page, bucket) index holds beside its key: every other
    one, so a question about a few pages is an index-only scan (a third of its time, which
    had gone to fetching rows scattered over the table)."""
    return [d for d in rollup.dimensions if d not in ("site_id", "page")] + list(rollup.measures)


@dataclass(frozen=True)
class Catalogue:
    """Every tier and every rollup; the one place the rest of the code looks them up."""

    tiers: tuple[Tier, ...]  # hours first: the coarser tiers are summed from them
    rollups: tuple[Rollup, ...]  # the 15-minute ones first, widest first
    # Apache edition: late events' changes, waiting to be folded into the rollups
    # (src/api/rollups/maintenance.py). The wide rollup's shape, so a question can read them.
    late: Rollup

    @cached_property
    def _by_name(self) -> dict[str, Rollup]:
        return {rollup.name: rollup for rollup in self.rollups}

    @cached_property
    def _tiers_by_name(self) -> dict[str, Tier]:
        return {tier.name: tier for tier in self.tiers}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def rollup(self, name: str) -> Rollup:
        return self._by_name[name]

    def find(self, name: str) -> Rollup | None:
        """A rollup, or the late changes' relation, by name; None for anything else."""
        return self.late if name == self.late.name else self._by_name.get(name)

    def tier_bit(self, tier: Tier) -> int:
        """The tier's bit in a late change's `tiers` mask."""
        return 1 << self.tiers.index(tier)

    def tier(self, name: str) -> Tier:
        return self._tiers_by_name[name]

    @property
    def quarter_rollups(self) -> tuple[Rollup, ...]:
        """Kept current by the statement that stores events (Apache edition)."""
        return tuple(r for r in self.rollups if r.tier is None)

    @property
    def tier_rollups(self) -> tuple[Rollup, ...]:
        return tuple(r for r in self.rollups if r.tier is not None)

    def of_tier(self, tier: Tier | None) -> tuple[Rollup, ...]:
        return tuple(r for r in self.rollups if r.tier == tier)

    def source_of(self, rollup: Rollup) -> Rollup:
        """Where the job fills a tier rollup from: the same shape in the finer tier it is summed
        from, else the wide 15-minute rollup."""
        assert rollup.tier is not None
        finer = rollup.tier.summed_from
        if finer is None:
            return self.wide
        return self.rollup(rollup.name.replace(f"_{rollup.tier.name}_", f"_{finer}_", 1))

    @property
    def wide(self) -> Rollup:
        """The 15-minute rollup of every dimension: what the tiers are filled from."""
        return self.rollups[0]


# Six-hour tiers at the hours' three phases: a local day of a zone whose midnight is not UTC's
# is then mostly six-hour granules — a Kathmandu day (18:15 UTC) four of the :15 tier, a New
# York day three and six hours — where it was 24 hourly rows per group. Only the shapes daily
# timeseries ask for (the site's totals, pages); each tier's bit in a late change's mask is its
# position here, so new tiers go last.
_SIX_HOUR_SHAPES = ("site", "page")
TIERS: tuple[Tier, ...] = (
    Tier("1h", HOUR),
    Tier("1h15", HOUR, 15 * 60),
    Tier("1h30", HOUR, 30 * 60),
    Tier("1d", DAY, summed_from="1h"),
    Tier("6h", SIX_HOURS, summed_from="1h", shapes=_SIX_HOUR_SHAPES),
    Tier("6h15", SIX_HOURS, 15 * 60, summed_from="1h15", shapes=_SIX_HOUR_SHAPES),
    Tier("6h30", SIX_HOURS, 30 * 60, summed_from="1h30", shapes=_SIX_HOUR_SHAPES),
)
# The shapes that breakdowns and timeseries ask for most, in every tier (six-hour ones: some).
# The planner uses a tier granule only where it lies inside one bucket of the question (so a
# New York day is 6 UTC hours and two six-hour granules, a Kathmandu day four six-hour
# granules of the :15 tier).
TIER_SHAPES: dict[str, tuple[str, ...]] = {
    "site": ("site_id", "event_type"),
    "page": ("site_id", "page"),
    "page_os": ("site_id", "page", "os"),
    "tech": ("site_id", "os", "browser", "device"),
    "referrer": ("site_id", "referrer_domain"),
}

CATALOGUE = Catalogue(
    tiers=TIERS,
    rollups=(
        Rollup("event_rollup_15m", QUARTER, DIMENSIONS),
        Rollup("event_rollup_15m_site", QUARTER, ("site_id", "event_type")),
        *(
            Rollup(f"event_rollup_{tier.name}_{shape}", tier.granule, dims, tier)
            for tier in TIERS
            for shape, dims in TIER_SHAPES.items()
            if tier.shapes is None or shape in tier.shapes
        ),
    ),
    late=Rollup("rollup_late", QUARTER, DIMENSIONS),
)
assert CATALOGUE.wide.dimensions == DIMENSIONS
assert all(t.summed_from is None or CATALOGUE.tier(t.summed_from).phase == t.phase for t in TIERS)
assert all(set(r.dimensions) <= set(DIMENSIONS) for r in CATALOGUE.rollups)
