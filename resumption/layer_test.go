package resumption

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

var _ = &tls.Config{WrapSession: (&Layer{}).WrapSession, UnwrapSession: (&Layer{}).UnwrapSession}

type staticRing struct{ r *ticketkeys.Ring }

func (s staticRing) Ring() *ticketkeys.Ring { return s.r }

func testRing(t testing.TB) staticRing {
	t.Helper()
	k := &ticketkeys.Key{}
	rand.Read(k.Name[:])
	rand.Read(k.Secret[:])
	r, err := ticketkeys.NewRing(k)
	if err != nil {
		t.Fatal(err)
	}
	return staticRing{r}
}

// testCert returns a self-signed certificate valid for the given names.
func testCert(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: names, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// handshake runs one real TLS handshake over loopback TCP and reports
// whether it resumed. (Not net.Pipe: its writes block until read, and both
// ends of a TLS 1.3 handshake may write at once.)
func handshake(t *testing.T, server *tls.Config, client *tls.Config) bool {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer s.Close()
		sc := tls.Server(s, server)
		err = sc.Handshake()
		if err == nil {
			// One byte of application data after the handshake: the
			// client reads it, and with it any TLS 1.3 NewSessionTicket
			// sent before it.
			_, err = sc.Write([]byte{1})
			io.Copy(io.Discard, sc)
		}
		errc <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc := tls.Client(c, client)
	if err := cc.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if _, err := io.ReadFull(cc, make([]byte, 1)); err != nil {
		t.Fatalf("client read: %v", err)
	}
	resumed := cc.ConnectionState().DidResume
	cc.Close()
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return resumed
}

func newLayer(t *testing.T, cfg Config) (*Layer, *Metrics) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Metrics = m
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l, cfg.Metrics
}

func unwraps(m *Metrics, mode, result string) int {
	return int(testutil.ToFloat64(m.unwrap.WithLabelValues(mode, result)))
}

func TestLayerLifetimeAndScope(t *testing.T) {
	t.Parallel()
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tlsName(v), func(t *testing.T) {
			tickets, err := NewTickets(TicketsConfig{Keys: testRing(t)})
			if err != nil {
				t.Fatal(err)
			}
			clk := &clock{t: time.Unix(1_700_000_000, 0)}
			layer, m := newLayer(t, Config{
				Mode: ModeTickets, Backend: tickets, Lifetime: time.Hour, Now: clk.now,
				Scope: func(cs tls.ConnectionState) string { return strings.TrimPrefix(cs.ServerName, "www.") },
			})
			srv := &tls.Config{
				Certificates: []tls.Certificate{testCert(t, "a.test", "b.test", "www.a.test")},
				MinVersion:   v, MaxVersion: v,
			}
			layer.Configure(srv)
			pool := x509.NewCertPool()
			leaf, _ := x509.ParseCertificate(srv.Certificates[0].Certificate[0])
			pool.AddCert(leaf)
			cache := tls.NewLRUClientSessionCache(8)
			client := func(sni string) *tls.Config {
				return &tls.Config{ServerName: sni, RootCAs: pool, ClientSessionCache: cache, MinVersion: v, MaxVersion: v}
			}
			if handshake(t, srv, client("a.test")) {
				t.Fatal("first connection resumed")
			}
			if !handshake(t, srv, client("a.test")) {
				t.Fatal("second connection to a.test did not resume")
			}
			// Same scope by another name: "www.a.test" maps to "a.test", but
			// the client cache is keyed by SNI, so present a.test's session
			// explicitly by copying the cache entry.
			sess, _ := cache.Get("a.test")
			cache.Put("b.test", sess)
			if handshake(t, srv, client("b.test")) {
				t.Fatal("a session issued for a.test resumed under b.test")
			}
			if got := unwraps(m, ModeTickets, ResultScopeMismatch); got != 1 {
				t.Fatalf("scope_mismatch = %d, want 1", got)
			}
			cache.Put("www.a.test", sess)
			if !handshake(t, srv, client("www.a.test")) {
				t.Fatal("a session did not resume in its own scope under another name")
			}
			// Past the lifetime: full handshake, counted as expired.
			if !handshake(t, srv, client("a.test")) {
				t.Fatal("a.test did not resume")
			}
			clk.t = clk.t.Add(time.Hour + time.Second)
			if handshake(t, srv, client("a.test")) {
				t.Fatal("a session older than the lifetime resumed")
			}
			if got := unwraps(m, ModeTickets, ResultExpired); got != 1 {
				t.Fatalf("expired = %d, want 1", got)
			}
			if got := unwraps(m, ModeTickets, ResultOpened); got != 3 {
				t.Fatalf("resumed = %d, want 3", got)
			}
		})
	}
}

func tlsName(v uint16) string {
	if v == tls.VersionTLS13 {
		return "tls13"
	}
	return "tls12"
}

// fakeBackend returns canned answers, for failure paths that real backends
// cannot produce on demand.
type fakeBackend struct {
	wrapErr   error
	unwrap    *tls.SessionState
	unwrapErr error
}

func (f *fakeBackend) WrapSession(tls.ConnectionState, *tls.SessionState) ([]byte, error) {
	return nil, f.wrapErr
}

func (f *fakeBackend) UnwrapSession([]byte, tls.ConnectionState) (*tls.SessionState, error) {
	return f.unwrap, f.unwrapErr
}

func TestLayerNeverFails(t *testing.T) {
	t.Parallel()
	noExtra := &tls.SessionState{}
	tests := []struct {
		name   string
		b      *fakeBackend
		result string
	}{
		{"miss", &fakeBackend{unwrapErr: ErrMiss}, ResultMiss},
		{"wrapped miss", &fakeBackend{unwrapErr: errors.Join(errors.New("x"), ErrMiss)}, ResultMiss},
		{"nil nil", &fakeBackend{}, ResultMiss},
		{"bad", &fakeBackend{unwrapErr: ErrBad}, ResultBad},
		{"store down", &fakeBackend{unwrapErr: errors.New("dial tcp: connection refused")}, ResultStoreError},
		{"state without our extra", &fakeBackend{unwrap: noExtra}, ResultBad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, m := newLayer(t, Config{Mode: "test", Backend: tt.b})
			ss, err := l.UnwrapSession([]byte("identity"), tls.ConnectionState{})
			if ss != nil || err != nil {
				t.Fatalf("UnwrapSession = %v, %v; want nil, nil", ss, err)
			}
			if got := unwraps(m, "test", tt.result); got != 1 {
				t.Fatalf("%s = %d, want 1", tt.result, got)
			}
		})
	}
	t.Run("wrap error gives a decoy", func(t *testing.T) {
		l, m := newLayer(t, Config{Mode: "test", Backend: &fakeBackend{wrapErr: errors.New("store down")}})
		id, err := l.WrapSession(tls.ConnectionState{}, &tls.SessionState{})
		if err != nil || len(id) != 32 {
			t.Fatalf("WrapSession = %d bytes, %v; want a 32-byte decoy, nil", len(id), err)
		}
		if got := testutil.ToFloat64(m.wrap.WithLabelValues("test", "error")); got != 1 {
			t.Fatalf("wrap errors = %v, want 1", got)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	b := &fakeBackend{}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no backend", Config{}, "resumption.backend"},
		{"negative lifetime", Config{Backend: b, Lifetime: -time.Second}, `resumption.session_lifetime: "-1s"`},
		{"over 7 days", Config{Backend: b, Lifetime: 8 * 24 * time.Hour}, `resumption.session_lifetime: "192h0m0s"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want error containing %q", err, tt.want)
			}
		})
	}
	l, err := New(Config{Backend: b})
	if err != nil || l.Lifetime() != DefaultSessionLifetime {
		t.Fatalf("zero lifetime: %v, %v; want default %v", l.Lifetime(), err, DefaultSessionLifetime)
	}
}

// TestMetricsRegisterTwice: a second Metrics on one registry is an error,
// not a panic.
func TestMetricsRegisterTwice(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if m, err := NewMetrics(reg); err == nil || m != nil {
		t.Fatalf("second registration = %v, %v; want an error", m, err)
	}
}
