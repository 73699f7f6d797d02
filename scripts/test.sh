#!/usr/bin/env bash
# Runs edgeproxy's whole test suite. Installs the real servers the tests use
# (redis-server, memcached, haproxy, nginx, openssl, curl) from Debian
# packages when they are missing and we may install them.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in redis-server:redis-server memcached:memcached haproxy:haproxy nginx:nginx-light openssl:openssl curl:curl; do
  bin=${pair%%:*} pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (install them, or set EDGEPROXY_SKIP_SERVERS=1 to skip tests that need them)" >&2
  fi
fi
# Debian starts the packaged daemons on install; the tests start their own
# on free ports and need none of them.
for svc in redis-server memcached haproxy nginx; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || service "$svc" stop >/dev/null 2>&1 || true
done

go vet ./...
go test -race -count=1 -timeout 20m "$@" ./...
