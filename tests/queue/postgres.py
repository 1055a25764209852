"""Real PostgreSQL servers of the tests' own: a private TimescaleDB cluster that a test may stop
and start, and a hot standby (pg_basebackup, streaming replication) of the test cluster. The
shared cluster is only read from (a base backup and a replication connection), never changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from benchmarks.server import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def _as_postgres(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="queue-test-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    return folder


def plain_url(url: str) -> str:
    """A SQLAlchemy URL as libpq takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Cluster:
    def __init__(self, data: Path, port: int, options: str = "") -> None:
        self.data = data
        self.port = port
        self.options = options

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D", str(self.data),
                    "-l", str(self.data / "server.log"),
                    "-o", f"-p {self.port} {self.options}",
                    "-w", "-t", "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data.parent, ignore_errors=True)  # the folder _folder() made for it

    def execute(self, database: str, sql: str) -> list[tuple[object, ...]]:
        with psycopg.connect(plain_url(self.url(database)), autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []


def private_cluster() -> Cluster:
    """A new, small TimescaleDB cluster with an empty `analytics` database."""
    data = _folder() / "data"
    subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            "shared_preload_libraries = 'timescaledb'\ntimescaledb.telemetry_level = off\n"
            "shared_buffers = 64MB\nmax_connections = 60\nfsync = off\n"
        )
    cluster = Cluster(data, free_port())
    cluster.start()
    cluster.execute("postgres", "CREATE DATABASE analytics")
    return cluster


def standby_of(primary_url: str) -> Cluster:
    """A hot standby of the cluster behind `primary_url`, streaming from it, on a free port."""
    primary = make_url(primary_url)
    data = _folder() / "standby"
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "pg_basebackup"),
                "-h", primary.host or "127.0.0.1",
                "-p", str(primary.port or 5432),
                "-U", primary.username or "postgres",
                "-D", str(data),
                "-X", "stream",
                "-R",  # standby.signal and primary_conninfo: a streaming replica
                "-c", "fast",
            ]
        ),
        check=True,
        capture_output=True,
    )  # fmt: skip
    # The copied settings are the primary's (its port, its memory): the command line wins.
    standby = Cluster(data, free_port(), "-c shared_buffers=64MB -c hot_standby=on -c listen_addresses=127.0.0.1")
    standby.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if standby.execute("postgres", "SELECT pg_is_in_recovery()") == [(True,)]:
                return standby
        except psycopg.OperationalError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the standby did not come up")
