"""What the request middleware (src/api/metrics/requests.py) costs per request: a trivial ASGI
app called directly, then through RequestMetrics (route lookup, counters, histogram, the events
record and — with --log — the INFO log line), in memory and in the multiprocess mode that
gunicorn uses (values in memory-mapped files). Prints microseconds per request.

    .venv/bin/python -m benchmarks.metrics_overhead [--requests 50000] [--log]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time


def measure(requests: int, log: bool) -> tuple[float, float]:
    from fastapi import FastAPI

    from src.api.metrics.requests import RequestMetrics

    app = FastAPI()

    @app.post("/api/events/batch")
    async def batch() -> None:  # only its route matters here
        return None

    async def endpoint(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    wrapped = RequestMetrics(endpoint)
    handler = logging.FileHandler(os.devnull)
    logging.basicConfig(level=logging.INFO if log else logging.WARNING, handlers=[handler])
    scope = {"type": "http", "method": "POST", "path": "/api/events/batch", "app": app, "headers": []}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: object) -> None:
        return None

    async def run(target: object) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await target(dict(scope), receive, send)  # type: ignore[operator]
        return (time.perf_counter() - started) / requests * 1e6

    async def both() -> tuple[float, float]:
        await run(wrapped)  # warm the route cache and the files
        return await run(endpoint), await run(wrapped)

    return asyncio.run(both())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--log", action="store_true", help="with the INFO request log line (to /dev/null)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        bare, wrapped = measure(args.requests, args.log)
        print(f"{bare:.2f} {wrapped:.2f}")
        return
    for mode in ("memory", "multiprocess"):
        env = dict(os.environ)
        with tempfile.TemporaryDirectory() as directory:
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = directory
            else:
                env.pop("PROMETHEUS_MULTIPROC_DIR", None)
            command = [
                sys.executable,
                "-m",
                "benchmarks.metrics_overhead",
                "--child",
                "--requests",
                str(args.requests),
            ]
            out = subprocess.run(
                command + (["--log"] if args.log else []), env=env, check=True, capture_output=True, text=True
            ).stdout.split()
        bare, wrapped = float(out[0]), float(out[1])
        print(
            f"{mode:>12}: bare app {bare:6.2f} us/request, with RequestMetrics {wrapped:6.2f} us "
            f"(+{wrapped - bare:.2f} us){' with the log line' if args.log else ''}"
        )


if __name__ == "__main__":
    main()
