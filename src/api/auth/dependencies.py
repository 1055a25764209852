"""`ApiKeyDep`: checks X-API-Key against API_KEYS (when any are configured)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header

from src.api.config import get_settings
from src.api.errors import Unauthorized
from src.api.metrics import instruments as metrics


async def require_api_key(x_api_key: Annotated[str | None, Header()] = None) -> str | None:
    keys = get_settings().api_keys
    if not keys:
        return None
    if not x_api_key:
        metrics.authorization_refused("missing_key")
        raise Unauthorized("missing X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})
    if not any(hmac.compare_digest(x_api_key.encode(), key.encode()) for key in keys):
        metrics.authorization_refused("invalid_key")
        raise Unauthorized("invalid API key", headers={"WWW-Authenticate": "ApiKey"})
    return x_api_key


ApiKeyDep = Annotated[str | None, Depends(require_api_key)]
