"""Answers aggregation questions. The rollups answer wherever the question allows it — an
interval that is a whole number of quarter hours (or months) in a zone whose offsets are too —
the daily and hourly tiers where their granules fit inside the question's buckets
(src/api/stats/planner.py), and raw events what they cannot: ragged range edges, distinct
visitors and sessions, Community-edition ranges with unmaterialised changes. All give the same
rows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from src.api.db.schema import TimescaleInfo
from src.api.errors import InvalidParameter
from src.api.events.schemas import EventBucket
from src.api.rollups import activity, freshness, pages
from src.api.rollups.catalogue import DAY, QUARTER, ceil_quarter, ceil_to, floor_quarter, floor_to
from src.api.sessions import repository as sessions
from src.api.stats import repository
from src.api.stats.params import BucketInterval, TimeRange
from src.api.stats.planner import Plan, fixed_offset, raw_plan, tiered_plan
from src.api.stats.question import (
    ADDITIVE,
    DISTINCT,
    SESSION_COUNTABLE,
    SESSION_DIMENSIONS,
    SESSION_METRICS,
    SESSION_SHARED,
    Question,
)

log = logging.getLogger(__name__)
MAX_BUCKETS = 50_000
_ORIGIN = datetime(2000, 1, 3)  # time_bucket's default origin, read in the question's zone


@dataclass(frozen=True)
class Answer:
    source: str
    rows: list[dict[str, Any]]  # "bucket" (datetime in the zone, or absent), dimensions, metrics


def rollup_obstacle(question: Question) -> str | None:
    """Why the rollup cannot serve this question's time buckets, or None when it can."""
    interval = question.interval
    if interval is not None and interval.months == 0 and interval.seconds % QUARTER:
        return "the interval is not a whole number of 15-minute buckets"
    zone = ZoneInfo(question.tz)
    for moment in (question.window.start, question.window.end, _ORIGIN.replace(tzinfo=zone)):
        offset = moment.astimezone(zone).utcoffset() or timedelta(0)
        if offset.total_seconds() % QUARTER:
            return "the time zone's offset is not a whole number of quarter hours in this range"
    if ceil_quarter(question.window.start) >= floor_quarter(question.window.end):
        return "the range holds no whole 15-minute bucket"
    return None


async def plan(session: AsyncSession, timescale: TimescaleInfo, question: Question) -> Plan:
    needs_additive = any(m in ADDITIVE for m in question.metrics)
    if question.source == "raw" or (question.source == "auto" and not needs_additive):
        return raw_plan(question)
    obstacle = rollup_obstacle(question)
    if obstacle is not None:
        if question.source == "rollup":
            raise InvalidParameter(
                ("query", "source"), f"the rollup cannot answer this: {obstacle}", "rollup"
            )
        return raw_plan(question)
    window = question.window
    usable, late = await freshness.state(session, timescale, window.start, window.end)
    chosen = tiered_plan(question, usable, late=late)
    if question.source == "auto" and not await freshness.exact_over(
        session, timescale, chosen.relations, window.start, window.end
    ):
        return raw_plan(question)
    return chosen


def _check_size(question: Question) -> None:
    """fill=true returns every bucket, so their number is capped."""
    if question.interval is None:
        return
    span = (question.window.end - question.window.start).total_seconds()
    if span / question.interval.approx_seconds() > MAX_BUCKETS:
        raise InvalidParameter(
            ("query", "interval"),
            f"too many buckets for this range (more than {MAX_BUCKETS}); use a wider interval",
            question.interval.sql,
        )


async def answer(
    session: AsyncSession, timescale: TimescaleInfo, question: Question, *, fill: bool = False
) -> Answer:
    if fill:
        _check_size(question)
    check_sessions(question)
    only_sessions = all(m in SESSION_METRICS for m in question.metrics) or any(
        d in SESSION_DIMENSIONS for d in question.group_by
    )
    # Session metrics read the sessions table alone: no plan over events to make.
    chosen = raw_plan(question) if only_sessions else await plan(session, timescale, question)
    await repository.use_zone(session, question.tz)
    bucketed = question.interval is not None
    dims = question.group_by
    params: dict[str, Any] = {
        "interval": question.interval.sql if question.interval else "1 day",
        "tz": question.tz,
        "start": question.window.start,
        "end": question.window.end,
        "site_id": question.site_id,
    }
    for name, values in question.filters.items():
        params[f"f_{name}"] = list(values)
    # One UTC offset over the range and a fixed-width interval: buckets count from an instant.
    # From the first bucket's start: a day that began before a DST change the range starts
    # after is labelled with its own midnight.
    interval = question.interval
    fixed = False
    if interval is not None and not interval.months:
        offset = fixed_offset(question, lead=timedelta(seconds=interval.seconds))
        if offset is not None:
            params["origin"] = _ORIGIN.replace(tzinfo=UTC) - offset
            fixed = True
    site = question.site_id is not None
    shape = _Shape(question)
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    # Every statement returns its groups in the order of the answer; only groups added to those
    # of an earlier statement (one the sums lacked, fill's empty buckets) call for a sort.
    ordered = True
    wanted_additive = any(m in ADDITIVE for m in question.metrics) and not only_sessions
    # Grouped by a session dimension, every metric is the sessions' own.
    wanted_sessions = [m for m in question.metrics if m in SESSION_METRICS or only_sessions]
    wanted_distinct = (any(m in DISTINCT for m in question.metrics) and not only_sessions) or bool(
        wanted_sessions
    )
    if wanted_additive:
        # The statement's rows are the answer when nothing joins them: in a zone other than
        # UTC their buckets then load as UTC wall-clock times, each put in the zone once
        # (shape.from_utc_sums). psycopg converts every instant it loads to the session's zone
        # with a ZoneInfo (UTC's is datetime.timezone.utc, fast): the 14k buckets of the hourly
        # page x OS answer loaded in 12 ms, as wall-clock times in 3.
        alone = not wanted_distinct and not (fill and bucketed)
        utc_buckets = alone and bucketed and question.tz != "UTC"
        statement, runs = repository.additive_statement(
            chosen, dims, question.filters, bucketed=bucketed, site=site, fixed=fixed, utc_buckets=utc_buckets
        )
        sums = await repository.rows(session, statement, {**params, **runs})
        if not bucketed and not dims:
            # A total over no rows at all is one row of NULL sums: the row of zeros below, as
            # the raw path answers.
            sums = [row for row in sums if row[shape.width] is not None]
        if alone and (sums or bucketed or dims):
            # The statement's rows are the answer, one group each, already in order. (A summary
            # with no events at all still gets its row of zeros below.)
            make = shape.from_utc_sums() if utc_buckets else shape.from_sums
            return Answer(source=_source(chosen, wanted_distinct), rows=list(map(make, sums)))
        for row in sums:
            merged[row[: shape.width]] = shape.from_sums(row)
    span = _activity_span(question)
    distinct = [m for m in question.metrics if m in DISTINCT and not only_sessions]
    # Only a question that counts visitors or sessions, and not as one total, reads its buckets.
    wide = await _wide_buckets(session, question, params) if distinct and span is None else None
    by_page = await _page_pieces(session, question, params) if "visitors" in distinct else None
    for metric in distinct:
        if span is not None:
            found_rows = await _counted(session, metric, params, span, site=site)
        elif metric == "visitors" and by_page is not None:
            statement = repository.page_visitors_statement(by_page, question.filters)
            found_rows = await repository.rows(session, statement, {**params, **by_page.params()})
        elif wide is not None:
            # Each bucket is a total of its own part of the range: the activity tables count it.
            found_rows = []
            for bucket, part in wide:
                part_span = _activity_span(part)
                window = {"start": part.window.start, "end": part.window.end}
                if part_span is not None:
                    counted = await _counted(session, metric, params, part_span, site=site)
                else:  # no whole quarter hour in this part: its raw events
                    statement = repository.distinct_statement(metric, (), {}, bucketed=False, site=site)
                    counted = await repository.rows(session, statement, {**params, **window})
                count = int(counted[0][1]) if counted else 0
                # A bucket is a group when it holds events, whether or not they have the key.
                if count or await repository.any_event(session, {**params, **window}, site=site):
                    found_rows.append((bucket, count))
        else:
            statement = repository.distinct_statement(
                metric, dims, question.filters, bucketed=bucketed, site=site, fixed=fixed
            )
            found_rows = await repository.rows(session, statement, params)
        ordered = _merge(merged, found_rows, shape, (metric,)) and ordered
    if wanted_sessions:
        days = _whole_days(question)
        if days is not None:  # a total: whole UTC days from the daily metrics
            statement = sessions.session_total_statement(wanted_sessions, site=site)
            found_rows = await repository.rows(session, statement, {**params, **days})
        else:
            statement = sessions.session_statement(
                wanted_sessions, dims, list(question.filters), bucketed=bucketed, site=site
            )
            found_rows = await repository.rows(session, statement, params)
        ordered = _merge(merged, found_rows, shape, wanted_sessions) and ordered
    if fill and bucketed:
        buckets = [row[0] for row in await repository.rows(session, repository.fill_statement(), params)]
        groups = {key[1:] for key in merged} or ({()} if not dims else set())
        for bucket in buckets:
            for group in groups:
                key = (bucket, *group)
                if key not in merged:
                    merged[key] = shape.empty(key)
                    ordered = False
    if not bucketed and not dims and not merged:
        merged[(None,)] = shape.empty((None,))
    rows = list(merged.values())
    if not ordered:
        rows.sort(key=lambda r: tuple(_sortable(r.get(k)) for k in ("bucket", *dims)))
    return Answer(source="sessions" if only_sessions else _source(chosen, wanted_distinct), rows=rows)


async def _counted(
    session: AsyncSession, metric: str, params: dict[str, Any], span: activity.Span, *, site: bool
) -> Sequence[tuple[Any, ...]]:
    """(NULL, count) of a visitor or session total from the activity tables."""
    statement = repository.activity_statement(metric, span, site=site)
    return await repository.rows(session, statement, {**params, **span.params()})


# Buckets at least this wide are each counted from the activity tables (a week, a month): a
# few totals beat one distinct count over every raw event of the range. Days are too where
# they are UTC days (each count is then activity_first's, a few rows), and a site's days in
# any zone (a Kathmandu day is the end of one UTC day and the start of the next: activity_day's
# counts, less the keys active in both); every site's Kathmandu days would read two days'
# keys, 30 times (slower than raw events).
_WIDE_BUCKET = timedelta(days=7)


async def _wide_buckets(
    session: AsyncSession, question: Question, params: dict[str, Any]
) -> list[tuple[datetime, Question]] | None:
    """For visitors and sessions per wide bucket (no breakdown, no filter but the site): each
    bucket's start and its part of the range as a total; None for every other question."""
    interval = question.interval
    if interval is None or question.group_by or question.filters or question.source == "raw":
        return None
    if not interval.months and interval.seconds < DAY:
        return None
    starts = [row[0] for row in await repository.rows(session, repository.fill_statement(), params)]
    narrow = not interval.months and interval.seconds < _WIDE_BUCKET.total_seconds()
    if narrow and question.site_id is None and any(floor_to(bucket, DAY) != bucket for bucket in starts[1:]):
        return None  # days that are not UTC days, over every site: each count reads two days' keys
    start, end = question.window.start, question.window.end
    parts = []
    for n, bucket in enumerate(starts):
        lo = max(bucket, start)
        hi = min(starts[n + 1], end) if n + 1 < len(starts) else end
        parts.append((bucket, replace(question, window=TimeRange(lo, hi), interval=None)))
    return parts


async def _page_pieces(
    session: AsyncSession, question: Question, params: dict[str, Any]
) -> pages.Pieces | None:
    """For one site's visitors per page per day (no other breakdown, no filter but the page;
    days of any zone, each within two UTC days): the pieces page activity counts them by;
    None for every other question."""
    interval = question.interval
    if interval is None or question.group_by != ("page",) or question.site_id is None:
        return None
    if question.source == "raw" or set(question.filters) - {"page"}:
        return None
    if not interval.months and interval.seconds < DAY:
        return None
    starts = [row[0] for row in await repository.rows(session, repository.fill_statement(), params)]
    found = pages.pieces(starts, question.window.start, question.window.end) if starts else None
    # A bucket over more than two UTC days: its keys would be made distinct, slower than raw.
    return found if found is not None and not found.distinct else None


def _merge(
    merged: dict[tuple[Any, ...], dict[str, Any]],
    found_rows: Sequence[tuple[Any, ...]],
    shape: _Shape,
    metrics: Sequence[str],
) -> bool:
    """Set `metrics` (the columns after each row's key) on the merged groups, adding the groups
    not there yet; whether the merged rows are still in answer order (groups added to those of
    an earlier statement call for a sort)."""
    first = not merged
    ordered = True
    for row in found_rows:
        key = row[: shape.width]
        found = merged.get(key)
        if found is None:
            found = merged[key] = shape.empty(key)
            ordered = ordered and first
        for offset, metric in enumerate(metrics):
            found[metric] = row[shape.width + offset]
    return ordered


def _whole_days(question: Question) -> dict[str, Any] | None:
    """The whole UTC days of a total's range, for sessions.session_total_statement (None: not
    a total, or a filter other than the site)."""
    if question.interval is not None or question.group_by or question.filters:
        return None
    start, end = question.window.start, question.window.end
    mid_lo, mid_hi = ceil_to(start, DAY), floor_to(end, DAY)
    if mid_lo >= mid_hi:
        mid_lo = mid_hi = end
    return {"mid_lo": mid_lo, "mid_hi": mid_hi, "day_lo": mid_lo.date(), "day_hi": mid_hi.date()}


def check_sessions(question: Question) -> None:
    """Session metrics group by the session's own dimensions and those it shares with events
    (its first event's), and cannot be filtered by page or event type; session dimensions go
    with session metrics only."""
    session_metrics = [m for m in question.metrics if m in SESSION_METRICS]
    session_dims = [d for d in question.group_by if d in SESSION_DIMENSIONS]
    if session_dims:
        for metric in question.metrics:
            if metric not in SESSION_METRICS and metric not in SESSION_COUNTABLE:
                raise InvalidParameter(
                    ("query", "metrics"),
                    f"{session_dims[0]} is a session dimension: ask session metrics"
                    f" ({', '.join((*SESSION_METRICS, *SESSION_COUNTABLE))}) with it",
                    metric,
                )
        session_metrics = list(question.metrics)
    if not session_metrics:
        return
    for name in question.group_by:
        if name not in SESSION_DIMENSIONS and name not in SESSION_SHARED:
            raise InvalidParameter(
                ("query", "dimension" if len(question.group_by) == 1 else "group_by"),
                f"session metrics cannot be grouped by {name}; use entry_page or exit_page for pages",
                name,
            )
    for name in question.filters:
        if name not in SESSION_SHARED:
            raise InvalidParameter(
                ("query", name), "session metrics cannot be filtered by page or event_type", name
            )


def _activity_span(question: Question) -> activity.Span | None:
    """The activity tables' reading of this question's range when they can count its visitors
    and sessions — a total (no buckets, no breakdown, no filter but the site) holding a whole
    quarter hour — else None (raw events count them)."""
    if question.interval is not None or question.group_by or question.filters or question.source == "raw":
        return None
    return activity.span(question.window.start, question.window.end)


def _source(chosen: Plan, wanted_distinct: bool) -> str:
    if not chosen.uses_rollup:
        return "raw"
    return "rollup+raw" if chosen.has_raw or wanted_distinct else "rollup"


def _sortable(value: object) -> tuple[int, object]:
    return (0, value) if value is not None else (1, "")


_COUNTS = frozenset({"events", "pageviews", "visitors", "sessions", "visits"})


def _row_maker(
    names: Sequence[str], slots: Sequence[int | None], zoned: Mapping[datetime, datetime] | None = None
) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A function making an answer row from a statement's row: name i is value slots[i] (None:
    0); with `zoned`, the bucket (name "bucket") is zoned[value]. A dict display compiled once
    per question builds a row in a third of the time dict(zip()) does (a 14k-row answer: 2 ms
    instead of 6). The names are the API's own dimension and metric names, constants that
    parse_names whitelists, written with repr(); the slots are ints."""
    assert all(name.isidentifier() for name in names)

    def value(name: str, slot: int | None) -> str:
        if slot is None:
            return "0"
        found = f"values[{int(slot)}]"
        return f"zoned[{found}]" if zoned is not None and name == "bucket" else found

    items = ", ".join(f"{name!r}: {value(name, slot)}" for name, slot in zip(names, slots, strict=True))
    maker: Callable[[Sequence[Any]], dict[str, Any]] = eval(f"lambda values: {{{items}}}", {"zoned": zoned})
    return maker


class _Zoned(dict[datetime, datetime]):
    """UTC wall-clock times put in a zone, each once: an hourly answer over 30 days holds 720
    buckets in 14k rows."""

    def __init__(self, tz: str) -> None:
        super().__init__()
        self.zone = ZoneInfo(tz)

    def __missing__(self, utc: datetime) -> datetime:
        zoned = self[utc] = utc.replace(tzinfo=UTC).astimezone(self.zone)
        return zoned


class _Shape:
    """Builds the answer's rows: bucket, dimensions, then the metrics in the question's order.
    Buckets arrive as datetimes in the question's zone (use_zone set the session's), or as UTC
    wall-clock times (from_utc_sums), and additive_statement's rows already hold the finished
    metrics, so a row is one dict display (from_sums)."""

    def __init__(self, question: Question) -> None:
        dims = question.group_by
        self.width = 1 + len(dims)
        self.bucketed = question.interval is not None
        self.metrics = question.metrics
        self.key_names = (("bucket",) if self.bucketed else ()) + dims
        key_slots = tuple(range(0 if self.bucketed else 1, self.width))
        padding = self.width + len(repository.SUM_COLUMNS)
        metric_slots = tuple(
            self.width + repository.SUM_COLUMNS.index(m) if m in repository.SUM_COLUMNS else padding
            for m in self.metrics
        )
        self.names = (*self.key_names, *self.metrics)
        # A distinct metric is 0 until its statement fills it.
        self.slots = (*key_slots, *(None if slot == padding else slot for slot in metric_slots))
        self.from_sums = _row_maker(self.names, self.slots)
        self.tz = question.tz

    def from_utc_sums(self) -> Callable[[Sequence[Any]], dict[str, Any]]:
        """from_sums for rows whose buckets are UTC wall-clock times."""
        return _row_maker(self.names, self.slots, _Zoned(self.tz))

    def empty(self, key: Sequence[Any]) -> dict[str, Any]:
        row = dict(zip(self.key_names, key if self.bucketed else key[1:], strict=True))
        for metric in self.metrics:
            row[metric] = 0 if metric in _COUNTS else None
        return row


def site_filter(sites: Iterable[str]) -> tuple[str, ...]:
    """A `site_id` filter value for a set of sites. An empty set must match nothing, and a filter
    with no values filters nothing: the empty name stands in, as no site is named "" (site_id
    is at least one character)."""
    return tuple(sorted(sites)) or ("",)


def iso(value: datetime, tz: str) -> str:
    return value.astimezone(ZoneInfo(tz)).isoformat()


async def page_os_buckets(
    session: AsyncSession,
    timescale: TimescaleInfo,
    interval: BucketInterval,
    window: TimeRange,
    pages: Sequence[str],
    *,
    sites: Iterable[str] | None = None,
) -> list[EventBucket]:
    """The original GET /api/events/ question, answered by the same engine; `sites` limits it
    to those sites (an API key's)."""
    filters: dict[str, tuple[str, ...]] = {"page": tuple(pages)}
    if sites is not None:
        filters["site_id"] = site_filter(sites)
    question = Question(
        window=window,
        interval=interval,
        metrics=("events", "avg_duration"),
        group_by=("page", "operating_system"),
        filters=filters,
    )
    result = await answer(session, timescale, question)
    return [
        EventBucket(
            bucket=row["bucket"],
            page=row["page"],
            operating_system=row["operating_system"],
            avg_duration=row["avg_duration"],
            count=row["events"],
        )
        for row in result.rows
    ]
