"""Single-event POST /api/events/ at a fixed concurrency for a fixed time, driven by wrk (C, so the
load generator takes little of the two cores); prints requests/s, p50/p99 latency, errors, the
server's peak RSS per process, and checks that every 200 is a stored row."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.server import count_events, local_database_url, peak_rss_mb, running_server, truncate

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
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
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    url = args.database_url or local_database_url()
    truncate(url)
    with tempfile.TemporaryDirectory() as tmp, running_server(url, workers=args.workers) as (base, process):
        script = Path(tmp) / "post.lua"
        script.write_text(LUA)
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{args.concurrency}",
                f"-d{args.seconds}s",
                "--latency",
                "-s",
                str(script),
                f"{base}/api/events/",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rss = peak_rss_mb(process.pid)
    match = re.search(r"RESULT (.*)", out)
    if not match:
        raise SystemExit(out)
    figures = {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}
    stored = count_events(url)
    seconds = figures["duration_us"] / 1e6
    ok = figures["requests"] - figures["non2xx"]
    print(
        f"{args.workers} worker(s), concurrency {args.concurrency}, {seconds:.0f} s:"
        f" {figures['requests'] / seconds:,.0f} req/s, p50 {figures['p50_us'] / 1000:.1f} ms,"
        f" p99 {figures['p99_us'] / 1000:.1f} ms, non-2xx {figures['non2xx']}, socket errors {figures['errors']}"
    )
    print(f"2xx answers {ok}, rows stored {stored} (every 2xx stored: {stored >= ok})")
    print("peak RSS per process (MB): " + ", ".join(f"{pid}: {mb:.0f}" for pid, mb in rss.items()))


if __name__ == "__main__":
    main()
