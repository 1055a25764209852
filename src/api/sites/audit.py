"""The audit trail of site authorization: every decision counted by (site, origin, allowed,
reason), and refusals logged at most once per (site, reason) per minute, with how many were
folded into that line — a trail, not a flood.

`record_decision` is the one entry point; the metrics endpoint reads `decision_counts()`. The
counter keeps at most MAX_SERIES series so that a stream of made-up site names or origins cannot
grow it without bound: beyond that, new series are counted under site and origin "(other)"."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from src.api.metrics import instruments as metrics

log = logging.getLogger(__name__)

MAX_SERIES = 10_000
LOG_EVERY_SECONDS = 60.0
Series = tuple[str, str, bool, str]  # site, origin, allowed, reason

_counts: Counter[Series] = Counter()
_last_logged: dict[tuple[str, str], tuple[float, int]] = {}  # (site, reason) -> (when, folded since)
_lock = threading.Lock()  # validation of large batches runs in a worker thread


def record_decision(site_id: str, origin: str | None, allowed: bool, reason: str, count: int = 1) -> None:
    """Count `count` decisions alike, and log a refusal unless one like it was logged within
    the last minute."""
    series: Series = (site_id, origin or "", allowed, reason)
    with _lock:
        if series not in _counts and len(_counts) >= MAX_SERIES:
            series = ("(other)", "(other)", allowed, reason)
        _counts[series] += count
        if allowed:
            return
        # /metrics: one refusal per request and (site, reason), like the key refusals it counts
        metrics.authorization_refused(f"site_{reason}")
        now = time.monotonic()
        key = (site_id, reason)
        logged_at, folded = _last_logged.get(key, (float("-inf"), 0))
        if now - logged_at < LOG_EVERY_SECONDS:
            _last_logged[key] = (logged_at, folded + count)
            return
        if len(_last_logged) >= MAX_SERIES:
            _last_logged.clear()
        _last_logged[key] = (now, 0)
    log.warning(
        "site refused site=%s origin=%s reason=%s events=%d similar_since_last_line=%d",
        site_id,
        origin or "-",
        reason,
        count,
        folded,
    )


def decision_counts() -> dict[Series, int]:
    """A snapshot of the counters: (site, origin, allowed, reason) -> decisions."""
    with _lock:
        return dict(_counts)
