"""What site authorization and privacy cost the ingest path: microseconds per event of the
validate-and-enrich step (`IngestService.validate_items`, where the fast row builder runs) for
a batch of plain page views, without access (SITE_AUTHORIZATION=off, standard: the step does
not run), with registry authorization (client_id attached), and with the hashed and strict
privacy levels. In-process and without a database: the decisions are made up front, as
`IngestAccess.prepare` makes them once per request. Prints one line per case."""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime

from src.api.config import PrivacyLevel, get_settings
from src.api.ingest.access import RequestAccess
from src.api.ingest.rows import RequestContext
from src.api.ingest.service import IngestService, tune_garbage_collector
from src.api.privacy.salts import DailySalts
from src.api.sites.service import SiteGrant

AGENT = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


class FixedSalts(DailySalts):
    """One salt for every day: no database."""

    def __init__(self) -> None:
        pass

    def salt_for(self, moment: datetime, received_at: datetime) -> bytes:
        return b"s" * 32


def items(count: int) -> list[dict[str, object]]:
    return [
        {
            "site_id": "shop.example.com",
            "url": f"https://shop.example.com/p/{i % 500}?utm_source=news&email=a{i}@example.com",
            "referrer": "https://www.google.com/",
            "session_id": f"s{i % 900}",
            "properties": {"plan": "pro", "note": f"order {i}"},
        }
        for i in range(count)
    ]


def access(level: PrivacyLevel | None) -> RequestAccess | None:
    if level is None:
        return None
    grant = SiteGrant("shop.example.com", "acme", level, ("shop.example.com",))
    return RequestAccess(
        decisions={"shop.example.com": grant}, origin=None, key_sites=None, salts=FixedSalts(), enforcing=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000, help="events per batch (10000)")
    parser.add_argument("--runs", type=int, default=5, help="batches per case; the median is printed (5)")
    args = parser.parse_args()
    service = IngestService.__new__(IngestService)  # validate_items needs neither writer nor settings
    service.access = None
    batch = items(args.events)
    tune_garbage_collector()  # as the app's lifespan does
    print(
        f"{args.events} events per batch, median of {args.runs} runs, settings {get_settings().environment}"
    )
    for name, level in (
        ("off (no access step)", None),
        ("registry, standard", "standard"),
        ("registry, hashed", "hashed"),
        ("registry, strict", "strict"),
    ):
        timings = []
        for _ in range(args.runs):
            context = RequestContext(
                user_agent=AGENT, client_ip="198.51.100.7", received_at=datetime.now(UTC)
            )
            chosen = access(level)  # type: ignore[arg-type]
            started = time.perf_counter()
            rows, rejected = service.validate_items(batch, context, access=chosen)
            timings.append(time.perf_counter() - started)
            assert len(rows) == args.events and not rejected
        per_event = statistics.median(timings) / args.events * 1e6
        print(f"{name:24} {per_event:6.2f} us/event")


if __name__ == "__main__":
    main()
