package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// fleet starts n nodes sharing one ticket key file.
func fleet(t *testing.T, n int, keyFile string) []*App {
	t.Helper()
	up := httptest.NewServer(demoapp.Handler("up"))
	t.Cleanup(up.Close)
	var nodes []*App
	for i := 0; i < n; i++ {
		off := ""
		nodes = append(nodes, startNode(t, config.Config{
			Admin:  &off,
			Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}},
			Resumption: config.Resumption{TicketKeys: config.TicketKeys{
				Source: "file", Files: []string{keyFile},
			}},
		}))
	}
	return nodes
}

// connect makes one TLS connection and one HTTP request (so TLS 1.3
// tickets arrive), and reports whether the handshake resumed.
func connect(t *testing.T, addr string, version uint16, cache tls.ClientSessionCache) bool {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{
		InsecureSkipVerify: true, ServerName: "localhost", ClientSessionCache: cache,
		MinVersion: version, MaxVersion: version, NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		t.Fatalf("handshake with %s: %v", addr, err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
	body, err := io.ReadAll(c)
	if err != nil || !bytes.HasPrefix(body, []byte("HTTP/1.1 200")) {
		t.Fatalf("request via %s: %v, %.40q", addr, err, body)
	}
	return c.ConnectionState().DidResume
}

func writeKeys(t *testing.T, path string, keys ...[]byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, bytes.Join(keys, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newKey(t *testing.T) []byte {
	var b bytes.Buffer
	if err := ticketkeys.GenerateKeyFile(&b, ticketkeys.FormatBinary, ticketkeys.KeySize80, 1, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestFleetSharedKeyFileResumesAcrossNodes(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "ticket.key")
	writeKeys(t, keyFile, newKey(t))
	nodes := fleet(t, 3, keyFile)
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(proxy.VersionName(v), func(t *testing.T) {
			cache := tls.NewLRUClientSessionCache(1)
			connect(t, nodes[0].Addr().String(), v, cache)
			const reconnects = 150
			resumed := 0
			for i := 1; i <= reconnects; i++ {
				if connect(t, nodes[i%3].Addr().String(), v, cache) {
					resumed++
				}
			}
			t.Logf("TLS %s: %d/%d reconnects resumed across 3 nodes", proxy.VersionName(v), resumed, reconnects)
			// Deterministic: every node opens every ticket.
			if resumed != reconnects {
				t.Fatalf("resumed %d/%d, want all", resumed, reconnects)
			}
		})
	}
}

// TestFleetKeyRotationUnderTraffic rotates the shared key file the way an
// operator does — new key first with the old one kept, later the old one
// dropped — reloading the running nodes as SIGHUP does, never restarting.
func TestFleetKeyRotationUnderTraffic(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "ticket.key")
	oldKey, newK := newKey(t), newKey(t)
	writeKeys(t, keyFile, oldKey)
	nodes := fleet(t, 3, keyFile)
	reloadAll := func() {
		for _, n := range nodes {
			if err := n.Reload(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(proxy.VersionName(v), func(t *testing.T) {
			writeKeys(t, keyFile, oldKey)
			reloadAll()
			// A client whose session was sealed under the old key, kept
			// aside, and one that keeps reconnecting through the rotation.
			before := tls.NewLRUClientSessionCache(1)
			connect(t, nodes[0].Addr().String(), v, before)
			busy := tls.NewLRUClientSessionCache(1)
			connect(t, nodes[0].Addr().String(), v, busy)

			writeKeys(t, keyFile, newK, oldKey)
			reloadAll()
			for i := 0; i < 6; i++ {
				if !connect(t, nodes[i%3].Addr().String(), v, busy) {
					t.Fatalf("reconnect %d during the rotation did not resume", i)
				}
			}
			// Peek at the old session without consuming the cache entry.
			if !connect(t, nodes[1].Addr().String(), v, snapshot(before)) {
				t.Fatal("a session sealed before the rotation did not resume after it")
			}

			writeKeys(t, keyFile, newK)
			reloadAll()
			if connect(t, nodes[2].Addr().String(), v, before) {
				t.Fatal("a session sealed under a dropped key resumed")
			}
			if !connect(t, nodes[0].Addr().String(), v, busy) {
				t.Fatal("a session re-sealed under the new key did not resume after the old key was dropped")
			}
		})
	}
}

// snapshot returns a cache holding c's session for the connect helper's
// server name, so presenting it leaves c untouched.
func snapshot(c tls.ClientSessionCache) tls.ClientSessionCache {
	s := tls.NewLRUClientSessionCache(1)
	if cs, ok := c.Get("localhost"); ok {
		s.Put("localhost", cs)
	}
	return s
}

func TestFleetSharedStore(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"redis", "memcached"} {
		t.Run(mode, func(t *testing.T) {
			// A generous store timeout: this test is about sharing, and a
			// loaded CI machine can delay a loopback reply past 25ms.
			res := config.Resumption{Mode: mode, Store: config.Store{Timeout: time.Second}}
			if mode == "redis" {
				res.Redis.Addrs = []string{testserver.Redis(t).Addr}
			} else {
				res.Memcached.Servers = []string{testserver.Memcached(t).Addr}
			}
			up := httptest.NewServer(demoapp.Handler("up"))
			defer up.Close()
			var nodes []*App
			for i := 0; i < 3; i++ {
				nodes = append(nodes, startNode(t, config.Config{
					Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}, Resumption: res,
				}))
			}
			for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
				cache := tls.NewLRUClientSessionCache(1)
				connect(t, nodes[0].Addr().String(), v, cache)
				settle(t, nodes[0])
				const reconnects = 60
				resumed := 0
				for i := 1; i <= reconnects; i++ {
					if connect(t, nodes[i%3].Addr().String(), v, cache) {
						resumed++
					}
					settle(t, nodes[i%3])
				}
				t.Logf("%s TLS %s: %d/%d reconnects resumed across 3 nodes", mode, proxy.VersionName(v), resumed, reconnects)
				// Deterministic: each session is in the store before the
				// next connection, and the store timeout is generous.
				if resumed != reconnects {
					t.Fatalf("TLS %s: resumed %d/%d, want all", proxy.VersionName(v), resumed, reconnects)
				}
			}
		})
	}
}

// settle waits until the sessions node a committed are in its shared
// store: a client reconnecting to another node within the commit delay
// (edgeproxy_session_commit_delay_seconds) gets a full handshake, and the
// tests that call settle are not about that window.
func settle(t *testing.T, a *App) {
	t.Helper()
	if a.sessions == nil || a.sessions.stateful == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.sessions.stateful.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// sessionRequest connects with TLS version, sends a request carrying a
// forged session header, and returns what the upstream saw and whether the
// handshake resumed.
func sessionRequest(t *testing.T, addr string, version uint16, cache tls.ClientSessionCache) (demoapp.Reply, bool) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost",
		ClientSessionCache: cache, NextProtos: []string{"http/1.1"}, MinVersion: version, MaxVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.ConnectionState().Version; got != version {
		t.Fatalf("negotiated %s; want %s", proxy.VersionName(got), proxy.VersionName(version))
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: localhost\r\nX-TLS-Session-ID: forged\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r demoapp.Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r, c.ConnectionState().DidResume
}

func TestSessionIDHeaderAndRevocation(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(demoapp.Handler("up"))
	defer up.Close()
	res := config.Resumption{Mode: "redis", Store: config.Store{Timeout: time.Second,
		// Revocation at once: by default b's verified copy would resume
		// until b's next revocation poll (resumption/stateful readthrough.go).
		StrictRevocation: true}}
	res.Redis.Addrs = []string{testserver.Redis(t).Addr}
	a := startNode(t, config.Config{Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}, Resumption: res})
	b := startNode(t, config.Config{Routes: []proxy.RouteConfig{{Upstreams: []string{up.URL}}}, Resumption: res})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(proxy.VersionName(v), func(t *testing.T) {
			cache := tls.NewLRUClientSessionCache(1)
			r1, _ := sessionRequest(t, a.Addr().String(), v, cache)
			if len(r1.SessionID) != 32 || r1.SessionID == "forged" {
				t.Fatalf("upstream saw session id %q, want 32 hex digits from the proxy", r1.SessionID)
			}
			settle(t, a)
			r2, resumed := sessionRequest(t, b.Addr().String(), v, cache)
			if !resumed {
				t.Fatal("second connection did not resume")
			}
			// TLS 1.3 issues a new session on resumption; TLS 1.2 re-issues
			// the stored one (resumption/stateful.Conn).
			if (r2.SessionID == r1.SessionID) != (v == tls.VersionTLS12) || len(r2.SessionID) != 32 {
				t.Fatalf("upstream saw session id %q on the resumed connection, %q on the first", r2.SessionID, r1.SessionID)
			}
			settle(t, b) // revoke what is stored, not race its write
			// Revoke the session the client now holds, through the other node.
			req, _ := http.NewRequest(http.MethodDelete, "http://"+a.AdminAddr().String()+"/sessions/"+r2.SessionID, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != http.StatusNoContent {
				t.Fatalf("DELETE /sessions/%s: %v %v", r2.SessionID, resp.Status, err)
			}
			if _, resumed := sessionRequest(t, b.Addr().String(), v, cache); resumed {
				t.Fatal("a revoked session resumed")
			}
		})
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+a.AdminAddr().String()+"/sessions/not-hex", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("DELETE of a malformed id: %v %v, want 400", resp.Status, err)
	}
}

func TestStickyResumesOnlyOnTheSameNode(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(demoapp.Handler("up"))
	defer up.Close()
	var nodes []*App
	for i := 0; i < 2; i++ {
		nodes = append(nodes, startNode(t, config.Config{
			Routes:     []proxy.RouteConfig{{Upstreams: []string{up.URL}}},
			Resumption: config.Resumption{Mode: "sticky"},
		}))
	}
	cache := tls.NewLRUClientSessionCache(1)
	connect(t, nodes[0].Addr().String(), tls.VersionTLS13, cache)
	if !connect(t, nodes[0].Addr().String(), tls.VersionTLS13, cache) {
		t.Fatal("sticky: did not resume on the issuing node")
	}
	if connect(t, nodes[1].Addr().String(), tls.VersionTLS13, snapshot(cache)) {
		t.Fatal("sticky: resumed on a node that never saw the session")
	}
}
