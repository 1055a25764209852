from __future__ import annotations

import pytest

from src.api.events.enrichment import (
    operating_system_of,
    parse_user_agent,
    referrer_domain_of,
    valid_ip,
)

# Real User-Agent strings, with the OS family, the original API's operating_system and device.
AGENTS = [
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "Windows",
        "Windows",
        "desktop",
        "Chrome",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Safari/605.1.15",
        "MacOS",
        "MacOS",
        "desktop",
        "Safari",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.1 Mobile/15E148 Safari/604.1",
        "iOS",
        "iOS",
        "mobile",
        "Mobile Safari",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/16.6 Mobile/15E148 Safari/604.1",
        "iOS",
        "iOS",
        "tablet",
        "Mobile Safari",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Mobile Safari/537.36",
        "Android",
        "Android",
        "mobile",
        "Chrome Mobile",
    ),
    (
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
        "Linux",
        "Linux",
        "desktop",
        "Firefox",
    ),
    (
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 "
        "Safari/537.36",
        "Linux",
        "Linux",
        "desktop",
        "Chrome",
    ),
    (
        "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
        "ChromeOS",
        "Other",
        "desktop",
        "Chrome",
    ),
    (
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Other",
        "Other",
        "bot",
        "Googlebot",
    ),
    ("", "Other", "Other", "other", "Other"),
]


@pytest.mark.parametrize(("agent", "os", "operating_system", "device", "browser"), AGENTS)
def test_user_agent_parsing(agent: str, os: str, operating_system: str, device: str, browser: str) -> None:
    info = parse_user_agent(agent)
    assert info.os == os
    assert operating_system_of(info.os) == operating_system
    assert info.device == device
    assert info.browser == browser
    assert info.is_bot is (device == "bot")


def test_parsing_is_cached() -> None:
    agent = AGENTS[0][0]
    parse_user_agent(agent)
    hits = parse_user_agent.cache_info().hits
    parse_user_agent(agent)
    assert parse_user_agent.cache_info().hits == hits + 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:8080", "1.2.3.4"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("nope", None),
        ("", None),
        (None, None),
        ("999.1.1.1", None),
    ],
)
def test_valid_ip(value: str | None, expected: str | None) -> None:
    assert valid_ip(value) == expected


@pytest.mark.parametrize(
    ("referrer", "domain"),
    [
        ("https://www.google.com/search?q=x", "google.com"),
        ("http://News.YCombinator.com/", "news.ycombinator.com"),
        ("not a url", ""),
        (None, ""),
        ("", ""),
    ],
)
def test_referrer_domain(referrer: str | None, domain: str) -> None:
    assert referrer_domain_of(referrer) == domain
