"""API keys: creating, listing, revoking (stored as HMAC-SHA256 under SECRET_KEY), and
authenticating a presented key in constant time.

Keys come from three places: the `api_key` table, `ADMIN_API_KEY` (the first admin) and the
older `API_KEYS` list — the environment's keys hold every scope for every site, without a rate
limit. When none exists the service is keyless, as it always was; `required()` says whether any
does (cached for a few seconds, so a key made by the CLI in another process takes effect in at
most KEY_CACHE_SECONDS)."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.auth import repository
from src.api.auth.keys import (
    ENVIRONMENT_PRINCIPAL_SCOPES,
    KEY_PREFIX,
    Principal,
    Scope,
    generate_key,
    hash_key,
    visible_prefix,
)
from src.api.auth.repository import Connection
from src.api.config import Settings
from src.api.errors import AppError, is_unavailable

log = logging.getLogger(__name__)

KEY_CACHE_SECONDS = 5.0
TOUCH_EVERY_SECONDS = 60.0
_MAX_CACHED = 10_000


class SecretKeyMissing(AppError):
    status_code = 409

    def __init__(self) -> None:
        super().__init__("SECRET_KEY is not set: the service cannot store API keys without it")


class KeyService:
    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.engine = engine
        self.secret_key = settings.secret_key
        self._required_at = float("-inf")
        self._required = False
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._touched: dict[uuid.UUID, float] = {}

    def invalidate(self) -> None:
        self._required_at = float("-inf")
        self._cache.clear()

    async def required(self, environment: Sequence[str]) -> bool:
        """Whether any key exists (then reads, deletes and server-side ingest need one).
        `environment`: the keys of the environment (environment_keys)."""
        if environment:
            return True
        if time.monotonic() - self._required_at >= KEY_CACHE_SECONDS:
            try:
                async with self.engine.connect() as conn:
                    self._required = await repository.any_live_key(conn)
            except Exception as exc:
                # The database is down: the last answer stands (queue mode keeps ingesting while
                # it is); with none yet, the request gets the usual 503.
                if not is_unavailable(exc) or self._required_at == float("-inf"):
                    raise
                log.warning("keys: the database is unavailable; using the last known answer")
            self._required_at = time.monotonic()
        return self._required

    async def authenticate(self, presented: str, environment: Sequence[str]) -> Principal | None:
        """The key's holder, or None for any key that opens nothing (unknown, revoked, malformed)."""
        encoded = presented.encode()
        # Every environment key is compared, in constant time, whichever matches.
        matched = False
        for key in environment:
            matched |= hmac.compare_digest(encoded, key.encode())
        if matched:
            return Principal(
                name="environment", scopes=ENVIRONMENT_PRINCIPAL_SCOPES, sites=None, hourly_limit=0
            )
        if self.secret_key is None or not presented.startswith(KEY_PREFIX) or len(presented) > 200:
            return None
        digest = hash_key(self.secret_key, presented)
        cached = self._cache.get(digest)
        if cached is not None and time.monotonic() - cached[1] < KEY_CACHE_SECONDS:
            return cached[0]
        principal = None
        async with self.engine.connect() as conn:
            for row in await repository.live_keys_with_prefix(conn, visible_prefix(presented)):
                if hmac.compare_digest(row.secret_hash, digest):
                    principal = _principal(row)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[digest] = (principal, time.monotonic())
        if principal is not None and principal.key_id is not None:
            await self._touch(principal.key_id)
        return principal

    async def _touch(self, key_id: uuid.UUID) -> None:
        """last_used_at, written at most once a minute per key and process."""
        now = time.monotonic()
        if now - self._touched.get(key_id, float("-inf")) < TOUCH_EVERY_SECONDS:
            return
        self._touched[key_id] = now
        async with self.engine.begin() as conn:
            await repository.touch(conn, key_id)

    # Changes run in the caller's transaction (the request session, the CLI's connection),
    # which commits them; the caches here are dropped at once, and elsewhere within seconds.
    async def create(
        self,
        conn: Connection,
        name: str,
        scopes: Sequence[Scope],
        sites: Sequence[str] | None,
        hourly_limit: int,
    ) -> tuple[str, Any]:
        """The new key's text (to show once) and its stored row."""
        if self.secret_key is None:
            raise SecretKeyMissing()
        key = generate_key()
        values = {
            "id": uuid.uuid4(),
            "name": name,
            "prefix": visible_prefix(key),
            "secret_hash": hash_key(self.secret_key, key),
            "scopes": sorted(set(scopes)),
            "sites": sorted(set(sites)) if sites is not None else None,
            "hourly_limit": hourly_limit,
        }
        row = await repository.insert_key(conn, values)
        self.invalidate()
        return key, row

    async def revoke(self, conn: Connection, key_id: uuid.UUID) -> Any:
        row = await repository.revoke_key(conn, key_id)
        self.invalidate()
        return row


def environment_keys(settings: Settings) -> tuple[str, ...]:
    """The keys the environment grants every scope: API_KEYS, and ADMIN_API_KEY."""
    return (*settings.api_keys, *((settings.admin_api_key,) if settings.admin_api_key else ()))


def _principal(row: Any) -> Principal:
    return Principal(
        name=row.name,
        scopes=frozenset(row.scopes),
        sites=frozenset(row.sites) if row.sites is not None else None,
        hourly_limit=row.hourly_limit,
        key_id=row.id,
    )
