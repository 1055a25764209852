"""The sites and keys settings stop the service naming the variable (and never echo a secret);
the audit trail counts every decision and logs a refusal once per site and reason per minute."""

from __future__ import annotations

import logging

import pytest

from src.api.config import SettingsError, load_settings
from src.api.sites import audit


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("SITE_AUTHORIZATION", "sometimes", "must be one of off, registry, remote"),
        ("DEFAULT_PRIVACY_LEVEL", "paranoid", "must be one of standard, hashed, strict"),
        ("SITE_CACHE_SECONDS", "-1", "between 0 and 86400"),
        ("PIXEL_MANAGEMENT_TIMEOUT", "0", "between 0.05 and 60"),
        ("REDIS_URL", "http://user:pw@cache:6379", "redis://"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable) as error:
        load_settings()
    assert reason in str(error.value)
    if variable == "REDIS_URL":
        assert "pw" not in str(error.value)


@pytest.mark.parametrize("variable", ["SECRET_KEY", "ADMIN_API_KEY"])
def test_short_secrets_are_refused_without_being_echoed(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "tooShort1")
    with pytest.raises(SettingsError, match=variable) as error:
        load_settings()
    assert "tooShort1" not in str(error.value)


def test_defaults_keep_the_service_open(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SITE_AUTHORIZATION", "DEFAULT_PRIVACY_LEVEL", "SECRET_KEY", "ADMIN_API_KEY", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.site_authorization == "off" and settings.default_privacy_level == "standard"
    assert settings.admin_api_key is None and settings.secret_key is None and settings.redis_url is None


def test_refusals_are_counted_always_and_logged_once_per_site_and_reason_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(audit.time, "monotonic", lambda: clock[0])
    before = audit.decision_counts()
    with caplog.at_level(logging.WARNING, logger=audit.__name__):
        for _ in range(50):
            audit.record_decision("flood.example", "https://evil.example", False, "unknown_site")
        audit.record_decision("flood.example", None, False, "origin")
        audit.record_decision("flood.example", None, True, "granted", count=7)
        clock[0] += 61
        audit.record_decision("flood.example", "https://evil.example", False, "unknown_site")
    lines = [r.getMessage() for r in caplog.records if "flood.example" in r.getMessage()]
    assert len(lines) == 3  # unknown_site once, origin once, unknown_site again a minute later
    assert "similar_since_last_line=49" in lines[2]
    after = audit.decision_counts()
    key = ("flood.example", "https://evil.example", False, "unknown_site")
    assert after[key] - before.get(key, 0) == 51
    assert (
        after[("flood.example", "", True, "granted")] - before.get(("flood.example", "", True, "granted"), 0)
        == 7
    )
