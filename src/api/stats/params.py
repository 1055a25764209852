"""Parsing of the user-facing parts of an aggregation question. Nothing here reaches SQL as
text except the canonical forms produced below, and those are bound as parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator

from src.api.config import DURATION_UNITS
from src.api.errors import InvalidParameter
from src.api.rollups.catalogue import ceil_quarter

# The units a duration may name, the same for settings and questions.
_UNITS = DURATION_UNITS
_INTERVAL_RE = re.compile(r"^\s*(\d{1,5})\s*([a-z]+)\s*$")
MAX_RANGE = timedelta(days=3660)
DEFAULT_RANGE = timedelta(days=30)
# Dates and times a question may name: far enough from datetime's year 9999 that the day and
# range arithmetic on them (the next day, a window after a cohort) cannot overflow.
MIN_YEAR, MAX_YEAR = 1970, 9000


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: bound as a parameter, it fails the statement.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Every free-text query parameter (site ids, filter values, names) is one of these.
QueryText = Annotated[str, AfterValidator(_no_nul)]


def check_year(value: date, name: str) -> None:
    """A 422 for a date (or a time) outside MIN_YEAR..MAX_YEAR."""
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise InvalidParameter(
            ("query", name), f"must lie between {MIN_YEAR} and {MAX_YEAR}", value.isoformat()
        )


@dataclass(frozen=True)
class BucketInterval:
    """A bucket width: either whole months or a fixed number of seconds."""

    count: int
    unit: str  # canonical PostgreSQL unit name
    seconds: int  # 0 for months/years
    months: int  # 0 for fixed widths

    @property
    def sql(self) -> str:
        """Canonical text, bound as a parameter and cast to interval in SQL."""
        return f"{self.count} {self.unit if self.count != 1 else self.unit[:-1]}"

    def approx_seconds(self) -> float:
        return self.seconds or self.months * 30.44 * 86400


def parse_interval(value: str, name: str = "interval") -> BucketInterval:
    match = _INTERVAL_RE.match(value.lower()) if value else None
    unit = _UNITS.get(match.group(2)) if match else None
    if match is None or unit is None:
        raise InvalidParameter(
            ("query", name),
            "must be a count and a unit, e.g. '30 seconds', '15 minutes', '1 hour', '1 day',"
            " '1 week', '1 month'",
            value,
        )
    count = int(match.group(1))
    canonical, unit_seconds = unit
    if count < 1:
        raise InvalidParameter(("query", name), "must be at least 1", value)
    if canonical == "years":
        canonical, count = "months", count * 12
    if canonical == "months":
        if count > 120:
            raise InvalidParameter(("query", name), "must be at most 10 years", value)
        return BucketInterval(count=count, unit="months", seconds=0, months=count)
    seconds = count * unit_seconds
    if seconds > 366 * 86400:
        raise InvalidParameter(("query", name), "must be at most 366 days", value)
    return BucketInterval(count=count, unit=canonical, seconds=seconds, months=0)


_ZONES: frozenset[str] | None = None


def parse_timezone(value: str | None, name: str = "tz") -> str:
    global _ZONES
    if not value:
        return "UTC"
    if _ZONES is None:
        _ZONES = frozenset(available_timezones()) | {"UTC"}
    if value not in _ZONES:
        raise InvalidParameter(("query", name), "must be an IANA time zone such as 'Europe/Berlin'", value)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidParameter(("query", name), "unknown time zone", value) from exc
    return value


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime


def _aware(value: datetime, tz: str) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(tz))


def parse_range(
    start: datetime | None, end: datetime | None, tz: str = "UTC", default: timedelta = DEFAULT_RANGE
) -> TimeRange:
    """`from`/`to` (naive values are read in `tz`); default: the last `default` up to now.

    A default end is now rounded up to the next quarter hour, so default windows line up with
    the 15-minute rollup and every event up to now is inside them."""
    # The years first: `to` near year 1 has no default `from` before it to compute.
    if start is not None:
        check_year(start, "from")
    if end is not None:
        check_year(end, "to")
    end_at = _aware(end, tz) if end else ceil_quarter(datetime.now(UTC))
    start_at = _aware(start, tz) if start else end_at - default
    if start_at >= end_at:
        raise InvalidParameter(("query", "from"), "must be before 'to'", start_at.isoformat())
    if start_at.year < MIN_YEAR:  # a default `from` before 1970
        raise InvalidParameter(("query", "to"), f"must lie after {MIN_YEAR}", end_at.isoformat())
    if end_at - start_at > MAX_RANGE:
        raise InvalidParameter(("query", "from"), "the range must be at most 10 years", start_at.isoformat())
    return TimeRange(start=start_at, end=end_at)
