#!/usr/bin/env bash
# Command 2: the whole suite — ruff, mypy, pytest — against a real TimescaleDB. Uses the local
# cluster's analytics_test database unless TEST_DATABASE_URL names another (it is emptied).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
ensure_venv "$root/requirements-dev.txt"
ensure_chromium
ensure_redis_server
if [ -n "${TEST_DATABASE_URL:-}" ]; then
  export DATABASE_URL="$TEST_DATABASE_URL"
else
  ensure_local_db analytics_test
fi
echo "[test] ruff" >&2
.venv/bin/ruff check src tests benchmarks
echo "[test] mypy" >&2
.venv/bin/mypy src benchmarks
echo "[test] pytest" >&2
exec .venv/bin/pytest "$@"
