"""A client's privacy level applied to its processed events.

The sites issue defines clients' privacy levels (hashed IPs, redactions). Until they exist this
is the identity: every event goes out as stored, and processing is already written around this
one function, so applying the levels is a change here alone."""

from __future__ import annotations

from typing import Any


def apply_client_privacy(client_id: str | None, event: dict[str, Any]) -> dict[str, Any]:
    """The event as the client's privacy level lets it leave (for now: as stored)."""
    return event
