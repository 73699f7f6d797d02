#!/usr/bin/env bash
# Runs edgeproxy's whole test suite.
#
# The tests start their own redis-server, memcached, haproxy and nginx on
# free loopback ports; this script never starts, stops or reconfigures a
# service running on the machine.
#
# Missing servers are installed from Debian packages only in CI (CI=true) or
# when asked (EDGEPROXY_INSTALL=1), and only as root with apt-get. Otherwise
# the script names what is missing; the tests that need it then fail, unless
# EDGEPROXY_SKIP_SERVERS=1 skips them.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in redis-server:redis-server memcached:memcached haproxy:haproxy nginx:nginx-light openssl:openssl curl:curl; do
  bin=${pair%%:*} pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "${CI:-}" != true ] && [ "${EDGEPROXY_INSTALL:-}" != 1 ]; then
    echo "missing: ${need[*]}: install them (EDGEPROXY_INSTALL=1 $0 does it with apt-get as root), or set EDGEPROXY_SKIP_SERVERS=1 to skip the tests that need them" >&2
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Debian starts a packaged daemon on install; policy-rc.d (exit 101)
    # forbids that for this install, so no service starts that the tests
    # would have to stop. An existing policy is kept as it was.
    policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
      trap '[ -z "$made_policy" ] || rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ -z "$made_policy" ] || rm -f "$policy"
    made_policy=
  else
    echo "missing: ${need[*]}: installing needs root and apt-get" >&2
  fi
fi

go vet ./...
go test -race -count=1 -timeout 20m "$@" ./...
