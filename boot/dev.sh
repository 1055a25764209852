#!/usr/bin/env bash
# Command 1: serve the API on the embedded default (the local TimescaleDB, set up on first run).
# With DATABASE_URL set, that database is used and no local cluster is started.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
ensure_venv "$root/requirements.txt"
if [ -z "${DATABASE_URL:-}" ]; then ensure_local_db "${LOCAL_DB_NAME:-analytics}"; fi
exec "$root/.venv/bin/python" -m src.server src.main:app --host "${HOST:-127.0.0.1}" --port "${PORT:-8002}" \
  --no-access-log --forwarded-allow-ips '' "$@"
