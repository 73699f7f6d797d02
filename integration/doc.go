// Package integration holds edgeproxy's multi-node end-to-end tests (issue
// #5): real edgeproxy processes behind a real HAProxy in TCP mode, real
// redis-server and memcached where a mode needs them, and real clients (Go's
// crypto/tls and openssl s_client) checking that TLS sessions resume
// whichever node a connection lands on, also while nodes die, restart, the
// shared store restarts and ticket keys rotate.
//
// The package has no code outside its tests. Run it with
//
//	go test -race ./integration/ -v
//
// It needs haproxy, openssl, redis-server and memcached installed (.ci/run
// installs them). A missing one fails the suite, unless
// EDGEPROXY_SKIP_SERVERS=1 is set (developers' quick runs; CI never sets it).
// At the end it prints a summary table (mode × client × TLS version →
// resumed share); set EDGEPROXY_INTEGRATION_SUMMARY=FILE to also write it
// to FILE, since go test hides the output of passing packages unless -v is
// given. Under -race the edgeproxy binary under test is built with -race
// too, and a data race reported by any node fails the test.
package integration
