package integration

import (
	"crypto/tls"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/edgeproxy/edgeproxy/proxy"
)

// reconnects is how many times a Go client comes back in the steady-state
// check.
const reconnects = 200

// TestResumption checks, for every mode and TLS version, that returning
// clients resume through HAProxy although it spreads their connections
// over the nodes: Go's crypto/tls over many reconnects, openssl s_client
// with the session in a file between processes, and openssl s_client
// -reconnect.
func TestResumption(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			c := newCluster(t, m)
			for _, v := range versions {
				t.Run(versionName(v), func(t *testing.T) {
					t.Run("go", func(t *testing.T) { testGoReconnects(t, c, v) })
					t.Run("openssl-sess", func(t *testing.T) { testOpenSSLSession(t, c, v) })
					if v == tls.VersionTLS12 {
						t.Run("openssl-reconnect", func(t *testing.T) { testOpenSSLReconnect(t, c) })
					} else {
						// Not a skip: OpenSSL 3.0's -reconnect closes each connection
						// before a TLS 1.3 ticket arrives, so it never resumes TLS 1.3
						// against any server; openssl-sess covers TLS 1.3.
						addRow(summaryRow{mode: m.name, client: "openssl s_client -reconnect", tls: versionName(v),
							note: "openssl 3.0 closes before the TLS 1.3 ticket; see -sess_out/-sess_in"})
					}
				})
			}
			// No handshake failed on the server side either (HAProxy's health
			// checks go to the admin port, never to the TLS port).
			// Each reason's series read by itself: a sum over series would
			// pass if the metric were missing.
			for _, reason := range []string{proxy.ReasonTimeout, proxy.ReasonClientClosed, proxy.ReasonBadClientHello,
				proxy.ReasonVersion, proxy.ReasonNoSharedCipher, proxy.ReasonOther} {
				for i, errs := range c.gauge(t, "edgeproxy_tls_handshake_errors_total", "reason", reason) {
					if errs != 0 {
						t.Errorf("%s counted %v failed handshakes (%s)", c.nodes[i].name, errs, reason)
					}
				}
			}
		})
	}
}

// testGoReconnects: one Go client comes back reconnects times through
// HAProxy. Under round robin every node must have resumed some of them, so
// sessions resumed on nodes other than the one that issued them.
func testGoReconnects(t *testing.T, c *cluster, v uint16) {
	before := c.handshakes(t, v, "true")
	tl := newGoClient(c.lb.addr, v).reconnect(reconnects)
	check(t, c.mode, fmt.Sprintf("go crypto/tls, %d reconnects", reconnects), v, tl, c.mode.steady)
	c.checkSpread(t, v, before, tl.resumed)
}

// checkSpread checks, under round robin, that every node did about its
// share of the resumed handshakes counted since before: the sessions
// resumed on nodes that did not issue them. Under balance source, one node
// must have done them all.
func (c *cluster) checkSpread(t *testing.T, v uint16, before []float64, resumed int) {
	t.Helper()
	after := c.handshakes(t, v, "true")
	spread := make([]float64, len(after))
	for i := range after {
		spread[i] = after[i] - before[i]
	}
	t.Logf("resumed %s handshakes per node: %v", versionName(v), spread)
	if c.mode.balance == "source" {
		// Sticky: one client address, so one node did them all.
		busy := 0
		for _, d := range spread {
			if d > 0 {
				busy++
			}
		}
		if busy != 1 {
			t.Errorf("balance source spread one client's resumed handshakes over %d nodes, want 1", busy)
		}
		return
	}
	for i, d := range spread {
		if d < float64(resumed)/float64(2*nodeCount) {
			t.Errorf("%s resumed only %v of %d handshakes; round robin should give each node about a third", c.nodes[i].name, d, resumed)
		}
	}
}

// testOpenSSLSession: s_client -sess_out in one process, -sess_in in the
// next; the second prints Reused. Three pairs, each landing on two nodes.
func testOpenSSLSession(t *testing.T, c *cluster, v uint16) {
	var tl tally
	for i := range 3 {
		sess := filepath.Join(t.TempDir(), fmt.Sprintf("sess%d.pem", i))
		first, err := opensslSession(t, c.lb.addr, v, "", sess)
		if err != nil || first != "New" {
			t.Fatalf("first s_client: %q %v", first, err)
		}
		second, err := opensslSession(t, c.lb.addr, v, sess, "")
		tl.add(false, second == "Reused", err)
	}
	check(t, c.mode, "openssl s_client -sess_out, -sess_in", v, tl, c.mode.steady)
}

// testOpenSSLReconnect: s_client -reconnect (TLS 1.2), twice: ten
// reconnects, spread by HAProxy over the nodes.
func testOpenSSLReconnect(t *testing.T, c *cluster) {
	before := c.handshakes(t, tls.VersionTLS12, "true")
	var tl tally
	for range 2 {
		hs, err := opensslReconnect(t, c.lb.addr)
		if err != nil {
			tl.add(false, false, err)
			continue
		}
		for _, h := range hs {
			tl.add(false, h == "Reused", nil)
		}
	}
	check(t, c.mode, "openssl s_client -reconnect", tls.VersionTLS12, tl, c.mode.steady)
	c.checkSpread(t, tls.VersionTLS12, before, tl.resumed)
}
