#!/usr/bin/env sh
# Container entry point (also runnable on a host): gunicorn with uvicorn workers.
#   HOST (default 0.0.0.0), PORT (default 8000), WEB_CONCURRENCY (default: one worker per CPU,
#   at least 2), GRACEFUL_TIMEOUT (default 30 s).
# Workers are I/O bound and share commits through the group-commit writer, so one per core is
# enough; more mostly adds database connections. On SIGTERM gunicorn stops accepting, and each
# worker's lifespan shutdown flushes every accepted event before the process exits, well within
# the graceful timeout.
set -eu
cd "$(dirname "$0")/.."

if [ -z "${WEB_CONCURRENCY:-}" ]; then
  cpus="$(python -c 'import os; print(len(os.sched_getaffinity(0)))' 2>/dev/null || echo 2)"
  WEB_CONCURRENCY=$(( cpus < 2 ? 2 : cpus ))
fi

GUNICORN="${GUNICORN:-gunicorn}"
exec "$GUNICORN" src.main:app \
  --worker-class uvicorn.workers.UvicornWorker \
  --workers "$WEB_CONCURRENCY" \
  --bind "${HOST:-0.0.0.0}:${PORT:-8000}" \
  --graceful-timeout "${GRACEFUL_TIMEOUT:-30}" \
  --timeout 60 \
  --keep-alive 5 \
  --access-logfile - \
  --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-*}"
