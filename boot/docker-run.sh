#!/usr/bin/env sh
# Container entry point (also runnable on a host): gunicorn with uvicorn workers.
#   HOST (default 0.0.0.0), PORT (default 8000), WEB_CONCURRENCY (default below),
#   GRACEFUL_TIMEOUT (default 30 s), GUNICORN (the executable; default: gunicorn on PATH).
# Any other gunicorn option goes in GUNICORN_CMD_ARGS (say "--access-logfile -": off by default,
# like boot/dev.sh, since one line per ingest request costs more than it tells).
#
# On SIGTERM gunicorn closes its sockets and tells each worker to stop; a worker finishes its
# in-flight requests, then its lifespan shutdown flushes the ingest writer, so every event
# that was acknowledged is committed before the process exits. GRACEFUL_TIMEOUT bounds that;
# docker-compose.yml (stop_grace_period) and railway.json (drainingSeconds) wait longer.
set -eu
cd "$(dirname "$0")/.."

if [ -z "${WEB_CONCURRENCY:-}" ]; then
  # CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (docker --cpus,
  # platform plans), which the affinity mask does not show.
  cpus="$(python -c '
import math, os
n = len(os.sched_getaffinity(0))
try:
    quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
    if quota != "max":
        n = min(n, max(1, math.ceil(int(quota) / int(period))))
except (OSError, ValueError):
    pass
print(n)' 2>/dev/null || echo 2)"
  # One worker per CPU, at least 2, at most 4. The workers are I/O bound and their writes
  # coalesce into group commits, so beyond a few the database is the limit, not Python; and
  # each worker may hold up to 2 x DB_POOL_SIZE connections (20 by default): 4 workers stay
  # under PostgreSQL's default max_connections of 100. Two keep serving while one restarts.
  WEB_CONCURRENCY=$(( cpus < 2 ? 2 : (cpus > 4 ? 4 : cpus) ))
fi

# --forwarded-allow-ips '': uvicorn must not rewrite the client address from X-Forwarded-For;
# the service decides which proxies to believe (TRUSTED_PROXIES), and would otherwise see a
# forged address as the peer.
# --config python:src.server: its hooks share one PROMETHEUS_MULTIPROC_DIR between the workers
# so that /metrics counts for the whole server.
exec "${GUNICORN:-gunicorn}" src.main:app \
  --worker-class src.server.Worker \
  --config python:src.server \
  --workers "$WEB_CONCURRENCY" \
  --bind "${HOST:-0.0.0.0}:${PORT:-8000}" \
  --graceful-timeout "${GRACEFUL_TIMEOUT:-30}" \
  --timeout 60 \
  --keep-alive 5 \
  --forwarded-allow-ips ''
