package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/internal/testacme"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
	"github.com/edgeproxy/edgeproxy/proxy/acme"
	redisstore "github.com/edgeproxy/edgeproxy/sessioncache/redis"
	"github.com/edgeproxy/edgeproxy/sessioncache/redis/certstore"
)

// acmeNode starts a node on 127.0.0.1:port whose certificates come from the
// Pebble CA ca, per a (CA fields filled in here).
func acmeNode(t *testing.T, port int, ca *testacme.CA, a acme.Config, res config.Resumption) *App {
	t.Helper()
	log := zap.NewNop()
	if os.Getenv("EDGEPROXY_TEST_VERBOSE") != "" {
		log = zaptest.NewLogger(t)
	}
	return acmeNodeLog(t, port, ca, a, res, log)
}

func acmeNodeLog(t *testing.T, port int, ca *testacme.CA, a acme.Config, res config.Resumption, log *zap.Logger) *App {
	t.Helper()
	a.CA, a.CARoot = ca.DirectoryURL, ca.HTTPSRootFile
	up := httptest.NewServer(demoapp.Handler("up"))
	t.Cleanup(up.Close)
	admin := "127.0.0.1:0"
	cfg := config.Config{
		Listen:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Admin:      &admin,
		TLS:        config.TLS{ACME: &a},
		Routes:     []proxy.RouteConfig{{Upstreams: []string{up.URL}}},
		Resumption: res,
	}
	node, err := New(Options{Config: &cfg, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		node.Shutdown(ctx)
	})
	return node
}

// waitCert waits for the node to hold a certificate for name. The bound is
// generous: the wait ends on certmagic's event, not on a timer.
func waitCert(t *testing.T, a *App, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := a.WaitCertificate(ctx, name); err != nil {
		t.Fatal(err)
	}
}

// verifiedGet makes one HTTPS request to addr for name, verifying the
// served certificate against roots, and returns the leaf and whether the
// handshake resumed.
func verifiedGet(t *testing.T, addr, name string, roots *x509.CertPool, cache tls.ClientSessionCache) (*x509.Certificate, bool) {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, RootCAs: roots, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatalf("verified handshake with %s for %s: %v", addr, name, err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
	body, err := io.ReadAll(c)
	if err != nil || !bytes.HasPrefix(body, []byte("HTTP/1.1 200")) {
		t.Fatalf("request via %s: %v, %.40q", addr, err, body)
	}
	cs := c.ConnectionState()
	return cs.PeerCertificates[0], cs.DidResume
}

// metricLine returns the value of the sample whose line starts with
// prefix (name and labels), or -1 if there is none.
func metricLine(t *testing.T, a *App, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + a.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, prefix+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	return -1
}

func TestACMETLSALPN01(t *testing.T) {
	t.Parallel()
	port := testserver.FreePort(t)
	ca := testacme.Start(t, testacme.Options{TLSPort: port})
	const host = "alpn.example.com"
	node := acmeNode(t, port, ca, acme.Config{
		Hosts: []string{host}, Challenges: []string{acme.TLSALPN01},
		Storage: acme.Storage{File: t.TempDir()},
	}, config.Resumption{})
	waitCert(t, node, host)

	leaf, _ := verifiedGet(t, node.Addr().String(), host, ca.Roots, nil)
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != host {
		t.Errorf("served certificate names %q, want [%s]", leaf.DNSNames, host)
	}
	if n := ca.Orders(host); n != 1 {
		t.Errorf("CA saw %d orders for %s, want 1", n, host)
	}
	if v := metricLine(t, node, `edgeproxy_acme_certificates_total{action="obtain",host="`+host+`",result="success"}`); v != 1 {
		t.Errorf("obtain success count = %v, want 1", v)
	}
	if v := metricLine(t, node, `edgeproxy_certificate_expiry_seconds{host="`+host+`"}`); v <= 0 {
		t.Errorf("expiry seconds = %v, want > 0", v)
	}
	// The CA's validation handshakes (acme-tls/1) are neither counted as
	// client handshakes nor as failures: only ours is.
	total := 0.0
	for _, v := range []string{"1.2", "1.3"} {
		if x := metricLine(t, node, `edgeproxy_tls_handshakes_total{resumed="false",version="`+v+`"}`); x > 0 {
			total += x
		}
	}
	if total != 1 {
		t.Errorf("handshakes counted = %v, want 1 (the client's)", total)
	}
	// (client_closed is not checked: before each challenge certmagic
	// probes the port with a bare TCP connect, which closes without a
	// ClientHello.)
	for _, r := range []string{proxy.ReasonOther, proxy.ReasonBadClientHello, proxy.ReasonTimeout} {
		if x := metricLine(t, node, `edgeproxy_tls_handshake_errors_total{reason="`+r+`"}`); x != 0 {
			t.Errorf("handshake errors %s = %v, want 0", r, x)
		}
	}
}

func TestACMEHTTP01AndRedirect(t *testing.T) {
	t.Parallel()
	port, httpPort := testserver.FreePort(t), testserver.FreePort(t)
	ca := testacme.Start(t, testacme.Options{HTTPPort: httpPort})
	const host = "http01.example.com"
	node := acmeNode(t, port, ca, acme.Config{
		Hosts: []string{host}, Challenges: []string{acme.HTTP01},
		HTTPListen: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort)),
		Storage:    acme.Storage{File: t.TempDir()},
	}, config.Resumption{})
	waitCert(t, node, host)
	verifiedGet(t, node.Addr().String(), host, ca.Roots, nil)
	if n := ca.Orders(host); n != 1 {
		t.Errorf("CA saw %d orders for %s, want 1", n, host)
	}

	// Everything else on the plain-HTTP listener redirects to https.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+node.ACMEHTTPAddr().String()+"/some/path?q=1", nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "https://" + host + ":" + strconv.Itoa(port) + "/some/path?q=1"
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Errorf("plain HTTP: %d Location %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
}

// Each ACME host is its own certificate group: a session issued under one
// host's certificate never resumes under another's.
func TestACMEScopePerHost(t *testing.T) {
	t.Parallel()
	port := testserver.FreePort(t)
	ca := testacme.Start(t, testacme.Options{TLSPort: port})
	node := acmeNode(t, port, ca, acme.Config{
		Hosts:   []string{"one.example.com", "two.example.com"},
		Storage: acme.Storage{File: t.TempDir()},
	}, config.Resumption{})
	waitCert(t, node, "one.example.com")
	waitCert(t, node, "two.example.com")
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(proxy.VersionName(v), func(t *testing.T) {
			cache := tls.NewLRUClientSessionCache(4)
			dial := func(name string) bool {
				c, err := tls.Dial("tcp", node.Addr().String(), &tls.Config{
					ServerName: name, InsecureSkipVerify: true, ClientSessionCache: cache,
					MinVersion: v, MaxVersion: v, NextProtos: []string{"http/1.1"},
				})
				if err != nil {
					t.Fatalf("handshake for %s: %v", name, err)
				}
				defer c.Close()
				fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
				io.ReadAll(c)
				return c.ConnectionState().DidResume
			}
			dial("one.example.com")
			// Offer one's session for two (the client would not, on its own).
			sess, ok := cache.Get("one.example.com")
			if !ok {
				t.Fatal("no session cached for one.example.com")
			}
			cache.Put("two.example.com", sess)
			if dial("two.example.com") {
				t.Error("a session from one.example.com resumed under two.example.com")
			}
			cache.Put("one.example.com", sess)
			if !dial("one.example.com") {
				t.Error("the session did not resume under its own host (control)")
			}
		})
	}
}

// Three nodes sharing the Redis certificate storage order the certificate
// once and serve the same one; sessions on the ACME host resume across
// nodes in tickets mode and in redis mode.
func TestACMEFleetOnRedis(t *testing.T) {
	t.Parallel()
	redis := testserver.Redis(t)
	storage := acme.Storage{Redis: &certstore.Config{
		Redis:        redisstore.Config{Addrs: []string{redis.Addr}, KeyPrefix: "certs/"},
		PollInterval: 50 * time.Millisecond,
	}}
	ports := []int{testserver.FreePort(t), testserver.FreePort(t), testserver.FreePort(t)}
	// The CA validates against the first node only; whichever node wins
	// the lock and orders, the first one answers from the shared storage.
	ca := testacme.Start(t, testacme.Options{TLSPort: ports[0]})
	const host = "fleet.example.com"
	keyFile := filepath.Join(t.TempDir(), "ticket.key")
	writeKeys(t, keyFile, newKey(t))
	tickets := config.Resumption{TicketKeys: config.TicketKeys{Source: "file", Files: []string{keyFile}}}
	var nodes []*App
	for _, p := range ports {
		nodes = append(nodes, acmeNode(t, p, ca, acme.Config{Hosts: []string{host}, Storage: storage}, tickets))
	}
	var serial string
	for i, n := range nodes {
		waitCert(t, n, host)
		leaf, _ := verifiedGet(t, n.Addr().String(), host, ca.Roots, nil)
		if i == 0 {
			serial = leaf.SerialNumber.String()
		} else if leaf.SerialNumber.String() != serial {
			t.Errorf("node %d serves certificate %s, node 0 serves %s", i, leaf.SerialNumber, serial)
		}
	}
	if n := ca.Orders(host); n != 1 {
		t.Fatalf("CA saw %d orders for %s from 3 nodes, want exactly 1", n, host)
	}

	resumesAcross := func(t *testing.T, a, b *App) {
		t.Helper()
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			cache := tls.NewLRUClientSessionCache(1)
			c := &tls.Config{ServerName: host, RootCAs: ca.Roots, ClientSessionCache: cache, MinVersion: v, MaxVersion: v}
			dial := func(n *App) bool {
				conn, err := tls.Dial("tcp", n.Addr().String(), c)
				if err != nil {
					t.Fatalf("TLS %s handshake: %v", proxy.VersionName(v), err)
				}
				defer conn.Close()
				fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
				io.ReadAll(conn)
				return conn.ConnectionState().DidResume
			}
			dial(a)
			if !dial(b) {
				t.Errorf("TLS %s: session from one node did not resume on another", proxy.VersionName(v))
			}
		}
	}
	t.Run("tickets", func(t *testing.T) { resumesAcross(t, nodes[0], nodes[2]) })
	t.Run("redis", func(t *testing.T) {
		res := config.Resumption{Mode: "redis", Store: config.Store{Timeout: time.Second}}
		res.Redis.Addrs = []string{redis.Addr}
		a := acmeNode(t, testserver.FreePort(t), ca, acme.Config{Hosts: []string{host}, Storage: storage}, res)
		b := acmeNode(t, testserver.FreePort(t), ca, acme.Config{Hosts: []string{host}, Storage: storage}, res)
		waitCert(t, a, host)
		waitCert(t, b, host)
		resumesAcross(t, a, b)
		if n := ca.Orders(host); n != 1 {
			t.Errorf("CA saw %d orders for %s from 5 nodes, want exactly 1", n, host)
		}
	})
}

// dialFails reports the handshake error for name, failing the test if the
// handshake succeeds. The error comes back promptly as an alert.
func dialFails(t *testing.T, addr, name string) error {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Fatalf("handshake for %s succeeded, want it refused", name)
	}
	if !strings.Contains(err.Error(), "remote error") {
		t.Errorf("handshake for %s: %v, want a TLS alert from the server", name, err)
	}
	return err
}

func TestACMEOnDemandAllowList(t *testing.T) {
	t.Parallel()
	port := testserver.FreePort(t)
	ca := testacme.Start(t, testacme.Options{TLSPort: port})
	node := acmeNode(t, port, ca, acme.Config{
		OnDemand: &acme.OnDemand{Allow: []string{"*.allowed.example.com"}},
		Storage:  acme.Storage{File: t.TempDir()},
	}, config.Resumption{})
	for _, name := range []string{"x.other.example.com", "allowed.example.com", "a.b.allowed.example.com"} {
		dialFails(t, node.Addr().String(), name)
		if n := ca.Orders(name); n != 0 {
			t.Errorf("CA saw %d orders for %s, outside the allow list", n, name)
		}
	}
	// Control: an allowed name gets its certificate during the handshake.
	verifiedGet(t, node.Addr().String(), "y.allowed.example.com", ca.Roots, nil)
	if n := ca.Orders("y.allowed.example.com"); n != 1 {
		t.Errorf("CA saw %d orders for an allowed name, want 1", n)
	}
}

func TestACMEOnDemandAsk(t *testing.T) {
	t.Parallel()
	port := testserver.FreePort(t)
	ca := testacme.Start(t, testacme.Options{TLSPort: port})
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("domain") == "yes.example.com" {
			return
		}
		w.WriteHeader(http.StatusForbidden)
	}))
	defer ask.Close()
	node := acmeNode(t, port, ca, acme.Config{
		OnDemand: &acme.OnDemand{Ask: ask.URL + "/check"},
		Storage:  acme.Storage{File: t.TempDir()},
	}, config.Resumption{})
	dialFails(t, node.Addr().String(), "no.example.com")
	if n := ca.Orders("no.example.com"); n != 0 {
		t.Errorf("CA saw %d orders for a name ask refused", n)
	}
	verifiedGet(t, node.Addr().String(), "yes.example.com", ca.Roots, nil)
	if n := ca.Orders("yes.example.com"); n != 1 {
		t.Errorf("CA saw %d orders for a name ask allowed, want 1", n)
	}
}

// A configured host whose certificate cannot be obtained (the CA cannot
// validate it: nothing answers on the port it checks) fails its handshakes
// with an alert, counts the failure, and the node keeps serving.
func TestACMEHostWithoutCertificate(t *testing.T) {
	t.Parallel()
	port := testserver.FreePort(t)
	ca := testacme.Start(t, testacme.Options{TLSPort: testserver.FreePort(t)}) // a port nobody listens on
	core, logs := observer.New(zap.ErrorLevel)
	node := acmeNodeLog(t, port, ca, acme.Config{
		Hosts: []string{"nocert.example.com"}, Storage: acme.Storage{File: t.TempDir()},
	}, config.Resumption{}, zap.New(core))
	dialFails(t, node.Addr().String(), "nocert.example.com")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	if err := node.acme.WaitFailure(ctx, "nocert.example.com"); err != nil {
		t.Fatal(err)
	}
	if v := metricLine(t, node, `edgeproxy_acme_certificates_total{action="obtain",host="nocert.example.com",result="failure"}`); v < 1 {
		t.Errorf("obtain failures = %v, want >= 1", v)
	}
	// The log names the host and carries the CA's problem detail.
	found := false
	for _, e := range logs.FilterMessage("certificate not obtained").All() {
		ctx := e.ContextMap()
		if ctx["host"] == "nocert.example.com" && strings.Contains(fmt.Sprint(ctx["error"]), "urn:ietf:params:acme:error") {
			found = true
		}
	}
	if !found {
		t.Errorf("no error log with the host and the CA's problem; logged: %v", logs.All())
	}
	// The node keeps serving: a client still completes a handshake (here
	// for a name that gets the alert path, so check the listener is alive
	// with a second attempt that is answered, not hung).
	dialFails(t, node.Addr().String(), "nocert.example.com")
}
