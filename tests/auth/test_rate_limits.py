"""A key's hourly limit holds across server processes: two real servers share the counters, in
the database without REDIS_URL and in Redis with it (a redis-server of the test's own, on a
free port, with its own data folder)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from benchmarks.server import free_port, running_server
from src.api.auth.keys import generate_key, hash_key, visible_prefix
from src.api.config import get_settings
from tests.sites.helpers import SECRET_KEY

LIMIT = 5


def _dsn() -> str:
    return get_settings().database_url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def limited_key() -> Iterator[tuple[str, uuid.UUID]]:
    key = generate_key()
    key_id = uuid.uuid4()
    with psycopg.connect(_dsn(), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_key (id, name, prefix, secret_hash, scopes, hourly_limit)"
            " VALUES (%s, 'two-servers', %s, %s, ARRAY['stats:read'], %s)",
            (key_id, visible_prefix(key), hash_key(SECRET_KEY, key), LIMIT),
        )
    try:
        yield key, key_id
    finally:
        with psycopg.connect(_dsn(), autocommit=True) as conn:
            conn.execute("DELETE FROM api_key WHERE id = %s", (key_id,))
            conn.execute("DELETE FROM rate_limit_counter WHERE key LIKE %s", (f"%{key_id}%",))


@contextmanager
def redis_server(folder: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (boot/setup.sh installs it)")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _two_servers(stack: ExitStack, extra: dict[str, str]) -> list[str]:
    env = {"SECRET_KEY": SECRET_KEY, "SITE_AUTHORIZATION": "off", **extra}
    return [
        stack.enter_context(running_server(get_settings().database_url, extra_env=env))[0] for _ in range(2)
    ]


def _hits(bases: list[str], key: str) -> list[httpx.Response]:
    answers = []
    with httpx.Client(timeout=10) as http:
        for index in range(LIMIT + 3):
            base = bases[index % 2]  # alternate between the two processes
            answers.append(http.get(f"{base}/api/stats/realtime", headers={"x-api-key": key}))
    return answers


@pytest.mark.parametrize("storage", ["database", "redis"])
def test_the_hourly_limit_is_shared_by_two_server_processes(storage: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        extra = {"REDIS_URL": stack.enter_context(redis_server(tmp_path))} if storage == "redis" else {}
        key, key_id = stack.enter_context(limited_key())
        bases = _two_servers(stack, extra)
        answers = _hits(bases, key)
        with psycopg.connect(_dsn()) as conn:  # where the counter is: the table, or only Redis
            found = conn.execute(
                "SELECT count(*) FROM rate_limit_counter WHERE key LIKE %s", (f"%{key_id}%",)
            )
            assert found.fetchone() == ((1,) if storage == "database" else (0,))
    assert [a.status_code for a in answers] == [200] * LIMIT + [429] * 3
    assert [a.headers["x-ratelimit-remaining"] for a in answers[:LIMIT]] == [
        str(LIMIT - 1 - i) for i in range(LIMIT)
    ]
    refused = answers[LIMIT]
    assert refused.headers["x-ratelimit-limit"] == str(LIMIT) and int(refused.headers["retry-after"]) >= 1
