"""`python -m src.cli import FILE` as a user runs it: a process of its own, its summary on
stdout, its exit status; and what it shows while it runs."""

from __future__ import annotations

import gzip
import io
import os
import re
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from src.api.config import get_settings
from src.api.imports.progress import ProgressLine, summary_lines
from src.api.imports.reader import FieldError
from src.api.imports.service import ImportCounts, ImportReport, Reject

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = Path(__file__).resolve().parent / "events_sample.csv"
SUMMARY = re.compile(r"accepted (\d+), duplicates (\d+), rejected (\d+) \(\d+\.\d\d s, \d+ events/s\)")


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": get_settings().database_url, **env}
    return subprocess.run(
        [sys.executable, "-m", "src.cli", "import", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def nats_file(path: Path, ids: list[uuid.UUID]) -> Path:
    now = datetime.now(UTC)
    path.write_text(
        "event_id,occurred_at,user_id,event_type,properties_json\n"
        + "".join(
            f'{event_id},{(now - timedelta(minutes=n)).isoformat()},{n},view_item,"{{""n"": {n}}}"\n'
            for n, event_id in enumerate(ids)
        )
    )
    return path


@pytest.mark.anyio
async def test_the_command_imports_a_file_and_a_rerun_reports_duplicates(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    ids = [uuid.uuid4() for _ in range(120)]
    path = nats_file(tmp_path / "events.csv", ids)
    site = f"cli-{uuid.uuid4().hex[:8]}"

    first = cli(str(path), "--site", site, "--batch", "50")
    again = cli(str(path), "--site", site)

    assert first.returncode == 0, first.stderr
    match = SUMMARY.fullmatch(first.stdout.strip())
    assert match and match.groups() == ("120", "0", "0"), first.stdout
    assert again.returncode == 0, again.stderr
    match = SUMMARY.fullmatch(again.stdout.strip())
    assert match and match.groups() == ("0", "120", "0"), again.stdout
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT site_id, count(*) FROM event WHERE id = ANY(:ids) GROUP BY site_id"), {"ids": ids}
        )
        assert result.all() == [(site, 120)]


def test_history_older_than_the_retention_is_rejected_and_the_summary_says_what_to_set() -> None:
    done = cli(str(SAMPLE), EVENTS_RETENTION="3 months")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    match = SUMMARY.fullmatch(lines[0])
    assert match and match.groups() == ("0", "0", "300"), lines[0]
    assert len(lines) == 13
    for number, line in enumerate(lines[1:11], start=2):
        assert line.startswith(
            f"line {number}: occurred_at: must not be older than the retention period (EVENTS_RETENTION): before "
        ), line
    assert lines[11] == "… and 290 more rejected"
    assert "EVENTS_RETENTION" in lines[12] and "'off'" in lines[12]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_exit_status_two_for_what_cannot_be_read_one_for_no_database(tmp_path: Path) -> None:
    missing = cli(str(tmp_path / "missing.csv"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr and "No such file or directory" in missing.stderr

    unnamed = tmp_path / "events.txt"
    unnamed.write_text("event_id,occurred_at\n")
    unknown = cli(str(unnamed))
    assert unknown.returncode == 2 and "pass --format csv or --format ndjson" in unknown.stderr

    headerless = tmp_path / "events.csv"
    headerless.write_text(f"{uuid.uuid4()},2026-11-30T10:00:00Z,1,login,{{}}\n")
    no_header = cli(str(headerless))
    assert no_header.returncode == 2 and "no known column in the header line" in no_header.stderr

    bad_batch = cli(str(headerless), "--batch", "0")
    assert bad_batch.returncode == 2 and "--batch" in bad_batch.stderr

    truncated = tmp_path / "truncated.csv.gz"
    packed = gzip.compress(
        nats_file(tmp_path / "whole.csv", [uuid.uuid4() for _ in range(2000)]).read_bytes()
    )
    truncated.write_bytes(packed[: len(packed) // 2])
    stopped = cli(str(truncated))
    assert stopped.returncode == 2
    assert SUMMARY.fullmatch(stopped.stdout.strip()), stopped.stdout  # what it stored before
    assert "import stopped early: cannot read" in stopped.stderr

    good = nats_file(tmp_path / "good.csv", [uuid.uuid4()])
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    no_database = cli(str(good), DATABASE_URL=url, DB_STARTUP_TIMEOUT="1")
    assert no_database.returncode == 1
    assert "database unavailable" in no_database.stderr and no_database.stdout == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def report_of(read: int, accepted: int, duplicates: int, rejected: int, seconds: float) -> ImportReport:
    return ImportReport(ImportCounts(read, accepted, duplicates, rejected), seconds=seconds)


def test_progress_is_one_line_rewritten_on_a_terminal_and_plain_lines_elsewhere() -> None:
    terminal = Terminal()
    progress = ProgressLine(terminal, lambda: 0.5, every=0)  # every call shows
    progress(report_of(1000, 800, 100, 100, 2.0))
    progress(report_of(2000, 1800, 100, 100, 4.0))
    progress.finish()
    line = "\r\x1b[2K[############............]  50% read {}, accepted {}, duplicates 100, rejected 100, 500 events/s"
    assert terminal.getvalue() == line.format(1000, 800) + line.format(2000, 1800) * 2 + "\n"

    log = io.StringIO()
    progress = ProgressLine(log, lambda: 0.25, every=0)
    progress(report_of(1000, 1000, 0, 0, 0.5))
    progress.finish()
    assert (
        log.getvalue()
        == "25% of the file: read 1000, accepted 1000, duplicates 0, rejected 0, 2,000 events/s\n"
    )


def test_the_summary_lists_at_most_ten_rejects() -> None:
    report = report_of(40, 10, 5, 0, 2.0)
    report.reject(Reject(n, (FieldError("time", "required for import"),)) for n in range(2, 27))
    assert report.counts.rejected == 25 and len(report.first_rejects) == 10
    lines = summary_lines(report)
    assert lines[0] == "accepted 10, duplicates 5, rejected 25 (2.00 s, 20 events/s)"
    assert lines[1:] == [f"line {n}: time: required for import" for n in range(2, 12)] + [
        "… and 15 more rejected"
    ]
