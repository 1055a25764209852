#!/usr/bin/env sh
# Queue workers (INGEST_QUEUE=nats or redis): QUEUE_WORKERS processes of `python -m src.worker`
# (default 1), in a container (docker-compose.yml's `worker` service) or on a host. Each joins
# the broker's shared consumer; start more here, or on more machines, to drain faster.
#
# SIGTERM / SIGINT is passed to every worker: each finishes and acknowledges the batch it holds,
# takes no more and exits; the script exits when they all have (non-zero if one failed).
set -eu
cd "$(dirname "$0")/.."

python=python
[ -x .venv/bin/python ] && python=.venv/bin/python
workers="${QUEUE_WORKERS:-1}"
case "$workers" in
  ''|*[!0-9]*|0) echo "invalid setting QUEUE_WORKERS: must be a whole number >= 1 (got '$workers')" >&2; exit 2 ;;
esac

if [ "$workers" = 1 ]; then
  exec "$python" -m src.worker
fi

pids=""
i=0
while [ "$i" -lt "$workers" ]; do
  "$python" -m src.worker &
  pids="$pids $!"
  i=$((i + 1))
done
trap 'kill -TERM $pids 2>/dev/null || true' TERM INT

status=0
for pid in $pids; do
  # wait returns early when a trapped signal arrives: wait again until this worker is gone.
  while kill -0 "$pid" 2>/dev/null; do
    set +e
    wait "$pid"
    code=$?
    set -e
    kill -0 "$pid" 2>/dev/null || { [ "$code" -eq 0 ] || status=$code; }
  done
done
exit "$status"
