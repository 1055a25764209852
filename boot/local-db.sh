#!/usr/bin/env bash
# Starts (idempotently) the project's private PostgreSQL 15 + TimescaleDB cluster under
# .data/pg on its own port, creating it on first use, and makes sure the named databases exist.
#
#   boot/local-db.sh [database ...]      start and create databases (default: analytics)
#   boot/local-db.sh stop                stop the cluster
#   boot/local-db.sh port                print the cluster's port
#
# The port is chosen once, at initialisation: LOCAL_DB_PORT (default 5433), or the next free
# one when another server (say, another clone's cluster) already listens there.
# Log lines go to stderr; boot/setup.sh builds the connection URL.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR="${PG_MAJOR:-15}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/${PG_MAJOR}/bin}"
LOCAL_DB_PORT="${LOCAL_DB_PORT:-5433}"
data_root="${LOCAL_DB_DIR:-$root/.data}"
pgdata="$data_root/pg"
log() { echo "[local-db] $*" >&2; }

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

configured_port() { sed -n 's/^port = \([0-9]*\)$/\1/p' "$pgdata/postgresql.conf" | tail -n 1; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ "${1:-}" = "port" ]; then configured_port; exit 0; fi
if [ "${1:-}" = "stop" ]; then
  if [ -f "$pgdata/postmaster.pid" ]; then as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null; fi
  log "stopped"; exit 0
fi

bash "$root/boot/install-timescaledb.sh"

mkdir -p "$data_root"
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$data_root"
  # A checkout under a directory the postgres user cannot enter (say /root) keeps the cluster
  # under /var/lib/postgresql instead, linked from .data/pg.
  if [ ! -e "$pgdata" ] && ! runuser -u postgres -- test -w "$data_root"; then
    elsewhere="/var/lib/postgresql/event-analytics-$(echo "$root" | sha256sum | cut -c1-12)"
    mkdir -p "$elsewhere" && chown postgres: "$elsewhere"
    ln -s "$elsewhere" "$pgdata"
    pgdata="$elsewhere"
    log "the postgres user cannot write $data_root; the cluster lives in $elsewhere"
  fi
  [ -L "$pgdata" ] && pgdata="$(readlink -f "$pgdata")"
fi

if [ ! -f "$pgdata/PG_VERSION" ]; then
  log "initialising a cluster in $pgdata"
  as_pg "$PG_BIN/initdb" -D "$pgdata" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  while port_busy "$LOCAL_DB_PORT"; do
    log "port $LOCAL_DB_PORT is taken; trying $((LOCAL_DB_PORT + 1))"
    LOCAL_DB_PORT=$((LOCAL_DB_PORT + 1))
  done
  cat >>"$pgdata/postgresql.conf" <<CONF
# --- set by boot/local-db.sh ---
listen_addresses = '127.0.0.1'
port = ${LOCAL_DB_PORT}
unix_socket_directories = ''  # TCP only: a long checkout path would not fit a socket name
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 200
max_worker_processes = 16
shared_buffers = 512MB
work_mem = 32MB
maintenance_work_mem = 256MB
synchronous_commit = on
wal_compression = on
max_wal_size = 4GB
checkpoint_timeout = 15min
log_min_messages = warning
CONF
fi

LOCAL_DB_PORT="$(configured_port)"
if ! as_pg "$PG_BIN/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
  if port_busy "$LOCAL_DB_PORT"; then
    log "port $LOCAL_DB_PORT (set in $pgdata/postgresql.conf) is used by another server; stop it or re-initialise"
    exit 1
  fi
  log "starting PostgreSQL ${PG_MAJOR} on 127.0.0.1:${LOCAL_DB_PORT}"
  as_pg "$PG_BIN/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 start >/dev/null
fi

[ "$#" -gt 0 ] || set -- analytics
for db in "$@"; do
  exists="$(as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$LOCAL_DB_PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$db'")"
  if [ "$exists" != 1 ]; then
    log "creating database $db"
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$LOCAL_DB_PORT" -U postgres "$db"
  fi
done
