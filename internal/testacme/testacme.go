// Package testacme runs a real ACME CA for tests: Pebble (its WFE, CA and
// VA, in-process) behind an HTTPS test server, with a challtestsrv DNS
// server on loopback that resolves every name to 127.0.0.1. Pebble's VA
// really validates challenges, against the ports given to Start; it does
// not use PEBBLE_VA_ALWAYS_VALID. The CA counts the orders it creates per
// name.
package testacme

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

// CA is a running Pebble.
type CA struct {
	// DirectoryURL is the ACME directory (https://127.0.0.1:N/dir).
	DirectoryURL string
	// HTTPSRootFile is a PEM file of the certificate of the directory's
	// HTTPS endpoint, for acme.ca_root.
	HTTPSRootFile string
	// Roots holds the root that signs the certificates Pebble issues.
	Roots *x509.CertPool

	// mu protects orders: new-order requests per identifier.
	mu     sync.Mutex
	orders map[string]int
}

// Options configures Start.
type Options struct {
	// TLSPort is where the VA connects for TLS-ALPN-01. Required for it.
	TLSPort int
	// HTTPPort is where the VA connects for HTTP-01. Required for it.
	HTTPPort int
	// Verbose logs Pebble through t.Log.
	Verbose bool
}

// Start runs Pebble until t ends.
func Start(t testing.TB, o Options) *CA {
	t.Helper()
	// The VA otherwise sleeps up to 5s before each validation. Every
	// caller sets the same value, so parallel tests do not race on it.
	os.Setenv("PEBBLE_VA_NOSLEEP", "1")
	out := io.Discard
	if o.Verbose {
		out = logWriter{t}
	}
	logger := log.New(out, "pebble ", log.Lmicroseconds)

	dnsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testserver.FreePort(t)))
	dns, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{dnsAddr}, Log: logger})
	if err != nil {
		t.Fatal(err)
	}
	dns.SetDefaultDNSIPv4("127.0.0.1")
	dns.SetDefaultDNSIPv6("") // the node listens on IPv4 loopback only
	dns.Run()
	t.Cleanup(dns.Shutdown)
	waitListening(t, dnsAddr)

	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, o.HTTPPort, o.TLSPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)

	c := &CA{orders: map[string]int{}, Roots: x509.NewCertPool()}
	c.Roots.AddCert(authority.GetRootCert(0).Cert)
	srv := httptest.NewUnstartedServer(c.countOrders(front.Handler()))
	srv.Config.ErrorLog = logger
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c.DirectoryURL = srv.URL + wfe.DirectoryPath
	c.HTTPSRootFile = filepath.Join(t.TempDir(), "pebble-https.pem")
	der := srv.Certificate().Raw
	if err := os.WriteFile(c.HTTPSRootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// Orders returns how many orders the CA created for identifier.
func (c *CA) Orders(identifier string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.orders[identifier]
}

// countOrders counts the orders Pebble created (201 answers to new-order),
// per identifier, read from the request: a JWS whose payload is
// {"identifiers": [{"type", "value"}]}. Requests Pebble refuses (it rejects
// a few nonces at random, as a real CA may) are not orders.
func (c *CA) countOrders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/order-plz" {
			next.ServeHTTP(w, r)
			return
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.status != http.StatusCreated {
			return
		}
		var jws struct{ Payload string }
		var order struct{ Identifiers []struct{ Value string } }
		if json.Unmarshal(body, &jws) != nil {
			return
		}
		if p, err := base64.RawURLEncoding.DecodeString(jws.Payload); err == nil && json.Unmarshal(p, &order) == nil {
			c.mu.Lock()
			for _, id := range order.Identifiers {
				c.orders[id.Value]++
			}
			c.mu.Unlock()
		}
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// waitListening waits (bounded) until addr accepts TCP connections:
// challtestsrv starts its servers in goroutines without a ready signal.
func waitListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("DNS server %s not listening: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
