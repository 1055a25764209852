"""The /api/sites bodies: SiteCreate -> SiteUpdate -> SitePublic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from src.api.config import PrivacyLevel
from src.api.sites.hostnames import normalize_hostname

NO_NUL = r"^[^\x00]*$"


def _site_id(value: str) -> str:
    return value.strip().lower()


def _hostnames(values: list[str]) -> list[str]:
    return list(dict.fromkeys(normalize_hostname(v) for v in values))


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as 'UTC' or 'Europe/Berlin'") from None
    return value


SiteId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL), AfterValidator(_site_id)
]
ClientId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]
Hostnames = Annotated[list[Annotated[str, StringConstraints(max_length=255)]], Field(max_length=100)]
Zone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_zone)]


class SiteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: SiteId
    client_id: ClientId
    # Default: the site's own domain (when site_id is one).
    allowed_hostnames: Annotated[Hostnames, AfterValidator(_hostnames)] | None = None
    privacy_level: PrivacyLevel | None = None  # default: DEFAULT_PRIVACY_LEVEL
    timezone: Zone = "UTC"


class SiteUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_id: ClientId | None = None
    allowed_hostnames: Annotated[Hostnames, AfterValidator(_hostnames)] | None = None
    privacy_level: PrivacyLevel | None = None
    timezone: Zone | None = None
    enabled: bool | None = None  # false disables (as DELETE does), true enables again


class SitePublic(BaseModel):
    site_id: str
    client_id: str
    allowed_hostnames: list[str]
    privacy_level: PrivacyLevel
    timezone: str
    created_at: datetime
    disabled_at: datetime | None
