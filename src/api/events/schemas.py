"""Request and response shapes of events. Every string is bounded and NUL-free, so nothing a
client sends can make the database reject a commit that other requests share."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from src.api.config import get_settings
from src.api.events.enrichment import path_of

MAX_FUTURE = timedelta(hours=1)
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_PROPERTIES_BYTES = 64 * 1024
# Numbers in properties stay within what every JSON parser reads exactly (JavaScript's
# Number.MAX_SAFE_INTEGER). Beyond it integers are rounded by browsers and pandas; orjson reads
# integers of 2**64 or more as floats; and JSONB keeps 1.5e300 as a 301-digit integer that no
# client reads back as sent.
SAFE_INTEGER = 2**53 - 1
_UNSAFE = f"must be a number within ±{SAFE_INTEGER} (JSON's safe range); send larger ones as strings"
_ID_NAMESPACE = uuid.UUID("6f1c1c5e-8a57-4a53-9d7e-3c1d0f3b7a11")


_new_object = object.__new__
_set_slot = object.__setattr__
_UNKNOWN_SAFETY = uuid.SafeUUID.unknown


def _canonical_uuid(value: str) -> uuid.UUID | None:
    """The UUID of an 8-4-4-4-12 hex string, built without uuid.UUID's general parser (a third
    of the time); None for any other form."""
    if len(value) != 36 or not value[8] == value[13] == value[18] == value[23] == "-":
        return None
    try:
        raw = bytes.fromhex(value.replace("-", ""))
    except ValueError:
        return None
    if len(raw) != 16:  # fromhex skips whitespace
        return None
    made = _new_object(uuid.UUID)
    _set_slot(made, "int", int.from_bytes(raw))
    _set_slot(made, "is_safe", _UNKNOWN_SAFETY)
    return made


def _event_id(value: object) -> uuid.UUID:
    """A UUID as given, or a stable UUID derived from any other id (same id, same UUID)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, str):
        canonical = _canonical_uuid(value)  # the usual form, parsed cheaply
        if canonical is not None:
            return canonical
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a UUID or a non-empty string")
    if len(value) > 256 or "\x00" in value:
        raise ValueError("must be at most 256 characters, without NUL")
    return uuid.uuid5(_ID_NAMESPACE, value)


_earliest: tuple[int, datetime] = (-1, MIN_TIME)  # (second, earliest time at that second)


def earliest_time(now: datetime) -> datetime:
    """The oldest time an event may have: the retention's start (older events would be dropped
    at once, and no read would ever see them), else 1970. Worked out once a second: pydantic
    asks for every event it validates, and calendar months cost microseconds each time."""
    global _earliest
    second = int(now.timestamp())
    if _earliest[0] != second:
        start = get_settings().retention_start(datetime.fromtimestamp(second, UTC))
        _earliest = (second, max(start, MIN_TIME) if start is not None else MIN_TIME)
    return _earliest[1]


def _event_time(value: datetime) -> datetime:
    """After pydantic's parsing (ISO 8601, or epoch seconds, or milliseconds above 2e10):
    naive means UTC, and the time must lie inside the retention window and at most an hour
    ahead."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    now = datetime.now(UTC)
    if value < MIN_TIME:
        raise ValueError("must not be before 1970-01-01")
    earliest = earliest_time(now)
    if value < earliest:
        raise ValueError(
            f"must not be older than the retention period (EVENTS_RETENTION): before"
            f" {earliest.isoformat(timespec='seconds')} events are not kept"
        )
    if value > now + MAX_FUTURE:
        raise ValueError("must not be more than 1 hour in the future")
    return value


def _user_id(value: object) -> object:
    # Interview-API clients send numeric user ids; they are ids, not numbers.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _bad_number(value: object) -> tuple[list[str | int], str] | None:
    """The path to the first number JSON cannot carry exactly, and why (None: all fine)."""
    kind = type(value)
    if kind is dict:
        for key, item in cast(dict[str, object], value).items():
            found = _bad_number(item)
            if found is not None:
                found[0].append(key)
                return found
    elif kind is list:
        for index, item in enumerate(cast(list[object], value)):
            found = _bad_number(item)
            if found is not None:
                found[0].append(index)
                return found
    elif kind is float:
        number = cast(float, value)
        if not math.isfinite(number):
            return [], "must be a finite number (NaN and Infinity are not JSON)"
        if abs(number) > SAFE_INTEGER:  # every float this large is whole
            return [], _UNSAFE
    elif kind is int and abs(cast(int, value)) > SAFE_INTEGER:
        return [], _UNSAFE
    return None


def _check_properties(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    bad = _bad_number(value)
    if bad is not None:
        path, reason = bad
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in reversed(path))
        raise ValueError(f"properties{where}: {reason}")
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # a TypeError, which pydantic would not turn into a 422
        raise ValueError(f"must be encodable as JSON: {exc}") from exc
    if len(encoded) > MAX_PROPERTIES_BYTES:
        raise ValueError(f"must encode to at most {MAX_PROPERTIES_BYTES} bytes of JSON")
    if b"\\u0000" in encoded:
        raise ValueError("must not contain NUL characters")
    return value


EventId = Annotated[uuid.UUID, PlainValidator(_event_id)]
EventTime = Annotated[datetime, AfterValidator(_event_time)]
Properties = Annotated[dict[str, Any] | None, AfterValidator(_check_properties)]
# PostgreSQL text cannot hold NUL; the pattern runs in pydantic's Rust core, so it costs little.
NO_NUL = r"^[^\x00]*$"
ShortText = Annotated[str, StringConstraints(max_length=128, pattern=NO_NUL)]
NameText = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]
PageText = Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=NO_NUL)]
IpText = Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)]
AgentText = Annotated[str, StringConstraints(max_length=1024, pattern=NO_NUL)]
LongText = Annotated[str, StringConstraints(max_length=4096, pattern=NO_NUL)]
UserId = Annotated[ShortText | None, BeforeValidator(_user_id)]


class EventCreate(BaseModel):
    """One event as any client sends it; `page` may be derived from `url`."""

    model_config = ConfigDict(extra="ignore")

    id: EventId | None = Field(default=None, validation_alias=AliasChoices("id", "event_id"))
    time: EventTime | None = Field(
        default=None, validation_alias=AliasChoices("time", "timestamp", "occurred_at")
    )
    site_id: NameText = "default"
    event_type: NameText = "pageview"
    url: LongText | None = None
    page: PageText | None = Field(default=None, validate_default=True)
    ip_address: IpText | None = None
    user_agent: AgentText | None = None
    referrer: LongText | None = None
    session_id: ShortText | None = None
    visitor_id: ShortText | None = None
    user_id: UserId = None
    duration: int = Field(default=0, ge=0, le=2_147_483_647)
    description: LongText | None = None
    properties: Properties = None

    @field_validator("page")
    @classmethod
    def _page_or_url(cls, page: str | None, info: ValidationInfo) -> str:
        if page is not None:
            return page
        derived = path_of(info.data.get("url"))
        if derived is None:
            raise ValueError("Field required (give page, or url to take its path)")
        return derived[:2048]


NO_PAGE = ""  # how an event without page or url is stored (and shown in page breakdowns)


class PagelessEventCreate(EventCreate):
    """Custom events, which need no page: without `page` and `url` the page is empty (NO_PAGE)."""

    page: Annotated[str, StringConstraints(max_length=2048, pattern=NO_NUL)] | None = Field(
        default=None, validate_default=True
    )

    @field_validator("page")
    @classmethod
    def _page_or_url(cls, page: str | None, info: ValidationInfo) -> str:
        if page is not None:
            return page
        derived = path_of(info.data.get("url"))
        return NO_PAGE if derived is None else derived[:2048]


class EventPublic(BaseModel):
    id: uuid.UUID
    time: datetime
    site_id: str
    event_type: str
    page: str
    url: str | None
    ip_address: str | None
    user_agent: str | None
    os: str
    browser: str
    device: str
    is_bot: bool
    referrer: str | None
    referrer_domain: str
    session_id: str | None
    visitor_id: str | None
    user_id: str | None
    duration: int
    description: str | None
    properties: dict[str, Any] | None
    received_at: datetime
    updated_at: datetime
    client_id: str | None = None


class BatchRejected(BaseModel):
    index: int
    errors: list[dict[str, Any]]


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: list[BatchRejected]


class EventBucket(BaseModel):
    bucket: datetime
    page: str
    operating_system: str
    avg_duration: float | None
    count: int
