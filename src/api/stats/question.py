"""What an aggregation question may ask: whitelisted metrics, dimensions and filters, and the
parsed question itself. Dimension SQL comes only from the constant mapping below."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from src.api.errors import InvalidParameter
from src.api.stats.params import BucketInterval, TimeRange

Metric = Literal[
    "events",
    "pageviews",
    "visitors",
    "sessions",
    "avg_duration",
    "visits",
    "bounce_rate",
    "visit_duration",
    "views_per_visit",
]
EVENT_METRICS: tuple[Metric, ...] = ("events", "pageviews", "visitors", "sessions", "avg_duration")
# Read from the sessions job's table (src/api/sessions/), bucketed by the session's start.
SESSION_METRICS: tuple[Metric, ...] = ("visits", "bounce_rate", "visit_duration", "views_per_visit")
METRICS: tuple[Metric, ...] = (*EVENT_METRICS, *SESSION_METRICS)
# Event metrics a session dimension also takes, counted over the sessions (their visitors,
# the page views and events of those sessions).
SESSION_COUNTABLE: tuple[Metric, ...] = ("visitors", "pageviews", "events")
# Metrics that add up across rollup rows; the others need distinct counts over raw events.
ADDITIVE: frozenset[str] = frozenset({"events", "pageviews", "avg_duration"})
DISTINCT: frozenset[str] = frozenset({"visitors", "sessions"})

# Dimension name → SQL expression over a relation with the rollup's columns (event or rollup).
DIMENSION_SQL: dict[str, str] = {
    "site_id": "site_id",
    "event_type": "event_type",
    "page": "page",
    "os": "os",
    "browser": "browser",
    "device": "device",
    "referrer_domain": "referrer_domain",
    # The original API's six-valued OS: ChromeOS and anything unknown count as Other.
    "operating_system": (
        "CASE WHEN os IN ('Windows', 'MacOS', 'iOS', 'Android', 'Linux') THEN os ELSE 'Other' END"
    ),
}
# Dimensions only sessions have (with session metrics only), and those they share with events.
SESSION_DIMENSIONS: tuple[str, ...] = ("entry_page", "exit_page", "utm_source", "utm_medium", "utm_campaign")
SESSION_SHARED: frozenset[str] = frozenset(
    {"site_id", "os", "browser", "device", "referrer_domain", "operating_system"}
)
FILTERS: tuple[str, ...] = ("page", "event_type", "os", "browser", "device", "referrer_domain")
Source = Literal["auto", "rollup", "raw"]


@dataclass(frozen=True)
class Question:
    window: TimeRange
    tz: str = "UTC"
    interval: BucketInterval | None = None  # None: totals, no time buckets
    metrics: tuple[str, ...] = ("events",)
    group_by: tuple[str, ...] = ()
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    site_id: str | None = None
    source: Source = "auto"


def parse_names(
    value: str | Sequence[str] | None, allowed: Sequence[str], name: str, default: Sequence[str] = ()
) -> tuple[str, ...]:
    """Comma-separated (or repeated) names, each of which must be in `allowed`."""
    if value is None:
        return tuple(default)
    raw = [value] if isinstance(value, str) else list(value)
    names = [part.strip() for item in raw for part in item.split(",") if part.strip()]
    for item in names:
        if item not in allowed:
            raise InvalidParameter(
                ("query", name), f"unknown {name} {item!r}; allowed: {', '.join(allowed)}", item
            )
    unique = tuple(dict.fromkeys(names))
    return unique or tuple(default)


def check_query_names(params: Mapping[str, object], allowed: Sequence[str]) -> None:
    for name in params:
        if name not in allowed:
            raise InvalidParameter(("query", name), f"unknown parameter; allowed: {', '.join(allowed)}", name)
