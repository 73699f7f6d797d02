// Package tlstest holds the TLS test fixtures that package resumption and
// its backends share: one self-signed certificate, client configurations
// that trust it, real handshakes over loopback TCP, and real server-side
// sessions.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// ServerName is the name in Cert.
const ServerName = "edgeproxy.test"

var pki = sync.OnceValues(func() (tls.Certificate, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: ServerName},
		DNSNames:              []string{ServerName},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, nil
})

// Cert returns a self-signed certificate for ServerName, the same one for
// the whole test binary.
func Cert(tb testing.TB) tls.Certificate {
	tb.Helper()
	cert, err := pki()
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

// ClientConfig returns a client configuration that verifies Cert, speaks
// only version and caches sessions in cache.
func ClientConfig(tb testing.TB, version uint16, cache tls.ClientSessionCache) *tls.Config {
	tb.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(Cert(tb).Leaf)
	return &tls.Config{
		ServerName:         ServerName,
		RootCAs:            roots,
		MinVersion:         version,
		MaxVersion:         version,
		ClientSessionCache: cache,
	}
}

// Versions are the TLS versions every resumption test runs with.
var Versions = []struct {
	Name    string
	Version uint16
}{
	{"tls12", tls.VersionTLS12},
	{"tls13", tls.VersionTLS13},
}

// Loopback hands out connected TCP pairs on 127.0.0.1. TCP rather than
// net.Pipe: a TLS 1.3 server writes its session ticket in the same flight
// as its Finished, which net.Pipe's unbuffered writes would block.
type Loopback struct{ ln net.Listener }

// NewLoopback listens on 127.0.0.1 until the test ends.
func NewLoopback(tb testing.TB) *Loopback {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	return &Loopback{ln: ln}
}

// Pair returns both ends of a new connection, with a 30s deadline.
func (l *Loopback) Pair(tb testing.TB) (client, server net.Conn) {
	tb.Helper()
	client, err := net.Dial("tcp", l.ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	server, err = l.ln.Accept()
	if err != nil {
		client.Close()
		tb.Fatal(err)
	}
	// A deadline, not a sleep: a deadlocked handshake fails instead of
	// hanging the test binary.
	deadline := time.Now().Add(30 * time.Second)
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	return client, server
}

// Connect runs one TLS connection: both handshakes, then one byte from
// server to client, which makes the client read (and cache) a TLS 1.3
// ticket sent before it. It returns the client's view of the connection.
func (l *Loopback) Connect(tb testing.TB, client, server *tls.Config) tls.ConnectionState {
	tb.Helper()
	cc, sc := l.Pair(tb)
	srv := tls.Server(sc, server)
	cli := tls.Client(cc, client)
	errc := make(chan error, 1)
	go func() {
		defer srv.Close()
		if err := srv.Handshake(); err != nil {
			errc <- fmt.Errorf("server handshake: %w", err)
			return
		}
		if _, err := srv.Write([]byte{1}); err != nil {
			errc <- fmt.Errorf("server write: %w", err)
			return
		}
		errc <- nil
	}()
	var b [1]byte
	err := cli.Handshake()
	if err == nil {
		_, err = io.ReadFull(cli, b[:])
	}
	cli.Close()
	if serr := <-errc; serr != nil {
		tb.Fatal(serr)
	}
	if err != nil {
		tb.Fatalf("client: %v", err)
	}
	return cli.ConnectionState()
}

// Session returns a server-side session from a real handshake.
func Session(tb testing.TB, version uint16) *tls.SessionState {
	tb.Helper()
	var got *tls.SessionState
	srv := &tls.Config{
		Certificates: []tls.Certificate{Cert(tb)},
		MinVersion:   version,
		MaxVersion:   version,
		WrapSession: func(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
			got = ss
			return []byte("ticket"), nil
		},
	}
	NewLoopback(tb).Connect(tb, ClientConfig(tb, version, tls.NewLRUClientSessionCache(1)), srv)
	if got == nil {
		tb.Fatal("the server issued no session")
	}
	return got
}

// UnwrapContract unwraps identity with unwrap (a resumption Backend's
// UnwrapSession) and checks the Backend contract: a session and no error,
// or no session and an error that is one of allowed (resumption.ErrBad,
// resumption.ErrMiss). It returns the session, or nil.
func UnwrapContract(t *testing.T, unwrap func([]byte, tls.ConnectionState) (*tls.SessionState, error), identity []byte, allowed ...error) *tls.SessionState {
	t.Helper()
	ss, err := unwrap(identity, tls.ConnectionState{})
	if err != nil {
		if ss != nil {
			t.Fatalf("UnwrapSession returned a session with error %v", err)
		}
		for _, a := range allowed {
			if errors.Is(err, a) {
				return nil
			}
		}
		t.Fatalf("UnwrapSession error %v is none of %v", err, allowed)
	}
	if ss == nil {
		t.Fatal("UnwrapSession returned (nil, nil)")
	}
	return ss
}

// RecordingCache is a client session cache that remembers every
// session the server handed out, newest last.
type RecordingCache struct {
	tls.ClientSessionCache

	// mu protects keys and states.
	mu     sync.Mutex
	keys   []string
	states []*tls.ClientSessionState
}

// NewRecordingCache returns an empty RecordingCache over an LRU cache of 8.
func NewRecordingCache() *RecordingCache {
	return &RecordingCache{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
}

// Put records cs and caches it.
func (c *RecordingCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		c.mu.Lock()
		c.keys = append(c.keys, key)
		c.states = append(c.states, cs)
		c.mu.Unlock()
	}
	c.ClientSessionCache.Put(key, cs)
}

// Last returns the newest session the client received and its ticket.
func (c *RecordingCache) Last(tb testing.TB) (key string, cs *tls.ClientSessionState, ticket []byte) {
	tb.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.states) == 0 {
		tb.Fatal("the client received no ticket")
	}
	cs = c.states[len(c.states)-1]
	ticket, _, err := cs.ResumptionState()
	if err != nil {
		tb.Fatal(err)
	}
	return c.keys[len(c.keys)-1], cs, ticket
}

// Count returns how many sessions the client received.
func (c *RecordingCache) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.states)
}
