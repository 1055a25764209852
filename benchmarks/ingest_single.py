"""Single-event POST /api/events/ at a fixed concurrency for a fixed time; prints requests/s,
p50/p99 latency, errors, the server's peak RSS per process, and checks that every 2xx is a
stored row.

The load comes from wrk (C, so the generator takes little of the two cores; `apt-get install -y
wrk`), or, with `--client asyncio` or when wrk is missing, from a minimal asyncio HTTP client in
this process — Python, so it takes more CPU from the server and its figures are lower.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.server import count_events, local_database_url, peak_rss_mb, running_server, truncate

AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
PAGES = ["/", "/about", "/pricing", "/blog", "/contact", "/docs"]
LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "AGENT"
local pages = {"/", "/about", "/pricing", "/blog", "/contact", "/docs"}
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"page": "%s", "duration": %d, "session_id": "s%d", "referrer": "https://www.google.com/"}',
    pages[(n % #pages) + 1], n % 300, n % 5000)
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
""".replace("AGENT", AGENT)


def run_wrk(base: str, concurrency: int, seconds: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA)
        command = ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script)]
        out = subprocess.run(
            [*command, f"{base}/api/events/"], capture_output=True, text=True, check=True
        ).stdout
    match = re.search(r"RESULT (.*)", out)
    if not match:
        raise SystemExit(out)
    return {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}


async def run_asyncio(base: str, concurrency: int, seconds: int) -> dict[str, int]:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams, one connection per worker:
    httpx's own overhead (milliseconds per request here) would measure the client, not us."""
    host, port = base.removeprefix("http://").split(":")
    latencies: list[float] = []
    non2xx = errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker(offset: int) -> None:
        nonlocal non2xx, errors
        reader, writer = await asyncio.open_connection(host, int(port))
        n = offset
        try:
            while time.perf_counter() < deadline:
                n += concurrency
                body = (
                    f'{{"page": "{PAGES[n % len(PAGES)]}", "duration": {n % 300}, "session_id": "s{n % 5000}",'
                    ' "referrer": "https://www.google.com/"}'
                ).encode()
                head = (
                    f"POST /api/events/ HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    f"User-Agent: {AGENT}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                sent = time.perf_counter()
                writer.write(head + body)
                response = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", response)
                await reader.readexactly(int(length.group(1)) if length else 0)
                latencies.append(time.perf_counter() - sent)
                non2xx += not response.startswith(b"HTTP/1.1 2")
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> int:
        return int(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1e6) if latencies else 0

    return {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "p50_us": percentile(0.50),
        "p99_us": percentile(0.99),
        "non2xx": non2xx,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=None, help="default: analytics_bench on the local cluster")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument(
        "--workers", type=int, default=1, help="1: uvicorn; more: gunicorn with uvicorn workers"
    )
    parser.add_argument("--client", choices=("wrk", "asyncio"), default="wrk")
    args = parser.parse_args()
    client = args.client
    if client == "wrk" and shutil.which("wrk") is None:
        print(
            "wrk not found (apt-get install -y wrk); using the asyncio client, which takes CPU from the server"
        )
        client = "asyncio"
    url = args.database_url or local_database_url()
    with running_server(url, workers=args.workers) as (base, process):
        truncate(url)  # after the server has created the tables of a new database
        if client == "wrk":
            figures = run_wrk(base, args.concurrency, args.seconds)
        else:
            figures = asyncio.run(run_asyncio(base, args.concurrency, args.seconds))
        rss = peak_rss_mb(process.pid)
    stored = count_events(url)
    seconds = figures["duration_us"] / 1e6
    ok = figures["requests"] - figures["non2xx"]
    print(
        f"{args.workers} worker(s), {client}, concurrency {args.concurrency}, {seconds:.0f} s:"
        f" {figures['requests'] / seconds:,.0f} req/s, p50 {figures['p50_us'] / 1000:.1f} ms,"
        f" p99 {figures['p99_us'] / 1000:.1f} ms, non-2xx {figures['non2xx']}, socket errors {figures['errors']}"
    )
    # Requests still in flight when the client stops are stored too, hence "at least".
    print(f"2xx answers {ok}, rows stored {stored} (every 2xx stored: {stored >= ok})")
    print("peak RSS per process (MB): " + ", ".join(f"{pid}: {mb:.0f}" for pid, mb in rss.items()))


if __name__ == "__main__":
    main()
