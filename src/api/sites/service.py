"""Site authorization: which sites may send events, whose they are, how their events are kept.

- `SiteRegistry`: the `site` table, held in memory and reloaded every SITE_CACHE_SECONDS (and
  at once in the process that changed it): a few rows per client, read on every ingest request.
- `PixelManagementClient`: the remote mode's lookup, `GET {PIXEL_MANAGEMENT_URL}/api/v1/config/
  domain/{domain}`, with answers (positive and negative) cached for SITE_CACHE_SECONDS, short
  timeouts, and when the service cannot be reached the last known answer (in memory, else the
  last one stored in `site_attribution`), else "unavailable" (503: nothing unattributed is
  stored).
- `SiteAuthorizer.decide`: a site's grant (client, privacy level, allowed hostnames) or refusal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import quote

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import PRIVACY_LEVELS, PrivacyLevel, Settings
from src.api.errors import is_unavailable
from src.api.sites import repository
from src.api.sites.hostnames import hostname_allowed, is_hostname
from src.api.sites.repository import SiteRecord

log = logging.getLogger(__name__)

RefusalReason = Literal["unknown_site", "disabled_site", "remote_refused", "unavailable", "origin", "key"]


@dataclass(frozen=True, slots=True)
class SiteGrant:
    site_id: str
    client_id: str | None
    privacy_level: PrivacyLevel
    hostnames: tuple[str, ...] | None  # None: any origin (authorization off)

    def allows_origin(self, hostname: str | None) -> bool:
        return self.hostnames is None or (hostname is not None and hostname_allowed(hostname, self.hostnames))


@dataclass(frozen=True, slots=True)
class SiteRefusal:
    site_id: str
    reason: RefusalReason
    message: str

    @property
    def status_code(self) -> int:
        return 503 if self.reason == "unavailable" else 403


Decision = SiteGrant | SiteRefusal


def own_hostnames(site_id: str, listed: Iterable[str]) -> tuple[str, ...]:
    names = tuple(listed)
    if names:
        return names
    return (site_id,) if is_hostname(site_id) else ()


class SiteRegistry:
    """The `site` table in memory."""

    def __init__(self, engine: AsyncEngine, ttl: float) -> None:
        self.engine = engine
        self.ttl = ttl
        self._sites: dict[str, SiteRecord] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")

    async def sites(self) -> Mapping[str, SiteRecord]:
        if time.monotonic() - self._loaded_at < self.ttl:
            return self._sites
        async with self._lock:
            if time.monotonic() - self._loaded_at >= self.ttl:
                try:
                    async with self.engine.connect() as conn:
                        records = await repository.all_sites(conn)
                except Exception as exc:
                    # The database is down (queue mode ingests on): the last copy stands until
                    # the next try; with none yet, the request gets the usual 503.
                    if not is_unavailable(exc) or self._loaded_at == float("-inf"):
                        raise
                    log.warning("sites: the database is unavailable; using the last known registry")
                else:
                    self._sites = {record.site_id: record for record in records}
                self._loaded_at = time.monotonic()
        return self._sites


@dataclass(frozen=True, slots=True)
class RemoteAnswer:
    client_id: str | None  # None: the service says the domain is not authorized
    privacy_level: PrivacyLevel
    hostnames: tuple[str, ...]


class RemoteUnavailable(Exception):
    """The pixel-management service could not be asked, and nothing is known about the domain."""


def _first(body: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in body:
            return body[name]
    return None


def parse_remote_answer(domain: str, body: object, default_privacy: PrivacyLevel) -> RemoteAnswer:
    """The old system's domain configuration, as leniently as it was written: snake_case or
    camelCase, at the top or under "data"; `enabled`/`active`/`authorized` false refuses."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body = body["data"]
    if not isinstance(body, dict):
        return RemoteAnswer(None, default_privacy, ())
    for flag in ("enabled", "active", "authorized", "allowed"):
        if body.get(flag) is False:
            return RemoteAnswer(None, default_privacy, ())
    client = _first(body, "client_id", "clientId", "client")
    if isinstance(client, int) and not isinstance(client, bool):
        client = str(client)
    level = _first(body, "privacy_level", "privacyLevel", "privacy")
    privacy = cast(PrivacyLevel, level) if level in PRIVACY_LEVELS else default_privacy
    names = _first(body, "allowed_hostnames", "allowedHostnames", "hostnames", "domains")
    hostnames = tuple(str(n).lower() for n in names if isinstance(n, str)) if isinstance(names, list) else ()
    if not isinstance(client, str) or not client or len(client) > 128:
        return RemoteAnswer(None, privacy, ())
    return RemoteAnswer(client, privacy, own_hostnames(domain, hostnames))


class PixelManagementClient:
    """Asks the remote service about a domain; caches its answers."""

    def __init__(
        self, engine: AsyncEngine, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ):
        assert settings.pixel_management_url is not None
        self.engine = engine
        self.base_url = settings.pixel_management_url
        self.ttl = settings.site_cache_seconds
        self.default_privacy = settings.default_privacy_level
        timeout = settings.pixel_management_timeout
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)), transport=transport
        )
        self._answers: dict[str, tuple[RemoteAnswer, float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # After a failure, the service is not asked again for a moment: a request for each of
        # a thousand events must not each wait out a timeout.
        self._down_until = float("-inf")

    async def close(self) -> None:
        await self.http.aclose()

    def known(self) -> Mapping[str, RemoteAnswer]:
        return {domain: answer for domain, (answer, _) in self._answers.items()}

    async def lookup(self, domain: str) -> RemoteAnswer:
        cached = self._answers.get(domain)
        if cached and time.monotonic() - cached[1] < self.ttl:
            return cached[0]
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:
            cached = self._answers.get(domain)
            if cached and time.monotonic() - cached[1] < self.ttl:
                return cached[0]
            try:
                answer = await self._fetch(domain)
            except RemoteUnavailable:
                if cached:
                    return cached[0]  # the last known answer
                stored = await self._stored(domain)
                if stored is None:
                    raise
                return stored
            if len(self._answers) > 100_000:
                self._answers.clear()
            self._answers[domain] = (answer, time.monotonic())
            if answer.client_id is not None and (cached is None or cached[0] != answer):
                async with self.engine.begin() as conn:
                    await repository.remember_attribution(
                        conn, domain, answer.client_id, answer.privacy_level, answer.hostnames
                    )
            return answer

    async def _fetch(self, domain: str) -> RemoteAnswer:
        if time.monotonic() < self._down_until:
            raise RemoteUnavailable(domain)
        url = f"{self.base_url}/api/v1/config/domain/{quote(domain, safe='')}"
        try:
            response = await self.http.get(url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            self._down_until = time.monotonic() + 1.0
            log.warning("pixel management unreachable domain=%s error=%s", domain, type(exc).__name__)
            raise RemoteUnavailable(domain) from exc
        if response.status_code in (403, 404, 410):
            return RemoteAnswer(None, self.default_privacy, ())
        if response.status_code != 200:
            self._down_until = time.monotonic() + 1.0
            log.warning("pixel management answered status=%d domain=%s", response.status_code, domain)
            raise RemoteUnavailable(domain)
        try:
            body = response.json()
        except ValueError:
            log.warning("pixel management answered non-JSON domain=%s", domain)
            raise RemoteUnavailable(domain) from None
        return parse_remote_answer(domain, body, self.default_privacy)

    async def _stored(self, domain: str) -> RemoteAnswer | None:
        try:
            async with self.engine.connect() as conn:
                row = await repository.attribution(conn, domain)
        except Exception:  # the database may be down too; then nothing is known
            log.exception("reading site_attribution failed domain=%s", domain)
            return None
        if row is None:
            return None
        level = cast(
            PrivacyLevel, row.privacy_level if row.privacy_level in PRIVACY_LEVELS else self.default_privacy
        )
        return RemoteAnswer(row.client_id, level, tuple(row.allowed_hostnames))


class SiteAuthorizer:
    """Decides, per site, by SITE_AUTHORIZATION: `off` grants every site (client null, the
    default privacy level, any origin); `registry` grants registered, enabled sites; `remote`
    asks the registry first, then the pixel-management service."""

    def __init__(
        self, settings: Settings, registry: SiteRegistry, remote: PixelManagementClient | None
    ) -> None:
        self.mode = settings.site_authorization
        self.default_privacy = settings.default_privacy_level
        self.registry = registry
        self.remote = remote

    @property
    def enforcing(self) -> bool:
        return self.mode != "off"

    async def decide(self, site_ids: Iterable[str]) -> dict[str, Decision]:
        wanted = set(site_ids)
        if self.mode == "off":
            return {s: SiteGrant(s, None, self.default_privacy, None) for s in wanted}
        sites = await self.registry.sites()
        decisions: dict[str, Decision] = {}
        asked: list[str] = []
        for site_id in wanted:
            record = sites.get(site_id)
            if record is not None:
                decisions[site_id] = self._from_record(record)
            elif self.remote is None:
                decisions[site_id] = SiteRefusal(
                    site_id, "unknown_site", f"site {site_id!r} is not registered"
                )
            else:
                asked.append(site_id)
        if asked:
            assert self.remote is not None
            answers = await asyncio.gather(*(self.remote.lookup(s) for s in asked), return_exceptions=True)
            for site_id, answer in zip(asked, answers, strict=True):
                decisions[site_id] = self._from_remote(site_id, answer)
        return decisions

    def _from_record(self, record: SiteRecord) -> Decision:
        if not record.enabled:
            return SiteRefusal(record.site_id, "disabled_site", f"site {record.site_id!r} is disabled")
        hostnames = own_hostnames(record.site_id, record.allowed_hostnames)
        return SiteGrant(record.site_id, record.client_id, record.privacy_level, hostnames)

    def _from_remote(self, site_id: str, answer: RemoteAnswer | BaseException) -> Decision:
        if isinstance(answer, RemoteUnavailable):
            return SiteRefusal(
                site_id,
                "unavailable",
                f"cannot authorize site {site_id!r} now: the site service is unreachable",
            )
        if isinstance(answer, BaseException):
            raise answer
        if answer.client_id is None:
            return SiteRefusal(site_id, "remote_refused", f"site {site_id!r} is not authorized")
        return SiteGrant(site_id, answer.client_id, answer.privacy_level, answer.hostnames)

    async def origin_allowed(self, hostname: str) -> bool:
        """Whether a browser on `hostname` may call the API (CORS): it is an allowed hostname of
        an authorized site (in remote mode, also: the service authorizes it as a domain)."""
        for record in (await self.registry.sites()).values():
            if record.enabled and hostname_allowed(
                hostname, own_hostnames(record.site_id, record.allowed_hostnames)
            ):
                return True
        if self.remote is None:
            return False
        for answer in self.remote.known().values():
            if answer.client_id is not None and hostname_allowed(hostname, answer.hostnames):
                return True
        decision = (await self.decide([hostname]))[hostname]
        return isinstance(decision, SiteGrant) and decision.allows_origin(hostname)
