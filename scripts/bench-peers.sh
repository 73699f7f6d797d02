#!/usr/bin/env bash
# Side-by-side benchmark of edgeproxy and its peers (issue #13): nginx,
# HAProxy, Caddy, a bare Go ReverseProxy, Go's floor (crypto/tls and
# x/net/http2 alone: handshakes and idle memory) and edgeproxy, configured
# alike in front of one common upstream on 127.0.0.1, measured in alternated
# passes.
# Prints one Markdown table per section and writes the raw results as JSON.
# Not a test: figures depend on the machine and on what else runs on it.
#
#   scripts/bench-peers.sh
#
# Environment (all optional):
#   BENCH_SECONDS   seconds per measurement (default 3)
#   BENCH_PASSES    passes over the peers, alternating order (default 2)
#   BENCH_IDLE      idle connections for the memory cell (default 3000)
#   BENCH_SERVERS   peers, comma-separated (default nginx,haproxy,caddy,barego,gofloor,edgeproxy)
#   BENCH_SECTIONS  handshake,get,keepalive,idle (default all)
#   BENCH_JSON      raw results file (default: results.json in the work dir)
#   BENCH_WORK      work directory (default: a new one under /tmp)
#
# Installs nginx, HAProxy, Caddy, wrk, h2load (nghttp2-client) and openssl
# from Debian packages when they are missing and we run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in nginx:nginx-light haproxy:haproxy caddy:caddy wrk:wrk h2load:nghttp2-client openssl:openssl; do
  bin=${pair%%:*} pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (install them, or run as root to have them installed)" >&2
    exit 1
  fi
fi
# Debian starts the packaged daemons on install; the harness starts its own
# on free loopback ports and needs none of them.
for svc in nginx haproxy caddy; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || service "$svc" stop >/dev/null 2>&1 || true
done
export PATH="$PATH:/usr/sbin"

work=${BENCH_WORK:-$(mktemp -d /tmp/edgeproxy-bench-peers.XXXXXX)}
mkdir -p "$work/bin"
echo "building into $work/bin" >&2
for pkg in ./cmd/edgeproxy ./bench/baregoproxy ./bench/idleconns ./bench/peers; do
  go build -o "$work/bin/" "$pkg"
done

# One ECDSA P-256 certificate and one ticket key for every peer.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 600 "$work/key.pem"
"$work/bin/edgeproxy" keys gen --format binary --force --out "$work/ticket.key" 2>/dev/null # nginx reads the binary layout

# Room for the idle connections (the Go programs raise their own limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec "$work/bin/peers" -work "$work" \
  -edgeproxy "$work/bin/edgeproxy" -barego "$work/bin/baregoproxy" -idleconns "$work/bin/idleconns" \
  -seconds "${BENCH_SECONDS:-3}" -passes "${BENCH_PASSES:-2}" -idle "${BENCH_IDLE:-3000}" \
  -servers "${BENCH_SERVERS:-nginx,haproxy,caddy,barego,gofloor,edgeproxy}" \
  -sections "${BENCH_SECTIONS:-handshake,get,keepalive,idle}" \
  ${BENCH_JSON:+-json "$BENCH_JSON"} \
  -rev "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
