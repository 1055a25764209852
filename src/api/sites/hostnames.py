"""Hostnames and origins: what a site lists as its own, and whether a browser's Origin is one."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

_HOSTNAME = re.compile(
    r"(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)


def normalize_hostname(value: str) -> str:
    """A hostname or `*.example.com` pattern, lowercased; ValueError with the reason."""
    name = value.strip().lower().rstrip(".")
    if not name or len(name) > 253 or not _HOSTNAME.fullmatch(name):
        raise ValueError(f"{value!r} is not a hostname such as shop.example.com or *.example.com")
    return name


def is_hostname(value: str) -> bool:
    try:
        normalize_hostname(value)
    except ValueError:
        return False
    return not value.startswith("*.")


def origin_hostname(origin: str | None) -> str | None:
    """The hostname of an Origin header (`https://shop.example.com:8443` -> shop.example.com);
    None for `null`, an opaque or malformed origin."""
    if not origin or origin == "null":
        return None
    try:
        parts = urlsplit(origin)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    return host.lower()


def hostname_allowed(hostname: str, allowed: Iterable[str]) -> bool:
    """Whether `hostname` is one of `allowed`: an exact name, or a subdomain of a `*.` pattern."""
    for pattern in allowed:
        if pattern.startswith("*."):
            if hostname.endswith(pattern[1:]):
                return True
        elif hostname == pattern:
            return True
    return False
