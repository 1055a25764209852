#!/usr/bin/env bash
# Builds and installs the Apache-2 edition of TimescaleDB into the machine's PostgreSQL
# from Debian's source package (trixie), when the extension is not installed yet.
# Idempotent: exits at once when timescaledb.control is already present.
#
# The deb-src line is derived from the machine's own apt sources, so no registry host is
# written anywhere; apt runs with a private configuration and leaves the system's alone.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PG_CONFIG="${PG_CONFIG:-/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config}"
TS_SUITE="${TS_SUITE:-trixie}"
log() { echo "[install-timescaledb] $*" >&2; }

if [ -x "$PG_CONFIG" ] && [ -f "$("$PG_CONFIG" --sharedir)/extension/timescaledb.control" ]; then
  log "timescaledb already installed for PostgreSQL ${PG_MAJOR}; nothing to do"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# Build dependencies; the server headers pinned to the installed server's version.
server_version="$(dpkg-query -W -f='${Version}' "postgresql-${PG_MAJOR}" 2>/dev/null || true)"
if [ -z "$server_version" ]; then
  log "postgresql-${PG_MAJOR} is not installed"; exit 1
fi
need=()
for p in cmake dpkg-dev libssl-dev libkrb5-dev gcc make; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
dev_version="$(dpkg-query -W -f='${Version}' "postgresql-server-dev-${PG_MAJOR}" 2>/dev/null || true)"
[ "$dev_version" = "$server_version" ] || need+=("postgresql-server-dev-${PG_MAJOR}=${server_version}")
if [ "${#need[@]}" -gt 0 ]; then
  log "installing build dependencies: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work="$(mktemp -d /tmp/timescaledb-build.XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/apt/sources.list.d" "$work/src"

# Derive a deb-src line for the source suite from the first Debian archive the machine uses
# (deb822 .sources files or one-line .list files), never naming a host ourselves.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror="$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/\{0,1\}[[:space:]]*$/\1/p' "$f" | head -n 1)"
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ]; then
  mirror="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | sed -n 's/^deb\(-src\)\{0,1\}[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\/debian\)\/\{0,1\}[[:space:]].*/\3/p' \
    | head -n 1)"
fi
if [ -z "$mirror" ]; then log "could not derive a Debian archive from the apt sources"; exit 1; fi
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror} ${TS_SUITE} main" \
  > "$work/apt/sources.list"

apt_opts=(
  -o "Dir::Etc::SourceList=$work/apt/sources.list"
  -o "Dir::Etc::SourceParts=$work/apt/sources.list.d"
  -o "Dir::State::Lists=$work/apt/lists"
  -o "Dir::Cache=$work/apt/cache"
  -o "APT::Sandbox::User=root"
  -o "Acquire::Languages=none"
)
log "fetching the timescaledb source package (${TS_SUITE})"
apt-get "${apt_opts[@]}" update -qq
(cd "$work/src" && apt-get "${apt_opts[@]}" source -qq --download-only timescaledb >/dev/null \
  && dpkg-source -x --no-check ./*.dsc tsdb >/dev/null)

log "building (Apache edition) against $("$PG_CONFIG" --version)"
cd "$work/src/tsdb"
cmake -S . -B build -DPG_CONFIG="$PG_CONFIG" -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF \
  -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
$SUDO cmake --install build >/dev/null
log "installed $(sed -n "s/^default_version = '\(.*\)'/\1/p" "$("$PG_CONFIG" --sharedir)/extension/timescaledb.control")"
