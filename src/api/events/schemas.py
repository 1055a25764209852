"""Request and response shapes of events. Every string is bounded and NUL-free, so nothing a
client sends can make the database reject a commit that other requests share."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from src.api.events.enrichment import path_of

MAX_FUTURE = timedelta(hours=1)
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_PROPERTIES_BYTES = 64 * 1024
_ID_NAMESPACE = uuid.UUID("6f1c1c5e-8a57-4a53-9d7e-3c1d0f3b7a11")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def parse_event_id(value: object) -> uuid.UUID:
    """A UUID as given, or a stable UUID derived from any other id string (same id, same UUID)."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a UUID or a non-empty string")
    if len(value) > 256 or "\x00" in value:
        raise ValueError("must be at most 256 characters, without NUL")
    try:
        return uuid.UUID(value)
    except ValueError:
        return uuid.uuid5(_ID_NAMESPACE, value)


def parse_event_time(value: object) -> datetime:
    """ISO 8601 (offset or Z; naive means UTC) or epoch seconds / milliseconds."""
    if isinstance(value, bool):
        raise ValueError("must be an ISO 8601 timestamp or epoch seconds/milliseconds")
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        seconds = value / 1000 if abs(value) >= 1e11 else value
        try:
            parsed = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError("epoch value out of range") from exc
    elif isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError as exc:
            raise ValueError("must be an ISO 8601 timestamp or epoch seconds/milliseconds") from exc
    else:
        raise ValueError("must be an ISO 8601 timestamp or epoch seconds/milliseconds")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed < MIN_TIME:
        raise ValueError("must not be before 1970-01-01")
    if parsed > datetime.now(UTC) + MAX_FUTURE:
        raise ValueError("must not be more than 1 hour in the future")
    return parsed


def _user_id(value: object) -> object:
    # Interview-API clients send numeric user ids; they are ids, not numbers.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _check_properties(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    encoded = orjson.dumps(value)
    if len(encoded) > MAX_PROPERTIES_BYTES:
        raise ValueError(f"must encode to at most {MAX_PROPERTIES_BYTES} bytes of JSON")
    if b"\\u0000" in encoded:
        raise ValueError("must not contain NUL characters")
    return value


EventId = Annotated[uuid.UUID, BeforeValidator(parse_event_id)]
EventTime = Annotated[datetime, BeforeValidator(parse_event_time)]
Properties = Annotated[dict[str, Any] | None, AfterValidator(_check_properties)]
_NoNul = AfterValidator(_no_nul)
ShortText = Annotated[str, StringConstraints(max_length=128), _NoNul]
NameText = Annotated[str, StringConstraints(min_length=1, max_length=128), _NoNul]
PageText = Annotated[str, StringConstraints(min_length=1, max_length=2048), _NoNul]
IpText = Annotated[str, StringConstraints(max_length=64), _NoNul]
AgentText = Annotated[str, StringConstraints(max_length=1024), _NoNul]
LongText = Annotated[str, StringConstraints(max_length=4096), _NoNul]
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


class PagelessEventCreate(EventCreate):
    """Custom events from collectors whose API has no page: the page is empty, not required."""

    page: Annotated[str, StringConstraints(max_length=2048), _NoNul] | None = Field(
        default="", validate_default=True
    )


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
