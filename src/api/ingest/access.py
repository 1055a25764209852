"""The authorization and privacy step of ingestion, between validation and the writer (so every
ingest route, and any queue mode publishing validated rows, applies it alike):

1. before validation, the request's distinct site names are decided at once (async: registry,
   remote service) — `IngestAccess.prepare`;
2. each validated row is then admitted or refused, synchronously (large batches validate in a
   worker thread): its site must be granted, the browser's Origin must be one of the site's
   hostnames, an ingest key limited to some sites must name one of them; an admitted row gets
   the site's `client_id` and its privacy level applied — `RequestAccess.admit`;
3. the decisions are counted and refusals logged, once per request — `RequestAccess.finish`.

With SITE_AUTHORIZATION=off and DEFAULT_PRIVACY_LEVEL=standard nothing here runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import Settings
from src.api.errors import Forbidden, ServiceUnavailable
from src.api.ingest.rows import RequestContext
from src.api.ingest.writer import EventRow
from src.api.privacy.salts import DailySalts
from src.api.privacy.service import apply_privacy_to_row
from src.api.sites.audit import record_decision
from src.api.sites.hostnames import origin_hostname
from src.api.sites.service import (
    Decision,
    PixelManagementClient,
    SiteAuthorizer,
    SiteGrant,
    SiteRefusal,
    SiteRegistry,
)

_SITE, _TIME, _CLIENT = 2, 1, 22
# Seconds a client is asked to wait when the site service cannot be reached.
REMOTE_RETRY_AFTER = 5


class SiteNotAuthorized(Forbidden):
    """403 naming the site and why (an unknown or disabled site, a foreign origin, a key's sites)."""

    def __init__(self, refusal: SiteRefusal) -> None:
        super().__init__(
            refusal.message,
            detail={"site_id": refusal.site_id, "reason": refusal.reason, "message": refusal.message},
        )


class SiteServiceUnavailable(ServiceUnavailable):
    def __init__(self, refusal: SiteRefusal) -> None:
        super().__init__(refusal.message, retry_after=REMOTE_RETRY_AFTER)
        self.detail = {"site_id": refusal.site_id, "reason": refusal.reason, "message": refusal.message}


def refusal_error(refusal: SiteRefusal) -> Forbidden | ServiceUnavailable:
    return SiteServiceUnavailable(refusal) if refusal.status_code == 503 else SiteNotAuthorized(refusal)


def refusal_item_errors(refusal: SiteRefusal) -> list[dict[str, Any]]:
    """A batch item's errors for a refused site, in the shape of validation errors."""
    return [
        {
            "field": "site_id",
            "message": refusal.message,
            "type": f"site_{refusal.reason}",
            "site_id": refusal.site_id,
        }
    ]


def site_ids_of(items: Iterable[object]) -> set[str]:
    """The site names the items would be validated to (EventCreate's default included)."""
    names: set[str] = set()
    for item in items:
        if isinstance(item, dict):
            value = item.get("site_id", "default")
            if isinstance(value, str):
                names.add(value)
    return names


@dataclass
class RequestAccess:
    """One request's decisions, applied to each of its rows."""

    decisions: dict[str, Decision]
    origin: str | None
    key_sites: frozenset[str] | None
    salts: DailySalts | None
    enforcing: bool
    tallies: Counter[tuple[str, bool, str]] = field(default_factory=Counter)
    refused: list[SiteRefusal] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hostname = origin_hostname(self.origin)

    def admit(self, row: EventRow) -> EventRow | SiteRefusal:
        site_id = row[_SITE]
        decision = self.decisions.get(site_id)
        if decision is None:  # validation changed nothing about site_id, so this cannot be
            decision = SiteRefusal(site_id, "unknown_site", f"site {site_id!r} is not authorized")
        if isinstance(decision, SiteRefusal):
            self.tallies[(site_id, False, decision.reason)] += 1
            return decision
        if self.key_sites is not None and site_id not in self.key_sites:
            self.tallies[(site_id, False, "key")] += 1
            return SiteRefusal(site_id, "key", f"this API key may not send events for site {site_id!r}")
        if self.enforcing and self.origin is not None and not decision.allows_origin(self.hostname):
            self.tallies[(site_id, False, "origin")] += 1
            return SiteRefusal(
                site_id, "origin", f"origin {self.origin!r} is not an allowed hostname of site {site_id!r}"
            )
        self.tallies[(site_id, True, "granted")] += 1
        return self._enrich(row, decision)

    def _enrich(self, row: EventRow, grant: SiteGrant) -> EventRow:
        if grant.client_id is not None:
            row = (*row[:_CLIENT], grant.client_id, *row[_CLIENT + 1 :])
        if grant.privacy_level == "standard":
            return row
        salt = self.salts.salt_for(row[_TIME], row[20]) if self.salts is not None else None
        return apply_privacy_to_row(row, grant.privacy_level, salt)

    def admit_all(self, rows: Sequence[EventRow]) -> list[EventRow]:
        """Every row admitted, or the first refusal raised (403 naming the site, or 503)."""
        admitted = []
        for row in rows:
            result = self.admit(row)
            if isinstance(result, SiteRefusal):
                self.finish()
                raise refusal_error(result)
            admitted.append(result)
        return admitted

    def finish(self) -> None:
        for (site_id, allowed, reason), count in self.tallies.items():
            record_decision(site_id, self.origin, allowed, reason, count)
        self.tallies.clear()


class IngestAccess:
    """Built once per app from the settings."""

    def __init__(self, authorizer: SiteAuthorizer, salts: DailySalts) -> None:
        self.authorizer = authorizer
        self.salts = salts

    @property
    def active(self) -> bool:
        return self.authorizer.enforcing or self.authorizer.default_privacy != "standard"

    async def prepare(self, site_ids: Iterable[str], context: RequestContext) -> RequestAccess:
        decisions = await self.authorizer.decide(site_ids)
        hashing = any(isinstance(d, SiteGrant) and d.privacy_level != "standard" for d in decisions.values())
        if hashing:
            await self.salts.ready(context.received_at)
        return RequestAccess(
            decisions=decisions,
            origin=context.origin,
            key_sites=context.key_sites,
            salts=self.salts if hashing else None,
            enforcing=self.authorizer.enforcing,
        )


def create_access(engine: AsyncEngine, settings: Settings) -> IngestAccess:
    """The access step as every process that ingests builds it (the app, `src.cli import`).
    Close `access.authorizer.remote` (when not None) at the end."""
    registry = SiteRegistry(engine, settings.site_cache_seconds)
    remote = PixelManagementClient(engine, settings) if settings.site_authorization == "remote" else None
    return IngestAccess(SiteAuthorizer(settings, registry, remote), DailySalts(engine))
