"""Values the database (or JSON) cannot hold exactly are refused at validation, naming the
field; events older than the retention are refused; a flush's cost stays bounded."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg.types.json import Jsonb
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.errors import BadRequest
from src.api.events.schemas import EventCreate
from src.api.ingest import writer as writer_module
from src.api.ingest.rows import RequestContext, build_row
from src.api.ingest.writer import MAX_DAYS_PER_FLUSH, _classify, prepare_rows

pytestmark = pytest.mark.anyio
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("properties", "field"),
    [
        ('{"n": NaN}', "properties.n"),
        ('{"n": Infinity}', "properties.n"),
        ('{"a": [1, {"b": -Infinity}]}', "properties.a[1].b"),
        ('{"big": 9007199254740993}', "properties.big"),
        ('{"huge": 18446744073709551616}', "properties.huge"),  # orjson would read a float
        ('{"neg": [-9007199254740992]}', "properties.neg[0]"),
        ('{"f": 1.5e300}', "properties.f"),  # JSONB would give back a 301-digit integer
    ],
)
async def test_numbers_json_cannot_carry_are_refused_naming_the_field(
    client: httpx.AsyncClient, properties: str, field: str
) -> None:
    single = await client.post(
        "/api/events/", content=f'{{"page": "/", "properties": {properties}}}', headers=JSON
    )
    assert single.status_code == 422, single.text
    assert field in single.text
    if "NaN" in properties or "Infinity" in properties:
        return  # not JSON at all: the batch routes' parser refuses the whole body (400)
    batch = await client.post(
        "/api/events/batch",
        content=f'{{"events": [{{"page": "/"}}, {{"page": "/", "properties": {properties}}}]}}',
        headers=JSON,
    )
    assert batch.status_code == 200
    result = batch.json()
    assert result["accepted"] == 1 and result["rejected"][0]["index"] == 1
    assert field in result["rejected"][0]["errors"][0]["message"]


async def test_the_largest_safe_integers_are_stored_exactly(client: httpx.AsyncClient) -> None:
    body = '{"page": "/", "properties": {"max": 9007199254740991, "min": -9007199254740991, "f": 1.5e-300}}'
    stored = await client.post("/api/events/", content=body, headers=JSON)
    assert stored.status_code == 200, stored.text
    read = (await client.get(f"/api/events/{stored.json()['id']}")).json()
    assert read["properties"] == {"max": 9007199254740991, "min": -9007199254740991, "f": 1.5e-300}


async def test_a_row_the_database_refuses_is_reported_without_its_text(app: FastAPI) -> None:
    """Validation refuses such rows; should one reach the database anyway, its error text (with
    values and statement parameters) goes to the log, not to the client."""
    context = RequestContext(user_agent=None, client_ip=None, received_at=datetime.now(UTC))
    row = list(build_row(EventCreate(page="/poison", site_id="poison"), context))
    row[19] = Jsonb({"n": float("nan")})  # the stdlib's json.dumps writes NaN, which is not JSON
    with pytest.raises(BadRequest) as refused:
        await app.state.ingest.writer.submit([tuple(row)])
    assert refused.value.message == "an event was refused by the database; check its values"
    assert "NaN" not in str(refused.value.detail) and "poison" not in str(refused.value.detail)


def test_out_of_locks_is_the_requests_fault_not_an_outage() -> None:
    assert _classify(psycopg.errors.OutOfMemory()) == "rejected"  # 53200, lock table included
    assert _classify(psycopg.errors.AdminShutdown()) == "unavailable"
    assert _classify(psycopg.errors.ConnectionFailure()) == "unavailable"
    assert _classify(psycopg.OperationalError("connection lost")) == "unavailable"
    assert _classify(psycopg.errors.DeadlockDetected()) == "retry"


async def test_events_older_than_the_retention_are_refused_naming_time(client: httpx.AsyncClient) -> None:
    retention = get_settings().events_retention
    assert retention is not None
    now = datetime.now(UTC)
    too_old = retention.before(now) - timedelta(days=1)
    kept = retention.before(now) + timedelta(days=1)
    for body in ({"page": "/", "time": too_old.isoformat()}, {"page": "/", "time": "1971-03-04T05:06:07Z"}):
        old = await client.post("/api/events/", json=body)
        assert old.status_code == 422, old.text
        error = old.json()["detail"][0]
        assert error["loc"][-1] == "time" and "retention" in error["msg"]
    assert (
        await client.post("/api/events/", json={"page": "/", "time": kept.isoformat()})
    ).status_code == 200
    collect = await client.post("/collect", json={"path": "/", "timestamp": int(too_old.timestamp() * 1000)})
    assert collect.status_code == 422 and "retention" in collect.text


async def test_a_batch_over_a_thousand_old_days_is_refused_at_once(client: httpx.AsyncClient) -> None:
    """The report: 1,000 events on 1,000 days of 1970-72 ran 54 s and exhausted the lock table."""
    start = datetime(1970, 1, 2, tzinfo=UTC)
    events = [{"page": "/", "time": (start + timedelta(days=d)).isoformat()} for d in range(1000)]
    began = time.monotonic()
    answer = await client.post("/api/events/batch", json={"events": events})
    assert answer.status_code == 200
    result = answer.json()
    assert result["accepted"] == 0 and len(result["rejected"]) == 1000
    assert {r["errors"][0]["field"] for r in result["rejected"]} == {"time"}
    assert time.monotonic() - began < 10


def test_a_wide_request_is_cut_into_parts_of_bounded_days() -> None:
    context = RequestContext(user_agent=None, client_ip=None, received_at=datetime.now(UTC))
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=400)
    rows = [
        build_row(EventCreate(page="/", time=start + timedelta(days=d, hours=h)), context)
        for d in range(3 * MAX_DAYS_PER_FLUSH + 1)
        for h in (1, 13)
    ]
    prepared = prepare_rows(rows)
    assert len(prepared.parts) == 4 and prepared.copy_data is None
    narrow = prepare_rows(rows[: 2 * MAX_DAYS_PER_FLUSH])
    assert narrow.parts == () and len(narrow.days) == MAX_DAYS_PER_FLUSH


async def test_a_wide_request_commits_alone_in_parts_and_exactly_once(
    client: httpx.AsyncClient, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "MAX_DAYS_PER_FLUSH", 5)
    site = f"wide-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC) - timedelta(days=60)
    events = [
        {
            "id": str(uuid.uuid4()),
            "site_id": site,
            "page": f"/{d}",
            "time": (start + timedelta(days=d)).isoformat(),
        }
        for d in range(50)
        for _ in range(3)
    ]
    first = await client.post("/api/events/batch", json={"events": events})
    again = await client.post("/api/events/batch", json={"events": events[:30] + events[-30:]})
    assert first.json() == {"accepted": 150, "duplicates": 0, "rejected": []}
    assert again.json() == {"accepted": 0, "duplicates": 60, "rejected": []}
    async with engine.connect() as conn:
        count = await conn.execute(text("SELECT count(*) FROM event WHERE site_id = :s"), {"s": site})
        assert count.scalar_one() == 150
