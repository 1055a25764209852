"""A client's privacy level applied to its processed events.

The level is the site's (`site.privacy_level`, src/api/sites/), read once per processing run;
events of sites the registry does not know get DEFAULT_PRIVACY_LEVEL. Stored events already
went through their level at ingest; applying it again here is idempotent, and makes a level
raised since storage hold for the files that leave. The rules themselves (hashed IPs,
redactions) are src/api/privacy/service.py's `apply_privacy`; exports of stored events pass no
salt, so an address is dropped rather than hashed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from src.api.config import PrivacyLevel
from src.api.privacy.service import apply_privacy
from src.api.sites.repository import all_sites


async def site_levels(conn: AsyncConnection) -> dict[str, PrivacyLevel]:
    return {site.site_id: site.privacy_level for site in await all_sites(conn)}


def apply_client_privacy(event: dict[str, Any], level: PrivacyLevel) -> dict[str, Any]:
    """The event as its site's privacy level lets it leave."""
    if level == "standard":
        return event
    properties = event.get("properties")
    if isinstance(properties, str):  # Parquet keeps it as JSON text: redact the values, not the text
        event = {**event, "properties": orjson.loads(properties)}
    return apply_privacy(event, level)


def level_of(
    event: Mapping[str, Any], levels: Mapping[str, PrivacyLevel], default: PrivacyLevel
) -> PrivacyLevel:
    return levels.get(str(event.get("site_id")), default)
