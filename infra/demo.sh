#!/usr/bin/env bash
# The demo: a fresh SQLite database under var/demo, a local redis-server (started if none
# answers), the API and the issuer as separate processes, then init, apply the example
# inventory, issue for every host, and print the table of hosts, names and expiry dates.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
CLI=.venv/bin/certfleet
DEMO=var/demo
rm -rf "$DEMO"; mkdir -p "$DEMO"; chmod 700 "$DEMO"

export CERTFLEET_VAR_DIR="$DEMO"
export CERTFLEET_DATABASE_URL="sqlite:///$DEMO/certfleet.db"
# Redis database 15: the demo's own, so that what it leaves queued never reaches a stack of
# yours on the default database 0 (and the other way round).
export CERTFLEET_REDIS_URL="${CERTFLEET_DEMO_REDIS_URL:-redis://127.0.0.1:6379/15}"

# Secrets for this demo only: random, kept in a 0600 file, never printed.
umask 077
if [ -z "${CERTFLEET_CA_KEY_PASSPHRASE:-}" ]; then
  CERTFLEET_CA_KEY_PASSPHRASE="$($PY -c 'import secrets; print(secrets.token_urlsafe(24))')"
fi
if [ -z "${CERTFLEET_DATA_KEY:-}" ]; then
  CERTFLEET_DATA_KEY="$($PY -c 'import secrets; print(secrets.token_urlsafe(24))')"
fi
export CERTFLEET_CA_KEY_PASSPHRASE CERTFLEET_DATA_KEY
printf 'CERTFLEET_CA_KEY_PASSPHRASE=%s\nCERTFLEET_DATA_KEY=%s\n' \
  "$CERTFLEET_CA_KEY_PASSPHRASE" "$CERTFLEET_DATA_KEY" > "$DEMO/secrets.env"
umask 022

started_redis=""
if ! redis-cli -u "$CERTFLEET_REDIS_URL" ping >/dev/null 2>&1; then
  port=$($PY -c 'import sys,urllib.parse as u; print(u.urlparse(sys.argv[1]).port or 6379)' "$CERTFLEET_REDIS_URL")
  echo "starting a local redis-server on port $port"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "$PWD/$DEMO/redis.pid" --logfile "$PWD/$DEMO/redis.log" --dir "$PWD/$DEMO"
  started_redis=1
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# The API's port: the configured one, or a free one if that is taken.
bind="${CERTFLEET_API_BIND:-127.0.0.1:8080}"
if ! $PY -c 'import socket,sys; h,p=sys.argv[1].rsplit(":",1); s=socket.socket(); s.bind((h,int(p)))' "$bind" 2>/dev/null; then
  bind="127.0.0.1:$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  echo "port ${CERTFLEET_API_BIND:-127.0.0.1:8080} is taken; the demo API uses $bind"
fi
export CERTFLEET_API_BIND="$bind"
export CERTFLEET_API_URL="http://$bind"

http_get() {
  $PY -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=5).read())' "$1"
}

stack_pid=""
cleanup() {
  [ -n "$stack_pid" ] && kill "$stack_pid" 2>/dev/null && wait "$stack_pid" 2>/dev/null || true
  if [ -n "$started_redis" ] && [ -f "$DEMO/redis.pid" ]; then kill "$(cat "$DEMO/redis.pid")" 2>/dev/null || true; fi
}
trap cleanup EXIT

echo "== certfleet init"
$CLI init --ca-name "Nordbank VMS Root CA" | sed 's/^cf_.*/(admin token hidden; see var\/demo\/admin.token)/'

echo "== starting the API, the issuer and the distributor (logs in $DEMO/logs)"
$CLI stack run --concurrency 2 > "$DEMO/stack.out" 2>&1 &
stack_pid=$!
for _ in $(seq 300); do
  http_get "$CERTFLEET_API_URL/readyz" >/dev/null 2>&1 && break
  if ! kill -0 "$stack_pid" 2>/dev/null; then cat "$DEMO/stack.out"; exit 1; fi
  sleep 0.2
done

echo "== certfleet apply (examples/inventory.yaml: hq-mgmt01, Aarhus and the client deliver to $DEMO/deliveries)"
# Their directory targets are relative paths: under the delivery root, var/demo/deliveries.
$CLI apply -f examples/inventory.yaml

echo "== certfleet issue --all --wait"
$CLI issue --all --wait --idempotency-key "demo-$(date +%s)"

echo "== certificates"
$CLI certs list --status active

echo "== deliveries (directory targets; these hosts have no TLS endpoint here to probe)"
for _ in $(seq 100); do
  pending=$($CLI -o json deliveries --status pending | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$pending" = 0 ] && break
  sleep 0.2
done
$CLI deliveries
ls -l "$DEMO/deliveries/branch-aarhus/aar-rec01"

echo "== trust bundle: $CERTFLEET_API_URL/api/v1/trust-bundle"
http_get "$CERTFLEET_API_URL/api/v1/trust-bundle" > "$DEMO/trust-bundle.pem"
first=$($CLI -o json certs list --status active | $PY -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
$CLI export "$first" --format pem --out "$DEMO/first-cert.pem" >/dev/null
openssl verify -CAfile "$DEMO/trust-bundle.pem" -purpose sslserver "$DEMO/first-cert.pem"
echo "== what a renewal campaign over the whole fleet would do (dry run: nothing is stored)"
$CLI campaign create renew-everything --all --rate 30 --per-site 2 --dry-run
echo "demo done: database $DEMO/certfleet.db, admin token $DEMO/admin.token"
