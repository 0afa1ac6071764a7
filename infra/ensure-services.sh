#!/usr/bin/env bash
# Make sure the binaries the demo and the tests use are installed: redis-server and openssl,
# plus psql, sshd, nginx and Debian's chromium for the tests (installed with apt when missing and
# we are root), and say how to start PostgreSQL.
# Usage: infra/ensure-services.sh [--postgres]
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${1:-}" = "--postgres" ]; then
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)  # the ssh delivery target's tests
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)  # the dashboard's browser test
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)  # the reverse proxy's test
  # With a docker client but no compose plugin, docker-compose validates the compose files.
  if command -v docker >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing: ${missing[*]} -- install them, e.g. sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

if [ "${1:-}" = "--postgres" ]; then
  url="${CERTFLEET_TEST_PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
  url="${url/postgresql+psycopg:/postgresql:}"
  if ! psql "$url" -Atqc 'select 1' >/dev/null 2>&1; then
    echo "PostgreSQL does not answer at $url." >&2
    echo "Start it (e.g. pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start)" >&2
    echo "or point CERTFLEET_TEST_PG_ADMIN_URL at a server where you may create databases." >&2
    exit 1
  fi
fi
