"""An independent sessionisation in Python, from the raw event rows: what the job's SQL must
equal (docs/sessions.md defines a session)."""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

PAGEVIEWS = {"pageview", "page_view", "$pageview"}


@dataclass(frozen=True)
class Expected:
    site_id: str
    visitor: str
    started_at: datetime
    first_event_id: uuid.UUID
    ended_at: datetime
    session_id: str | None
    duration: float
    events: int
    pageviews: int
    entry_page: str | None
    exit_page: str | None
    bounce: bool
    referrer_domain: str
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    os: str
    browser: str
    device: str


FIELDS = tuple(Expected.__dataclass_fields__)


def visitor_of(row: Mapping[str, Any]) -> str | None:
    if row["visitor_id"] is not None:
        return str(row["visitor_id"])
    if row["user_id"] is not None:
        return str(row["user_id"])
    if row["ip_address"] is not None:
        return f"{row['ip_address']} {row['user_agent'] or ''}"
    return None


def _utm(first: Mapping[str, Any], name: str) -> str | None:
    props = first["properties"] or {}
    params = (props.get("attribution") or {}).get("utmParams") or {}
    for key in (f"utm_{name}", name):
        value = params.get(key) if isinstance(params, dict) else None
        if value not in (None, ""):
            return str(value)[:255]
    match = re.search(rf"[?&]utm_{name}=([^&#]*)", first["url"] or "")
    if match and match.group(1):
        return match.group(1)[:255]
    return None


def sessionise(rows: Iterable[Mapping[str, Any]], timeout: timedelta) -> list[Expected]:
    by_visitor: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        visitor = visitor_of(row)
        if visitor is not None:
            by_visitor[(row["site_id"], visitor)].append(row)
    sessions: list[Expected] = []
    for (site, visitor), events in by_visitor.items():
        events.sort(key=lambda r: (r["time"], r["id"]))
        runs: list[list[Mapping[str, Any]]] = []
        for event in events:
            if runs:
                last = runs[-1][-1]
                split = event["time"] - last["time"] > timeout or (
                    event["session_id"] is not None
                    and last["session_id"] is not None
                    and event["session_id"] != last["session_id"]
                )
                if not split:
                    runs[-1].append(event)
                    continue
            runs.append([event])
        for run in runs:
            first, last = run[0], run[-1]
            pages = [e["page"] for e in run if e["event_type"] in PAGEVIEWS]
            interactions = [
                e
                for e in run
                if e["event_type"] not in PAGEVIEWS
                and (e["properties"] or {}).get("interactive") is not False
            ]
            sessions.append(
                Expected(
                    site_id=site,
                    visitor=visitor,
                    started_at=first["time"],
                    first_event_id=first["id"],
                    ended_at=last["time"],
                    session_id=first["session_id"],
                    duration=(last["time"] - first["time"]).total_seconds(),
                    events=len(run),
                    pageviews=len(pages),
                    entry_page=pages[0] if pages else None,
                    exit_page=pages[-1] if pages else None,
                    bounce=len(pages) == 1 and not interactions,
                    referrer_domain=first["referrer_domain"],
                    utm_source=_utm(first, "source"),
                    utm_medium=_utm(first, "medium"),
                    utm_campaign=_utm(first, "campaign"),
                    os=first["os"],
                    browser=first["browser"],
                    device=first["device"],
                )
            )
    return sorted(sessions, key=lambda s: (s.site_id, s.visitor, s.started_at, s.first_event_id))


def daily(sessions: Iterable[Expected]) -> dict[tuple[str, date], dict[str, Any]]:
    groups: dict[tuple[str, date], list[Expected]] = defaultdict(list)
    for s in sessions:
        groups[(s.site_id, s.started_at.astimezone(UTC).date())].append(s)
    out = {}
    for key, items in groups.items():
        n = len(items)
        out[key] = {
            "visitors": len({s.visitor for s in items}),
            "sessions": n,
            "pageviews": sum(s.pageviews for s in items),
            "events": sum(s.events for s in items),
            "bounces": sum(s.bounce for s in items),
            "bounce_rate": 100 * sum(s.bounce for s in items) / n,
            "avg_session_duration": sum(s.duration for s in items) / n,
            "total_duration": sum(s.duration for s in items),
            "pages_per_session": sum(s.pageviews for s in items) / n,
        }
    return out


async def raw_rows(engine: AsyncEngine, sites: Iterable[str]) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT id, time, site_id, event_type, page, url, referrer_domain, os, browser, device,"
                " session_id, visitor_id, user_id, ip_address, user_agent, properties FROM event"
                " WHERE site_id = ANY(:sites) AND time > now() - interval '400 days'"
            ),
            {"sites": list(sites)},
        )
        return [dict(r._mapping) for r in result]


async def stored_sessions(engine: AsyncEngine, sites: Iterable[str]) -> list[Expected]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(f"SELECT {', '.join(FIELDS)} FROM session WHERE site_id = ANY(:sites)"),
            {"sites": list(sites)},
        )
        found = [Expected(**dict(r._mapping)) for r in result]
    return sorted(found, key=lambda s: (s.site_id, s.visitor, s.started_at, s.first_event_id))


async def stored_daily(engine: AsyncEngine, sites: Iterable[str]) -> dict[tuple[str, date], dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT site_id, day, visitors, sessions, pageviews, events, bounces, bounce_rate,"
                " avg_session_duration, total_duration, pages_per_session FROM session_daily_metric WHERE site_id = ANY(:sites)"
            ),
            {"sites": list(sites)},
        )
        return {
            (r.site_id, r.day): {k: v for k, v in r._mapping.items() if k not in ("site_id", "day")}
            for r in result
        }
