// Package tlstest holds the TLS test fixtures that package resumption and
// its backends share: one self-signed certificate, client configurations
// that trust it, real handshakes over loopback TCP, and real server-side
// sessions.
package tlstest

import (
	"crypto/ecdh"
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
	return l.ConnectDone(tb, client, server, nil)
}

// ConnectDone is Connect that calls done, if not nil, with the result of
// the server's handshake as soon as it returned, before the server writes:
// what edgeproxy's listener does with a connection's ConnSession.
func (l *Loopback) ConnectDone(tb testing.TB, client, server *tls.Config, done func(error)) tls.ConnectionState {
	tb.Helper()
	cs, cerr, serr := l.Handshake(tb, client, server, done)
	if serr != nil {
		tb.Fatal(serr)
	}
	if cerr != nil {
		tb.Fatalf("client: %v", cerr)
	}
	return cs
}

// Handshake is ConnectDone that returns the client's and the server's
// errors instead of failing the test, for handshakes meant to fail. The
// server's handshake has ended (and done has returned) when it returns.
func (l *Loopback) Handshake(tb testing.TB, client, server *tls.Config, done func(error)) (cs tls.ConnectionState, clientErr, serverErr error) {
	tb.Helper()
	cc, sc := l.Pair(tb)
	srv := tls.Server(sc, server)
	cli := tls.Client(cc, client)
	errc := make(chan error, 1)
	go func() {
		defer srv.Close()
		err := srv.Handshake()
		if done != nil {
			done(err)
		}
		if err != nil {
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
	return cli.ConnectionState(), err, <-errc
}

// Raw runs a server handshake against a client that sends hello (a TLS
// record, see PSKClientHello) and then reads until the server closes. It
// returns the server's handshake error, after done (if not nil) returned.
func (l *Loopback) Raw(tb testing.TB, hello []byte, server *tls.Config, done func(error)) error {
	tb.Helper()
	cc, sc := l.Pair(tb)
	defer cc.Close()
	errc := make(chan error, 1)
	go func() {
		defer sc.Close()
		srv := tls.Server(sc, server)
		err := srv.Handshake()
		if done != nil {
			done(err)
		}
		errc <- err
	}()
	if _, err := cc.Write(hello); err != nil {
		tb.Fatalf("writing the ClientHello: %v", err)
	}
	// The server reads EOF where it waits for the client's next flight.
	if tc, ok := cc.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	// Whatever the server sends, this client never answers.
	go io.Copy(io.Discard, cc)
	select {
	case err := <-errc:
		return err
	case <-time.After(30 * time.Second):
		tb.Fatal("the server handshake did not end")
		return nil
	}
}

// PSKClientHello returns a TLS record holding a TLS 1.3 ClientHello for
// ServerName that offers an X25519 key share and, in its pre_shared_key
// extension, identities, each with a binder of 32 zero bytes: a binder no
// server accepts. crypto/tls hands a server's UnwrapSession each identity
// in turn until one yields a session, and only then checks that
// identity's binder.
func PSKClientHello(tb testing.TB, identities ...[]byte) []byte {
	tb.Helper()
	key, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	u16 := func(b []byte, v int) []byte { return append(b, byte(v>>8), byte(v)) }
	ext := func(b []byte, typ int, body []byte) []byte {
		return append(u16(u16(b, typ), len(body)), body...)
	}
	vec16 := func(body []byte) []byte { return append(u16(nil, len(body)), body...) }

	var exts []byte
	exts = ext(exts, 0x0000, vec16(append([]byte{0}, vec16([]byte(ServerName))...))) // server_name
	exts = ext(exts, 0x000a, vec16([]byte{0x00, 0x1d}))                              // supported_groups: x25519
	exts = ext(exts, 0x000d, vec16([]byte{0x04, 0x03, 0x08, 0x04, 0x04, 0x01}))      // signature_algorithms
	exts = ext(exts, 0x002b, []byte{2, 0x03, 0x04})                                  // supported_versions: TLS 1.3
	exts = ext(exts, 0x002d, []byte{1, 1})                                           // psk_key_exchange_modes: psk_dhe_ke
	share := append([]byte{0x00, 0x1d}, vec16(key.PublicKey().Bytes())...)
	exts = ext(exts, 0x0033, vec16(share)) // key_share
	var ids, binders []byte
	for _, id := range identities {
		ids = append(append(ids, vec16(id)...), 0, 0, 0, 0) // obfuscated_ticket_age 0
		binders = append(append(binders, 32), make([]byte, 32)...)
	}
	exts = ext(exts, 0x0029, append(vec16(ids), vec16(binders)...)) // pre_shared_key, last

	body := []byte{0x03, 0x03}
	random := make([]byte, 32+1+32)
	rand.Read(random)
	random[32] = 32 // legacy_session_id of 32 bytes
	body = append(body, random...)
	body = append(body, vec16([]byte{0x13, 0x01, 0x13, 0x02, 0x13, 0x03})...)
	body = append(body, 1, 0) // compression: null
	body = append(body, vec16(exts)...)
	msg := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{0x16, 0x03, 0x01, byte(len(msg) >> 8), byte(len(msg))}, msg...)
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
