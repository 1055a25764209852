"""What each privacy level does to an event before it is stored (and to a stored event before
it is exported):

- `standard`: nothing;
- `hashed`: the IP address is dropped; when the event has neither a visitor id nor a user id
  (so the stats would count the visitor by address + User-Agent) the visitor id becomes a keyed
  hash of (site, address, User-Agent) under the day's salt — unique visitors still count within
  a day, and no raw address is stored, logged or exported;
- `strict`: `hashed`, and PII redacted in `url`, `page`, `referrer`, `description` and every
  string in `properties` (src/api/privacy/redaction.py).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Jsonb

from src.api.config import PrivacyLevel
from src.api.privacy.redaction import redact_text, redact_url, redact_value

__all__ = ["apply_privacy", "apply_privacy_to_row", "visitor_hash"]

# Positions in EVENT_COPY_COLUMNS (src/api/events/models.py).
_SITE, _PAGE, _URL, _IP, _AGENT, _REFERRER, _VISITOR, _USER, _DESCRIPTION, _PROPERTIES = (
    2,
    4,
    5,
    6,
    7,
    12,
    15,
    16,
    18,
    19,
)


def visitor_hash(salt: bytes, site_id: str, ip_address: str, user_agent: str | None) -> str:
    """A visitor's daily identity: 32 hex digits of HMAC-SHA256 under the day's salt."""
    message = f"{site_id}\x00{ip_address}\x00{user_agent or ''}".encode()
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:32]


def apply_privacy(
    event: Mapping[str, Any], level: PrivacyLevel, *, salt: bytes | None = None
) -> dict[str, Any]:
    """A copy of an event (EventPublic's field names) as `level` lets it be stored or exported.
    Pure: with `salt`, an event counted by address gets its visitor hash; without, its address
    is dropped all the same (exports of stored events pass no salt)."""
    result = dict(event)
    if level == "standard":
        return result
    ip = result.get("ip_address")
    if ip and salt is not None and not result.get("visitor_id") and not result.get("user_id"):
        result["visitor_id"] = visitor_hash(salt, str(result.get("site_id")), ip, result.get("user_agent"))
    result["ip_address"] = None
    if level == "strict":
        for name in ("url", "page", "referrer"):
            if isinstance(result.get(name), str):
                result[name] = redact_url(result[name])
        if isinstance(result.get("description"), str):
            result["description"] = redact_text(result["description"])
        if result.get("properties") is not None:
            result["properties"] = redact_value(result["properties"])
    return result


def apply_privacy_to_row(row: tuple[Any, ...], level: PrivacyLevel, salt: bytes | None) -> tuple[Any, ...]:
    """The ingest path's form of apply_privacy: an event row in EVENT_COPY_COLUMNS order."""
    if level == "standard":
        return row
    values = list(row)
    ip = values[_IP]
    if ip and salt is not None and values[_VISITOR] is None and values[_USER] is None:
        values[_VISITOR] = visitor_hash(salt, values[_SITE], ip, values[_AGENT])
    values[_IP] = None
    if level == "strict":
        # A short address replaced by the longer marker may grow a value past its column.
        values[_PAGE] = redact_url(values[_PAGE])[:2048]
        for index in (_URL, _REFERRER):
            if values[index] is not None:
                values[index] = redact_url(values[index])[:4096]
        if values[_DESCRIPTION] is not None:
            values[_DESCRIPTION] = redact_text(values[_DESCRIPTION])[:4096]
        properties = values[_PROPERTIES]
        if isinstance(properties, Jsonb):
            values[_PROPERTIES] = Jsonb(redact_value(properties.obj))
    return tuple(values)
