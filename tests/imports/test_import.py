"""Importing files through the ingest path (in process, with the app's own ingest service): the
NATS system's sample stored field by field, re-runs storing nothing twice, bad lines reported by
their line numbers while the good ones are stored, NDJSON, gzip, and rows the database refuses."""

from __future__ import annotations

import csv
import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.errors import UnreadableFile
from src.api.imports.reader import EventFile, FieldError, ImportFormat
from src.api.imports.service import ImportOptions, ImportReport, Reject, content_id, import_records
from src.api.ingest.service import IngestService

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent
# The first 300 events of the NATS-based system's events_sample.csv (August 2025).
SAMPLE = HERE / "events_sample.csv"
NATS_HEADER = "event_id,occurred_at,user_id,event_type,properties_json\n"


async def run(app: FastAPI, path: Path, format: ImportFormat | None = None, **options: Any) -> ImportReport:
    ingest: IngestService = app.state.ingest
    with EventFile(path, format) as events:
        return await import_records(events.records(), ingest, ImportOptions(**options))


def counts(report: ImportReport) -> tuple[int, int, int, int]:
    c = report.counts
    return c.read, c.accepted, c.duplicates, c.rejected


async def stored(engine: AsyncEngine, where: str, params: dict[str, Any]) -> dict[uuid.UUID, dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT id, time, site_id, event_type, page, url, user_id, duration, properties FROM event"
                f" WHERE {where}"
            ),
            params,
        )
        return {row.id: dict(row._mapping) for row in result}


async def test_the_nats_sample_is_stored_field_by_field_and_a_rerun_stores_nothing_twice(
    app: FastAPI, engine: AsyncEngine, clean: None
) -> None:
    with SAMPLE.open(newline="") as source:
        rows = list(csv.DictReader(source))
    assert len(rows) == 300
    expected = {
        uuid.UUID(row["event_id"]): {
            "id": uuid.UUID(row["event_id"]),
            "time": datetime.fromisoformat(row["occurred_at"]),
            "site_id": "default",
            "event_type": row["event_type"],
            "page": "",
            "url": None,
            "user_id": row["user_id"],
            "duration": 0,
            "properties": json.loads(row["properties_json"]),
        }
        for row in rows
    }

    report = await run(app, SAMPLE)

    assert counts(report) == (300, 300, 0, 0)
    assert report.first_rejects == []
    assert await stored(engine, "true", {}) == expected

    again = await run(app, SAMPLE, batch_size=64)  # other batch edges: still each row once

    assert counts(again) == (300, 0, 300, 0)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM event"))).scalar_one() == 300


def nats_line(event_id: object, at: str, user: str = "7", kind: str = "login", properties: str = "{}") -> str:
    cells = [str(event_id), at, user, kind, properties]
    out = []
    for cell in cells:
        out.append('"' + cell.replace('"', '""') + '"' if any(c in cell for c in ',"\n') else cell)
    return ",".join(out) + "\n"


async def test_bad_lines_are_reported_by_their_line_and_the_good_lines_are_stored(
    app: FastAPI, engine: AsyncEngine, tmp_path: Path
) -> None:
    ids = [uuid.uuid4() for _ in range(12)]
    at = "2025-08-02T10:00:00+03:00"
    path = tmp_path / "events.csv"
    path.write_bytes(
        (
            NATS_HEADER  # line 1
            + nats_line(ids[0], at, properties='{"a": 1}')  # 2: good
            + nats_line(ids[1], at, properties='{"a":')  # 3: bad JSON
            + nats_line(ids[2], "2025-13-45T99:00:00Z")  # 4: bad time
            + nats_line("", at)  # 5: no event_id
            + nats_line(ids[4], at, properties='{"a": 1,\n"b": [2, 3]}')  # 6-7: one record, two lines
            + nats_line(ids[5], at, kind="purchase")  # 8: good
            + f"{ids[6]},{at},9\n"  # 9: three fields
        ).encode()
        + f"{ids[7]},{at},\xff\xfe,login,{{}}\n".encode("latin-1")  # 10: not UTF-8
        + (
            nats_line(ids[8], at, properties="[1, 2]")  # 11: not an object
            + nats_line(ids[9], "2999-01-01T00:00:00Z")  # 12: the future
            + "\n"  # 13: blank, skipped
            + nats_line(ids[10], at, user="", kind="logout")  # 14: good, no user
        ).encode()
    )

    report = await run(app, path)

    assert counts(report) == (11, 4, 0, 7)
    assert [(r.line, [e.field for e in r.errors]) for r in report.first_rejects] == [
        (3, ["properties_json"]),
        (4, ["occurred_at"]),
        (5, ["event_id"]),
        (9, [None]),
        (10, [None]),
        (11, ["properties_json"]),
        (12, ["occurred_at"]),
    ]
    messages = [str(r) for r in report.first_rejects]
    assert messages[0].startswith("line 3: properties_json: not valid JSON (")
    assert messages[1].startswith("line 4: occurred_at: Input should be a valid datetime")
    assert messages[2] == "line 5: event_id: Field required"
    assert messages[3] == "line 9: has 3 fields, the header has 5"
    assert messages[4].startswith("line 10: not valid UTF-8 (")
    assert messages[5] == "line 11: properties_json: must be a JSON object"
    assert messages[6] == "line 12: occurred_at: must not be more than 1 hour in the future"
    rows = await stored(engine, "id = ANY(:ids)", {"ids": ids})
    assert set(rows) == {ids[0], ids[4], ids[5], ids[10]}
    assert rows[ids[4]]["properties"] == {"a": 1, "b": [2, 3]}
    assert rows[ids[5]]["event_type"] == "purchase"
    assert rows[ids[10]]["user_id"] is None


async def test_ndjson_gzip_and_content_ids(app: FastAPI, engine: AsyncEngine, tmp_path: Path) -> None:
    """Canonical lines without an id get one made from their content (with their site): a
    re-run, from a gzipped copy whatever its name, stores nothing twice; another site is
    another event."""
    site = f"import-{uuid.uuid4().hex[:8]}"
    nats_id = uuid.uuid4()
    now = datetime.now(UTC).replace(microsecond=0)
    first = {"page": "/a", "time": (now - timedelta(days=3)).isoformat(), "user_id": 5}
    lines: list[object] = [
        first,  # 1
        {
            "event_id": str(nats_id),
            "occurred_at": now.isoformat(),
            "event_type": "signup",
            "properties": {"plan": "pro"},
        },  # 2
        "{not json",  # 3
        [1, 2],  # 4
        {"page": "/b"},  # 5: no time
        {"time": now.isoformat(), "event_type": "x"},  # 6: neither page nor url
        "",  # 7: blank
        {"url": "https://x.example/p?q=1", "timestamp": int(now.timestamp()), "duration": "15"},  # 8
        {"page": "/c", "time": now.isoformat(), "site_id": "elsewhere-" + site},  # 9: its own site
    ]
    body = "".join((line if isinstance(line, str) else orjson.dumps(line).decode()) + "\n" for line in lines)
    plain = tmp_path / "events.ndjson"
    plain.write_text(body)

    report = await run(app, plain, site_id=site)

    assert counts(report) == (8, 4, 0, 4)
    assert [str(r) for r in report.first_rejects][2:] == [
        "line 5: time: required for import",
        "line 6: page: Field required (give page, or url to take its path)",
    ]
    assert [r.line for r in report.first_rejects][:2] == [3, 4]
    assert str(report.first_rejects[1]) == "line 4: must be a JSON object"
    rows = await stored(engine, "site_id IN (:s, :t)", {"s": site, "t": "elsewhere-" + site})
    by_page = {row["page"]: row for row in rows.values()}
    assert set(by_page) == {"/a", "", "/p", "/c"}
    assert by_page["/a"]["id"] == content_id({**first, "site_id": site})
    assert by_page["/a"]["user_id"] == "5" and by_page["/a"]["time"] == now - timedelta(days=3)
    assert by_page[""]["id"] == nats_id and by_page[""]["properties"] == {"plan": "pro"}
    assert by_page["/p"]["duration"] == 15 and by_page["/p"]["url"] == "https://x.example/p?q=1"
    assert by_page["/c"]["site_id"] == "elsewhere-" + site

    for name in ("events.ndjson.gz", "events.jsonl"):  # gzip is recognised by its bytes
        packed = tmp_path / name
        packed.write_bytes(gzip.compress(body.encode()))
        assert counts(await run(app, packed, site_id=site)) == (8, 0, 4, 4)

    other_site = f"{site}-2"
    # /a and /p anew; the NATS line (its own id) and /c (its own site) are the same events
    assert counts(await run(app, plain, site_id=other_site)) == (8, 2, 2, 4)
    assert len(await stored(engine, "site_id = :s", {"s": other_site})) == 2


async def test_a_canonical_csv_needs_a_time_and_parses_its_properties(
    app: FastAPI, engine: AsyncEngine, tmp_path: Path
) -> None:
    site = f"import-{uuid.uuid4().hex[:8]}"
    given = uuid.uuid4()
    path = tmp_path / "events.csv"
    path.write_text(
        "id,time,page,duration,properties,country\n"
        f'{given},2026-11-30T10:00:00Z,/given,12,"{{""k"": [1]}}",PL\n'
        ",2026-11-30T11:00:00Z,/derived,,,PL\n"
        f"{uuid.uuid4()},,/no-time,,,PL\n"
    )

    report = await run(app, path, site_id=site)

    assert counts(report) == (3, 2, 0, 1)
    assert [str(r) for r in report.first_rejects] == ["line 4: time: required for import"]
    rows = {row["page"]: row for row in (await stored(engine, "site_id = :s", {"s": site})).values()}
    assert rows["/given"]["id"] == given and rows["/given"]["duration"] == 12
    assert rows["/given"]["properties"] == {"k": [1]}
    assert rows["/derived"]["id"] == content_id(
        {"time": "2026-11-30T11:00:00Z", "page": "/derived", "site_id": site}
    )


async def test_a_row_the_database_refuses_is_found_and_the_others_of_its_batch_stored(
    app: FastAPI, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Validation should leave nothing for the database to refuse; should it refuse a row, the
    batch is written row by row, so only that row is lost, and reported by its line."""
    ids = [uuid.uuid4() for _ in range(200)]
    path = tmp_path / "events.csv"
    path.write_text(
        NATS_HEADER
        + "".join(
            nats_line(event_id, "2026-11-30T10:00:00Z", user="refuse-me" if n == 150 else str(n))
            for n, event_id in enumerate(ids)
        )
    )
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "CREATE FUNCTION import_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN IF NEW.user_id = 'refuse-me' THEN RAISE EXCEPTION 'refused'; END IF;"
                " RETURN NEW; END $$"
            )
        )
        await conn.execute(
            text(
                "CREATE TRIGGER import_test_refuse BEFORE INSERT ON event"
                " FOR EACH ROW EXECUTE FUNCTION import_test_refuse()"
            )
        )
    try:
        report = await run(app, path, batch_size=100)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER import_test_refuse ON event"))
            await conn.execute(text("DROP FUNCTION import_test_refuse()"))

    assert counts(report) == (200, 199, 0, 1)
    assert report.first_rejects == [
        Reject(
            152,
            (
                FieldError(
                    None, "refused by the database: an event was refused by the database; check its values"
                ),
            ),
        )
    ]
    assert set(await stored(engine, "id = ANY(:ids)", {"ids": ids})) == set(ids) - {ids[150]}


async def test_a_truncated_gzip_file_stores_what_was_read_and_says_where_it_stopped(
    app: FastAPI, engine: AsyncEngine, tmp_path: Path
) -> None:
    ids = [uuid.uuid4() for _ in range(3000)]
    body = NATS_HEADER + "".join(nats_line(event_id, "2026-11-30T10:00:00Z") for event_id in ids)
    packed = gzip.compress(body.encode())
    path = tmp_path / "events.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])

    report = await run(app, path, batch_size=500)

    assert isinstance(report.stopped, UnreadableFile)
    assert str(report.stopped).startswith(f"cannot read {path} after line ")
    read = report.counts.read
    assert 0 < read < 3000 and counts(report) == (read, read, 0, 0)
    assert set(await stored(engine, "id = ANY(:ids)", {"ids": ids})) == set(ids[:read])
