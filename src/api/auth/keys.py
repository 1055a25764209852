"""What an API key is: its text (shown once), its stored hash, its scopes, and who holds it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from typing import Literal

Scope = Literal["ingest", "stats:read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "stats:read", "admin")
KEY_PREFIX = "eak_"  # "event analytics key": recognisable in a leaked config or a log
VISIBLE_CHARACTERS = 12  # the part of a key that is stored and listed: eak_ + 8 characters


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def visible_prefix(key: str) -> str:
    return key[:VISIBLE_CHARACTERS]


def hash_key(secret_key: str, key: str) -> str:
    """HMAC-SHA256 of the key under SECRET_KEY: a stolen table holds nothing that opens the API,
    and without the server's secret no guess can be checked against it offline."""
    return hmac.new(secret_key.encode(), key.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who a request's key says it is. `admin` may do what every scope allows."""

    name: str
    scopes: frozenset[str]
    sites: frozenset[str] | None  # None: every site
    hourly_limit: int  # 0: no limit
    key_id: uuid.UUID | None = None  # None: a key from the environment (API_KEYS, ADMIN_API_KEY)

    def has_scope(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def may_touch(self, site_id: str) -> bool:
        return self.sites is None or site_id in self.sites


ENVIRONMENT_PRINCIPAL_SCOPES = frozenset(SCOPES)
