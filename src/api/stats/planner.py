"""Which relation answers which part of a question's time range.

The range is covered, coarsest first, by UTC days of the daily tier, six-hour and then hourly
granules of the tiers whose hours are the zone's (UTC hours, or hours at :15 or :30 for zones
such as Kathmandu and Kolkata), quarter hours of a 15-minute rollup, and raw events for the
ragged edges. A tier granule is used only where it lies inside one bucket of the question (in
its zone) — so a New York day is three six-hour granules and six UTC hours, a Kathmandu day
four six-hour granules of the :15 tier — and, on the Apache edition, below the tier's
watermark. Every part is bucketed with the same
`time_bucket(interval, t, tz)`, so the parts add up to exactly what raw events give."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from src.api.rollups.catalogue import (
    CATALOGUE,
    DAY,
    HOUR,
    QUARTER,
    SIX_HOURS,
    Rollup,
    Tier,
    ceil_quarter,
    ceil_to,
    floor_quarter,
    floor_to,
)
from src.api.rollups.freshness import ALWAYS
from src.api.stats.params import BucketInterval
from src.api.stats.question import Question

Run = tuple[datetime, datetime]
RAW = "event"
_ORIGIN = datetime(2000, 1, 3)  # time_bucket's origin for fixed widths (months: 2000-01-01)
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True)
class Part:
    """One relation and the disjoint [lo, hi) runs of time it answers for."""

    relation: str  # a rollup name (src/api/rollups/catalogue.py) or RAW; never input
    granule: int  # seconds per bucket of the relation; 0 for raw events
    runs: tuple[Run, ...]
    # Each run lies inside one bucket of the question: bucket it once per run, not per row.
    one_bucket_per_run: bool = False
    # Each row of the relation is a group of the answer on its own: every granule is a whole
    # bucket, no other part reads those buckets, and every dimension it keeps is grouped by.
    whole_groups: bool = False
    # Each granule is one whole bucket of the question: a row's bucket is its own `bucket`
    # column, with no time_bucket per row (its groups may still need summing).
    granule_is_bucket: bool = False

    @property
    def spec(self) -> Rollup | None:
        return CATALOGUE.find(self.relation)


@dataclass(frozen=True)
class Plan:
    parts: tuple[Part, ...]

    @property
    def uses_rollup(self) -> bool:
        return any(p.relation != RAW for p in self.parts)

    @property
    def has_raw(self) -> bool:
        return any(p.relation == RAW for p in self.parts)

    @property
    def relations(self) -> tuple[str, ...]:
        return tuple(p.relation for p in self.parts if p.relation != RAW)


def raw_plan(question: Question) -> Plan:
    return Plan(parts=(Part(RAW, 0, ((question.window.start, question.window.end),)),))


def needed_dimensions(question: Question) -> set[str]:
    needed = set(question.group_by) | {name for name, values in question.filters.items() if values}
    return {"os" if name == "operating_system" else name for name in needed}


# Rough number of distinct values per dimension, as a power of ten: what makes a rollup big.
_CARDINALITY: dict[str, int] = {
    "site_id": 1,
    "event_type": 1,
    "os": 1,
    "browser": 1,
    "device": 1,
    "referrer_domain": 2,
    "page": 3,
}


def narrowest(tier: Tier | None, needed: set[str]) -> str | None:
    """The smallest rollup of this tier (None: the 15-minute rollups) that keeps every needed
    dimension."""
    fitting = [s for s in CATALOGUE.of_tier(tier) if needed <= set(s.dimensions)]
    if not fitting:
        return None
    return min(fitting, key=lambda s: sum(_CARDINALITY[d] for d in s.dimensions)).name


def _bucket_key(local: datetime, interval: BucketInterval) -> int:
    """Which bucket of time_bucket(interval, …) a local wall-clock time falls in."""
    if interval.months:
        return ((local.year - 2000) * 12 + local.month - 1) // interval.months
    return (local - _ORIGIN) // timedelta(seconds=interval.seconds)


def bucket_identity(question: Question, offset: timedelta | None) -> Callable[[datetime], object] | None:
    """A function that tells two instants apart when they fall in different buckets of the
    question (in its zone); None for questions without buckets. `offset`: the question's
    fixed_offset."""
    interval = question.interval
    if interval is None:
        return None
    if offset is not None and not interval.months:
        # One UTC offset over the whole range (UTC, Kathmandu, a summer month of Berlin): the
        # buckets are fixed-width steps from one instant, so an instant's bucket is a division
        # (an hourly question plans thousands of granules: this is 5x cheaper per call).
        base = _ORIGIN.replace(tzinfo=UTC) - offset
        width = timedelta(seconds=interval.seconds)

        def fixed_identity(t: datetime) -> object:
            return (t - base) // width

        return fixed_identity
    if question.tz == "UTC":  # the default zone, and no offsets to look up

        def utc_identity(t: datetime) -> object:
            return _bucket_key(t.astimezone(UTC).replace(tzinfo=None), interval)

        return utc_identity
    zone = ZoneInfo(question.tz)

    def identity(t: datetime) -> object:
        local = t.astimezone(zone)
        return (local.utcoffset(), _bucket_key(local.replace(tzinfo=None), interval))

    return identity


class Fit:
    """Whether a tier granule [t, t + granule) lies inside one bucket of the question, in its
    zone (`__call__`), and for a whole tier at once where arithmetic tells (`every`). The
    identity includes the UTC offset: across a DST change wall-clock time is not monotonic,
    so a granule with one inside never counts as inside one bucket."""

    def __init__(self, question: Question) -> None:
        self.interval = question.interval
        offset = fixed_offset(question) if self.interval is not None else None  # samples the zone
        self.identity = bucket_identity(question, offset)
        # One UTC offset and a fixed width: buckets are steps of `width` from `base` (seconds).
        self.width: int | None = None
        self.base = 0
        if offset is not None and self.interval is not None and not self.interval.months:
            self.width = self.interval.seconds
            self.base = int((_ORIGIN.replace(tzinfo=UTC) - offset).timestamp())

    def __call__(self, t: datetime, granule: int) -> bool:
        interval, identity = self.interval, self.identity
        if interval is None or identity is None:
            return True
        if not interval.months and interval.seconds < granule:
            return False
        return identity(t) == identity(t + timedelta(seconds=granule) - _TICK)

    def every(self, granule: int, phase: int) -> bool | None:
        """True: every granule of this width and phase fits (a question without buckets, or
        fixed-width buckets that are whole multiples of the granule and start on its grid);
        False: none does (buckets narrower than the granule); None: each must be asked. An
        hourly question over 30 days asks no granule one by one."""
        interval = self.interval
        if interval is None:
            return True
        if not interval.months and interval.seconds < granule:
            return False
        width = self.width
        if width is not None and width % granule == 0 and (self.base - phase) % granule == 0:
            return True
        return None

    def may_hold_runs(self, granule: int) -> bool:
        """Whether a bucket can hold _PER_RUN_MIN granules (wall-clock days run up to two hours
        long across a DST change): else no plan buckets once per run."""
        interval = self.interval
        if interval is None or self.identity is None:
            return False
        return bool(interval.months) or interval.seconds + 2 * HOUR >= _PER_RUN_MIN * granule


def _cover(
    lo: datetime,
    hi: datetime,
    tiers: list[tuple[Tier, datetime]],
    fits: Fit,
    out: list[tuple[int, datetime, datetime]],
) -> None:
    """Cover [lo, hi) (whole quarter hours) with the coarsest usable granules, in order: a
    piece (granule, lo, hi) is one granule, or a stretch of them where no run will be split
    at bucket edges (Fit.may_hold_runs)."""
    if lo >= hi:
        return
    if not tiers:
        out.append((QUARTER, lo, hi))
        return
    (tier, usable_until), finer = tiers[0], tiers[1:]
    granule, phase = tier.granule, tier.phase
    every = fits.every(granule, phase)
    if every is False:
        _cover(lo, hi, finer, fits, out)
        return
    step = timedelta(seconds=granule)
    cursor = lo
    t = ceil_to(lo, granule, phase)
    last = min(
        floor_to(hi, granule, phase),
        floor_to(usable_until, granule, phase) if usable_until < ALWAYS else hi,
    )
    if every and t + step <= last:  # one stretch of granules, all of them usable
        _cover(cursor, t, finer, fits, out)
        stop = t + (last - t) // step * step
        if fits.may_hold_runs(granule):  # granule by granule: runs split at bucket edges
            out.extend((granule, t + n * step, t + (n + 1) * step) for n in range((stop - t) // step))
        else:
            out.append((granule, t, stop))
        cursor = t = stop
    while t + step <= last:
        if fits(t, granule):
            _cover(cursor, t, finer, fits, out)
            out.append((granule, t, t + step))
            cursor = t + step
        t += step
    _cover(cursor, hi, finer, fits, out)


_PER_RUN_MIN = 4  # granules per run, on average, for bucketing once per run


def _merge(pieces: list[Run], identity: Callable[[datetime], object] | None) -> list[Run]:
    """Adjacent pieces as runs; with `identity`, only pieces of the same bucket merge."""
    runs: list[Run] = []
    for lo, hi in pieces:
        if runs and runs[-1][1] == lo and (identity is None or identity(runs[-1][0]) == identity(lo)):
            runs[-1] = (runs[-1][0], hi)
        else:
            runs.append((lo, hi))
    return runs


_DAILY: tuple[Tier, ...] = tuple(t for t in CATALOGUE.tiers if t.granule == DAY)
_HOURLY: dict[int, Tier] = {t.phase: t for t in CATALOGUE.tiers if t.granule == HOUR}  # by phase
_SIX_HOURLY: dict[int, Tier] = {t.phase: t for t in CATALOGUE.tiers if t.granule == SIX_HOURS}


def hour_phase(question: Question) -> int:
    """Where the zone's local hours start, in seconds past the UTC hour (Kathmandu, +05:45:
    at :15), read at the start of the range. Totals and breakdowns pair UTC hours with UTC
    days, whatever the zone."""
    if question.interval is None or question.tz == "UTC":
        return 0
    offset = question.window.start.astimezone(ZoneInfo(question.tz)).utcoffset() or timedelta(0)
    return int(-offset.total_seconds()) % HOUR


def _granule_is_bucket(question: Question, spec: Rollup, fixed: bool) -> bool:
    """Whether each granule of the rollup is one whole bucket of the question: the bucket is the
    granule, with one UTC offset over the whole range (`fixed`; the planner uses only granules
    inside one bucket, so a granule as wide as the bucket is the bucket)."""
    interval = question.interval
    return fixed and interval is not None and not interval.months and interval.seconds == spec.granule


def _whole_groups(question: Question, spec: Rollup, fixed: bool) -> bool:
    """Whether each row of a tier is one group of the answer: each granule is a bucket (so no
    two granules, nor a granule and another part's time, share a bucket, as the repeated hour
    of a fall-back night would), and the question fixes the site or groups by it, and groups by
    every other dimension the tier keeps, as the column itself."""
    if spec.tier is None or not _granule_is_bucket(question, spec, fixed):
        return False
    return all(d in question.group_by or (d == "site_id" and question.site_id) for d in spec.dimensions)


def fixed_offset(question: Question, lead: timedelta = timedelta(0)) -> timedelta | None:
    """The zone's UTC offset when it is the same over the whole range of the question (and
    `lead` before it), else None. No zone changes its offset and back within a day: a daily
    sample finds every change."""
    if question.tz == "UTC":
        return timedelta(0)
    zone, start, end = ZoneInfo(question.tz), question.window.start - lead, question.window.end
    days = int((end - start) / timedelta(days=1))
    moments = [start + timedelta(days=d) for d in range(days + 1)] + [end]
    offsets = {t.astimezone(zone).utcoffset() for t in moments}
    return offsets.pop() if len(offsets) == 1 else None


def tiered_plan(
    question: Question, usable_until: Mapping[str, datetime | None], *, late: bool = False
) -> Plan:
    """The plan for a question the 15-minute rollup can serve (see service.rollup_obstacle);
    `usable_until` maps tier names to how far each is complete. With `late` (late changes wait
    to be folded in the range, src/api/rollups/maintenance.py) the plan also reads them, over
    every run a rollup answers for: a change not folded is in none of the rollups yet, and
    once folded it has left `rollup_late` in the same commit, so each counts once."""
    start, end = question.window.start, question.window.end
    needed = needed_dimensions(question)
    quarter = narrowest(None, needed)
    assert quarter is not None  # the wide 15-minute rollup keeps every dimension
    phase = hour_phase(question)
    hours = _HOURLY.get(phase, _HOURLY[0])  # the zone's hours, else UTC's
    six_hours = _SIX_HOURLY.get(phase, _SIX_HOURLY[0])
    tiers: list[tuple[Tier, datetime]] = []
    relations: dict[int, str] = {QUARTER: quarter}
    for tier in (*_DAILY, six_hours, hours):  # coarsest first
        relation = narrowest(tier, needed)
        until = usable_until.get(tier.name)
        if relation is not None and until is not None:
            tiers.append((tier, until))
            relations[tier.granule] = relation
    pieces: list[tuple[int, datetime, datetime]] = []
    mid_lo, mid_hi = ceil_quarter(start), floor_quarter(end)
    fits = Fit(question)
    _cover(mid_lo, mid_hi, tiers, fits, pieces)
    # Adjacent granules merge into runs. Tier runs that hold several granules each stay inside
    # one bucket of the question, so SQL buckets them once per run rather than once per row;
    # short runs (an hourly question over hours) are cheaper as one range bucketed per row.
    identity = fits.identity
    fixed = fits.width is not None  # one UTC offset over the range, fixed-width buckets
    parts = []
    for granule in (DAY, SIX_HOURS, HOUR, QUARTER):
        mine = [(lo, hi) for g, lo, hi in pieces if g == granule]
        if not mine:
            continue
        runs = _merge(mine, None)
        per_run = False
        if granule != QUARTER and fits.may_hold_runs(granule):
            split = _merge(mine, identity)
            granules = sum((hi - lo).total_seconds() for lo, hi in mine) / granule
            per_run = granules >= _PER_RUN_MIN * len(split)
            runs = split if per_run else runs
        spec = CATALOGUE.rollup(relations[granule])
        # Late changes share the rollups' buckets: then no rollup row is a group on its own.
        whole = not late and not per_run and _whole_groups(question, spec, fixed)
        is_bucket = not per_run and _granule_is_bucket(question, spec, fixed)
        parts.append(Part(relations[granule], granule, tuple(runs), per_run, whole, is_bucket))
    if late and pieces:
        covered = _merge(sorted((lo, hi) for _, lo, hi in pieces), None)
        is_bucket = _granule_is_bucket(question, CATALOGUE.late, fixed)
        parts.append(Part(CATALOGUE.late.name, QUARTER, tuple(covered), granule_is_bucket=is_bucket))
    edges = tuple(run for run in ((start, mid_lo), (mid_hi, end)) if run[0] < run[1])
    if edges:
        parts.append(Part(RAW, 0, edges))
    return Plan(parts=tuple(parts))
