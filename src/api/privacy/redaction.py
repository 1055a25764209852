"""PII redaction for the `strict` privacy level: e-mail addresses, phone numbers, card-like
numbers, and the values of query parameters (or properties) named like a secret, replaced by
`[redacted]` before anything is stored.

Tuned against false positives that would ruin analytics: a card-like number must pass the Luhn
check (an epoch in milliseconds is 13 digits too), and a phone number must look like one — an
international `+` form, a (555) 123-4567 form, or a national number starting with 0 — so dates,
prices and ids stay."""

from __future__ import annotations

import re
from typing import Any

REDACTED = "[redacted]"

# Parameter and property names whose values are secrets or identities, whatever they hold.
SENSITIVE_NAME = re.compile(r"email|e-mail|token|password|passwd|secret|auth|key", re.IGNORECASE)
# Starting only where a run of local-part characters starts keeps the search linear.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
_CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}"
    r"|\(\d{3}\)\s?\d{3}[\s.-]\d{4}|\d{3}[\s.-]\d{3}[\s.-]\d{4}|0\d{9,10})(?![\w])"
)
_QUERY_PARAMETER = re.compile(r"([?&;])([^=&#;]*)=([^&#;]*)")
_MAYBE_PII = re.compile(r"[0-9@%]").search  # what every pattern needs at least one of
_NOT_DIGIT = re.compile(r"[^0-9]+")


def _luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return REDACTED if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def redact_text(text: str) -> str:
    """`text` with e-mail addresses, card-like numbers and phone numbers replaced."""
    if _MAYBE_PII(text) is None:
        return text  # the common case (a path, a word): nothing any pattern could match
    if "@" in text or "%40" in text:
        text = _EMAIL.sub(REDACTED, text)
    digits = len(_NOT_DIGIT.sub("", text))
    if digits >= 13:
        text = _CARD.sub(_card, text)
    return _PHONE.sub(REDACTED, text) if digits >= 7 else text


def _parameter(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    if value and SENSITIVE_NAME.search(name):
        return f"{separator}{name}={REDACTED}"
    return match.group(0)


def redact_url(value: str) -> str:
    """A URL, path or referrer with secret-named query parameters' values and any PII replaced."""
    if "=" in value:
        value = _QUERY_PARAMETER.sub(_parameter, value)
    return redact_text(value)


def redact_value(value: Any) -> Any:
    """Every string in a JSON value redacted; a string under a secret-named key wholly."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(item, str | int | float)
            and not isinstance(item, bool)
            and SENSITIVE_NAME.search(key)
            else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact_value(item) for item in value]
    return value
