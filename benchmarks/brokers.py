"""Real brokers and workers on free ports, each with its own data folder, for the queue tests
and benchmarks: `nats-server -js` and `redis-server --appendonly yes` (the machine's shared
Redis keeps nothing on disk, and a test that restarts a broker must own it)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.server import ROOT, free_port


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


class BrokerServer:
    """A broker process that can be killed and started again on the same port and data."""

    def __init__(self, kind: str, folder: Path, *, appendonly: bool = True) -> None:
        self.kind = kind
        self.folder = folder
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        if self.kind == "nats":
            return f"nats://127.0.0.1:{self.port}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def env(self) -> dict[str, str]:
        """The service's settings for this broker."""
        return {"INGEST_QUEUE": self.kind, "NATS_URL" if self.kind == "nats" else "REDIS_URL": self.url}

    def start(self) -> None:
        log = open(self.folder / f"{self.kind}.log", "ab")  # noqa: SIM115 - the process owns it
        if self.kind == "nats":
            binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
            command = [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.folder / "js")]
        else:
            binary = shutil.which("redis-server") or "/usr/bin/redis-server"
            command = [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.folder),
                "--appendonly", "yes" if self.appendonly else "no",
                "--save", "",
            ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=log, stderr=log)
        _wait_port(self.port, self.process, self.kind)

    def kill(self) -> None:
        """SIGKILL: what a crash does; the data folder stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@contextmanager
def broker_server(kind: str, folder: Path, *, appendonly: bool = True) -> Iterator[BrokerServer]:
    server = BrokerServer(kind, folder, appendonly=appendonly)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class WorkerProcess:
    """`python -m src.worker` with the given settings; its log is kept to read its totals."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "src.worker"],
            cwd=ROOT,
            env={**os.environ, "LOG_LEVEL": "INFO", **env},
            stdout=self._log,
            stderr=self._log,
        )

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.wait(10)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout=timeout)
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def committed(self) -> int:
        """The messages it acknowledged, from its last log line (after it stopped)."""
        for line in reversed(self.log().splitlines()):
            if "worker stopped" in line:
                return int(line.split("committed=", 1)[1].split()[0])
        raise AssertionError("the worker did not log its totals")
