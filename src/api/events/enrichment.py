"""Write-time enrichment: User-Agent → os/browser/device/is_bot, client IP, referrer domain.

Parsing a User-Agent costs about a millisecond, so results are cached by the raw string;
a site's traffic repeats a small set of strings, so the cache makes repeats free.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from user_agents import parse as parse_ua

# The OS families we store; the original API reports the first six, ChromeOS counts as Other.
OPERATING_SYSTEMS: tuple[str, ...] = ("Windows", "MacOS", "iOS", "Android", "Linux", "Other")
_OS_FAMILIES: dict[str, str] = {
    "Windows": "Windows",
    "Mac OS X": "MacOS",
    "Mac OS": "MacOS",
    "macOS": "MacOS",
    "iOS": "iOS",
    "iPadOS": "iOS",
    "Android": "Android",
    "Linux": "Linux",
    "Ubuntu": "Linux",
    "Debian": "Linux",
    "Fedora": "Linux",
    "Red Hat": "Linux",
    "SUSE": "Linux",
    "openSUSE": "Linux",
    "Mint": "Linux",
    "Arch Linux": "Linux",
    "Gentoo": "Linux",
    "Slackware": "Linux",
    "Mandriva": "Linux",
    "CentOS": "Linux",
    "Chrome OS": "ChromeOS",
}
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet", "bot", "other")


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    os: str
    browser: str
    device: str
    is_bot: bool


UNKNOWN_AGENT = UserAgentInfo(os="Other", browser="Other", device="other", is_bot=False)


def _os_family(family: str) -> str:
    if family in _OS_FAMILIES:
        return _OS_FAMILIES[family]
    if family.startswith("Windows"):
        return "Windows"
    return "Other"


@lru_cache(maxsize=8192)
def parse_user_agent(user_agent: str | None) -> UserAgentInfo:
    if not user_agent or not user_agent.strip():
        return UNKNOWN_AGENT
    ua = parse_ua(user_agent)
    if ua.is_bot:
        device = "bot"
    elif ua.is_tablet:
        device = "tablet"
    elif ua.is_mobile:
        device = "mobile"
    elif ua.is_pc:
        device = "desktop"
    else:
        device = "other"
    browser = ua.browser.family or "Other"
    return UserAgentInfo(
        os=_os_family(ua.os.family or ""),
        browser=browser[:64],
        device=device,
        is_bot=bool(ua.is_bot),
    )


def operating_system_of(os: str) -> str:
    """The original API's six-valued operating_system for a stored `os`."""
    return os if os in OPERATING_SYSTEMS else "Other"


def valid_ip(value: str | None) -> str | None:
    """The address in canonical form, or None when `value` is not an IP address."""
    if not value:
        return None
    candidate = value.strip()
    # "[::1]:443" and "1.2.3.4:80" are what some proxies forward.
    if candidate.startswith("[") and "]" in candidate:
        candidate = candidate[1 : candidate.index("]")]
    elif candidate.count(":") == 1:
        candidate = candidate.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


@lru_cache(maxsize=8192)
def referrer_domain_of(referrer: str | None) -> str:
    if not referrer:
        return ""
    try:
        host = urlsplit(referrer.strip()).hostname or ""
    except ValueError:
        return ""
    host = host.lower()
    return host[4:] if host.startswith("www.") else host[:255]


def path_of(url: str | None) -> str | None:
    if not url:
        return None
    try:
        path = urlsplit(url.strip()).path
    except ValueError:
        return None
    return path or "/"
