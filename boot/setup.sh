#!/usr/bin/env bash
# Shared by boot/dev.sh and boot/test.sh: the venv with the project's requirements and, unless
# DATABASE_URL points elsewhere, the local TimescaleDB cluster. Source it; do not run it.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

ensure_venv() {  # ensure_venv requirements-file
  local req="$1" stamp="$root/.venv/.installed-$(basename "$1")"
  if [ ! -x "$root/.venv/bin/python" ]; then
    echo "[setup] creating .venv with $("$PYTHON" --version)" >&2
    "$PYTHON" -m venv "$root/.venv"
    "$root/.venv/bin/pip" install -q --upgrade pip >/dev/null
  fi
  # Reinstall only when the requirement files changed since the last install.
  local sum
  sum="$(cat "$root"/requirements*.txt | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sum" ]; then
    echo "[setup] installing $(basename "$req")" >&2
    "$root/.venv/bin/pip" install -q -r "$req"
    echo "$sum" >"$stamp"
  fi
}

ensure_local_db() {  # ensure_local_db database-name: exports DATABASE_URL for the local cluster
  bash "$root/boot/local-db.sh" "$1"
  export DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:$(bash "$root/boot/local-db.sh" port)/$1"
}

ensure_chromium() {  # the browser tests (tests/dashboard, tests/tracker) drive Debian's chromium
  local browser="${CHROMIUM:-/usr/bin/chromium}"
  [ -x "$browser" ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing chromium (Debian's package) for the browser tests" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
  else
    echo "[setup] no $browser: install Debian's chromium (apt-get install chromium) for the browser tests" >&2
  fi
}

ensure_redis_server() {  # the rate-limit tests start their own redis-server on a free port
  command -v redis-server >/dev/null 2>&1 && return 0
  echo "[setup] installing redis-server (the tests start their own)" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  # Debian starts the packaged service; the tests need only the binary.
  if command -v systemctl >/dev/null 2>&1; then $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
}
