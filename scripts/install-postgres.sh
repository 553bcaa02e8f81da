#!/usr/bin/env bash
# Installs the PostgreSQL server the database tests run against, from Debian packages
# (the test harness, tests/harness/postgres.py, runs its own throw-away server with initdb on a
# loopback port; nothing here starts a server). Idempotent; prints nothing when already installed.
set -euo pipefail

have_postgres() {
  local bin
  for bin in /usr/lib/postgresql/*/bin; do
    if [ -x "$bin/initdb" ] && [ -x "$bin/postgres" ]; then
      return 0
    fi
  done
  return 1
}

if have_postgres; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-postgres: PostgreSQL is not installed and installing it needs root:" >&2
  echo "  apt-get install postgresql   (as root), then run this script again" >&2
  exit 1
fi
command -v apt-get >/dev/null || {
  echo "install-postgres: apt-get not found; install PostgreSQL (initdb + postgres) under /usr/lib/postgresql/<version>/bin" >&2
  exit 1
}

echo "install-postgres: installing PostgreSQL from Debian packages (one time)..." >&2
# The tests start their own server; do not let the package create (and start) a system-wide cluster.
# Only when the admin has not configured this already.
if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
  "${SUDO[@]}" mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | "${SUDO[@]}" tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null

have_postgres || { echo "install-postgres: postgresql installed but initdb/postgres not found under /usr/lib/postgresql/*/bin" >&2; exit 1; }
