"""The typed dependencies that carry authorization: `StatsReadDep`, `IngestKeyDep`, `AdminDep`
(and `ApiKeyDep`, the older name of the read dependency).

While no key exists (no API_KEYS, no ADMIN_API_KEY, no key in the table) every route is open,
as it always was; the new admin routes (/api/sites, /api/keys) are the exception: they always
need an admin key. Once a key exists, each dependency needs a key with its scope (`admin` holds
every scope), presented as `X-API-Key` or `Authorization: Bearer`; a missing and a wrong key get
the same 401. A key over its hourly limit gets 429 with Retry-After and X-RateLimit-*."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import Depends, Request, Response

from src.api.auth.keys import Principal, Scope
from src.api.auth.ratelimit import KeyRateLimiter
from src.api.auth.service import KeyService, environment_keys
from src.api.config import get_settings
from src.api.errors import Forbidden, TooManyRequests, Unauthorized
from src.api.ingest.rows import RequestContext
from src.api.metrics import instruments as metrics

_UNAUTHORIZED = "missing or invalid API key: send X-API-Key or Authorization: Bearer"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="event-analytics", ApiKey'}


def presented_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = request.headers.get("authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


@dataclass(frozen=True)
class Access:
    """What a request may touch. `principal` None: no key is required (the service is keyless)."""

    principal: Principal | None

    @property
    def sites(self) -> frozenset[str] | None:
        """The sites the key may touch; None: every site."""
        return self.principal.sites if self.principal is not None else None

    def check_site(self, site_id: str) -> None:
        if self.principal is not None and not self.principal.may_touch(site_id):
            metrics.authorization_refused("key_site")
            raise Forbidden(
                f"this API key may not access site {site_id!r}", detail={"site_id": site_id, "reason": "key"}
            )

    def ingest_context(self, context: RequestContext) -> RequestContext:
        """A keyed server-side sender may set events' ip_address, and only for its own sites."""
        if self.principal is None:
            return context
        return replace(context, trusted=True, key_sites=self.principal.sites)


async def _authorize(request: Request, response: Response, scope: Scope, *, always: bool = False) -> Access:
    keys: KeyService = request.app.state.keys
    # The app's settings; and the process's, which are the same object unless a test built an
    # app with settings of its own.
    environment = tuple(
        dict.fromkeys((*environment_keys(request.app.state.settings), *environment_keys(get_settings())))
    )
    required = await keys.required(environment)
    if not required and not always:
        return Access(principal=None)
    presented = presented_key(request)
    principal = await keys.authenticate(presented, environment) if presented else None
    if principal is None:
        metrics.authorization_refused("missing_key" if presented is None else "invalid_key")
        if not required:
            raise Unauthorized(
                "no admin key exists yet: set ADMIN_API_KEY,"
                " or run `python -m src.cli keys create --name admin --scopes admin`",
                headers=_CHALLENGE,
            )
        raise Unauthorized(_UNAUTHORIZED, headers=_CHALLENGE)
    if not principal.has_scope(scope):
        metrics.authorization_refused("scope")
        raise Forbidden(f"this API key lacks the {scope!r} scope", detail={"scope": scope, "reason": "scope"})
    if principal.hourly_limit > 0 and principal.key_id is not None:
        limiter: KeyRateLimiter = request.app.state.rate_limiter
        usage = await limiter.hit(str(principal.key_id), principal.hourly_limit)
        if not usage.allowed:
            metrics.authorization_refused("rate_limit")
            raise TooManyRequests(
                f"this API key is over its limit of {usage.limit} requests per hour", headers=usage.headers()
            )
        response.headers.update(usage.headers())
    return Access(principal=principal)


async def require_stats_read(request: Request, response: Response) -> Access:
    return await _authorize(request, response, "stats:read")


async def require_ingest(request: Request, response: Response) -> Access:
    return await _authorize(request, response, "ingest")


async def require_admin(request: Request, response: Response) -> Access:
    """Admin scope once any key exists (DELETE /api/events/{id})."""
    return await _authorize(request, response, "admin")


async def require_admin_key(request: Request, response: Response) -> Access:
    """Admin scope always: the routes that manage sites and keys."""
    return await _authorize(request, response, "admin", always=True)


StatsReadDep = Annotated[Access, Depends(require_stats_read)]
IngestKeyDep = Annotated[Access, Depends(require_ingest)]
AdminDep = Annotated[Access, Depends(require_admin)]
AdminKeyDep = Annotated[Access, Depends(require_admin_key)]
# The name the interview API's routes used; a read of stats.
require_api_key = require_stats_read
ApiKeyDep = StatsReadDep
