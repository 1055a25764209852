"""Serving the app: uvicorn's HTTP protocol with a header read timeout, for uvicorn
(`python -m src.server …`, uvicorn's own options) and gunicorn (`--worker-class src.server.Worker`).

uvicorn has no timeout for a request's headers: a connection that sends half a request line
and then nothing, or one byte every few seconds, is held for ever (its keep-alive timer stops
at the first byte). Here every request's headers must be complete within HEADER_READ_TIMEOUT
seconds of the connection's start or of the request's first byte; otherwise the server
answers 408 and closes the connection. Bodies get their own timeout in the app
(src/api/middleware.py, BODY_READ_TIMEOUT).

This module is also gunicorn's configuration (`--config python:src.server`, as
boot/docker-run.sh starts it): its hooks give the workers one PROMETHEUS_MULTIPROC_DIR, emptied
when the server starts (a private temporary directory unless the operator names one), and mark
a worker's gauges dead when it exits, so that `/metrics` from any worker reports them all."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn import config as uvicorn_config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.workers import UvicornWorker

from src.api.config import SettingsError, get_settings

_TIMEOUT_BODY = b'{"error":"request headers timed out","detail":"request headers timed out"}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + b"content-length: %d\r\n\r\n" % len(_TIMEOUT_BODY)
    + _TIMEOUT_BODY
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose request headers must arrive within a deadline."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = get_settings().header_read_timeout
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        # Only when no response is under way: a pipelined request's headers may lag behind
        # the previous answer, and that answer must not be cut.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_TIMEOUT_RESPONSE)
            self.transport.close()


class Worker(UvicornWorker):
    """gunicorn's uvicorn worker with the guarded protocol."""

    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 (uvicorn declares it so)
        **UvicornWorker.CONFIG_KWARGS,
        "http": GuardedHttpToolsProtocol,
    }


# --- gunicorn hooks ------------------------------------------------------------------------

_created_metrics_dir: str | None = None


def on_starting(server: Any) -> None:
    """In gunicorn's master, before any worker exists (and so before any imports the metrics)."""
    global _created_metrics_dir
    try:
        directory = get_settings().prometheus_multiproc_dir
    except SettingsError as exc:  # one line naming the variable, as the app itself stops
        sys.stderr.write(f"{exc}\n")
        raise SystemExit(2) from None
    if "prometheus_client" in sys.modules:
        # --preload imported the app (and the client) before this hook: every worker would
        # count alone and /metrics would show one worker's share.
        sys.stderr.write("warning: metrics are per worker with --preload; start gunicorn without it\n")
    if directory is None:
        directory = _created_metrics_dir = tempfile.mkdtemp(prefix="analytics-metrics-")
    for stale in Path(directory).glob("*.db"):  # a previous server's values are not ours
        stale.unlink()
    # Read by prometheus_client in each worker, and by the settings (src/api/config.py).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    get_settings.cache_clear()
    # Imported now, in the master, with the directory set: child_exit runs inside gunicorn's
    # SIGCHLD handler, and when two workers exited together the second exit interrupted the
    # first one's import and found the module half made (ImportError: gunicorn exited 1).
    import prometheus_client.multiprocess  # noqa: F401


def child_exit(server: Any, worker: Any) -> None:
    """A worker's live gauges (queue, pool) stop counting; its counters are kept."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    if _created_metrics_dir is not None:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)


def main() -> None:
    """uvicorn's command line, with the guarded protocol for --http auto/httptools."""
    guarded = "src.server:GuardedHttpToolsProtocol"
    uvicorn_config.HTTP_PROTOCOLS["auto"] = guarded
    uvicorn_config.HTTP_PROTOCOLS["httptools"] = guarded
    uvicorn.main()


if __name__ == "__main__":
    main()
