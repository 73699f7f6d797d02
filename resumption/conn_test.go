package resumption

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeproxy/edgeproxy/ticketkeys"
)

// sidBackend is a Backend with session identifiers, to test ConnConfig's
// recording without a store.
type sidBackend struct{ *fakeBackend }

func (b sidBackend) WrapSessionID(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, string, error) {
	id, err := b.WrapSession(cs, ss)
	return id, "sid:" + string(id), err
}

func (b sidBackend) UnwrapSessionID(identity []byte, cs tls.ConnectionState) (*tls.SessionState, string, error) {
	ss, err := b.UnwrapSession(identity, cs)
	return ss, "sid:" + string(identity), err
}

func TestConnConfigRecordsSessionID(t *testing.T) {
	t.Parallel()
	st := &tls.SessionState{Extra: [][]byte{{extraTag, 0, 0, 0, 0, 0, 0, 0, 0}}}
	l, err := New(Config{Backend: sidBackend{&fakeBackend{unwrap: st}}, Now: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	if !l.TracksSessions() {
		t.Fatal("a backend with SessionID is not tracked")
	}
	base := &tls.Config{}
	c, rec := l.ConnConfig(base)
	if c == base || rec == nil {
		t.Fatal("ConnConfig did not return a per-connection config")
	}
	if rec.SessionID() != "" {
		t.Fatalf("ID before any hook = %q", rec.SessionID())
	}
	if ss, _ := c.UnwrapSession([]byte("old"), tls.ConnectionState{}); ss == nil {
		t.Fatal("unwrap through the per-connection config failed")
	}
	if rec.SessionID() != "sid:old" {
		t.Fatalf("after unwrap ID = %q, want sid:old", rec.SessionID())
	}
	if base.UnwrapSession != nil {
		t.Fatal("ConnConfig modified the base config")
	}
	// A Backend without identifiers: still linked, but no identifier.
	l2, _ := New(Config{Backend: &fakeBackend{unwrap: st}, Now: func() time.Time { return time.Unix(0, 0) }})
	c2, rec2 := l2.ConnConfig(base)
	if l2.TracksSessions() || c2 == base {
		t.Fatal("TracksSessions true, or no per-connection config, for a backend without SessionID")
	}
	c2.UnwrapSession([]byte("x"), tls.ConnectionState{})
	if rec2.SessionID() != "" {
		t.Fatalf("ID = %q for a backend without identifiers", rec2.SessionID())
	}
}

// TestLifetimeCountsFromTheFullHandshake: a client that keeps resuming
// within the lifetime must still do a full handshake once the lifetime has
// passed since its last full handshake.
func TestLifetimeCountsFromTheFullHandshake(t *testing.T) {
	t.Parallel()
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tlsName(v), func(t *testing.T) {
			tickets, err := NewTickets(TicketsConfig{Keys: testRing(t)})
			if err != nil {
				t.Fatal(err)
			}
			clk := &clock{t: time.Unix(1_700_000_000, 0)}
			layer, m := newLayer(t, Config{Mode: ModeTickets, Backend: tickets, Lifetime: time.Hour, Now: clk.now})
			base := &tls.Config{Certificates: []tls.Certificate{testCert(t, "a.test")}, MinVersion: v, MaxVersion: v}
			layer.Configure(base)
			// Each connection gets its own config, as proxy's listener does.
			perConn := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				c, _ := layer.ConnConfig(base)
				return c, nil
			}}
			cache := tls.NewLRUClientSessionCache(1)
			client := &tls.Config{ServerName: "a.test", InsecureSkipVerify: true, ClientSessionCache: cache, MinVersion: v, MaxVersion: v}
			if handshake(t, perConn, client) {
				t.Fatal("first connection resumed")
			}
			for _, at := range []time.Duration{20 * time.Minute, 40 * time.Minute, 55 * time.Minute} {
				clk.t = time.Unix(1_700_000_000, 0).Add(at)
				if !handshake(t, perConn, client) {
					t.Fatalf("no resumption %s after the full handshake", at)
				}
			}
			clk.t = time.Unix(1_700_000_000, 0).Add(61 * time.Minute)
			if handshake(t, perConn, client) {
				t.Fatal("a session chained by resumptions outlived the lifetime")
			}
			if got := unwraps(m, ModeTickets, ResultExpired); got != 1 {
				t.Fatalf("expired = %d, want 1", got)
			}
		})
	}
}

// BenchmarkConnConfig measures what recording session ids adds to each
// handshake: a tls.Config clone and two closures.
func BenchmarkConnConfig(b *testing.B) {
	l, _ := New(Config{Backend: sidBackend{&fakeBackend{}}})
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	l.Configure(base)
	b.ReportAllocs()
	for b.Loop() {
		l.ConnConfig(base)
	}
}

// connBackend is a ConnBackend whose connections record what reached them.
type connBackend struct {
	sidBackend
	conns []*fakeConn
}

type fakeConn struct {
	sidBackend
	wraps, unwraps int
	done           []error
}

func (b *connBackend) NewConn() BackendConn {
	c := &fakeConn{sidBackend: b.sidBackend}
	b.conns = append(b.conns, c)
	return c
}

func (c *fakeConn) WrapSessionID(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, string, error) {
	c.wraps++
	return []byte("conn"), "conn-sid", nil
}

func (c *fakeConn) UnwrapSessionID(identity []byte, cs tls.ConnectionState) (*tls.SessionState, string, error) {
	c.unwraps++
	return c.sidBackend.UnwrapSessionID(identity, cs)
}

func (c *fakeConn) HandshakeDone(err error) { c.done = append(c.done, err) }

// TestConnConfigRoutesToBackendConn: with a ConnBackend, each ConnConfig
// gets its own BackendConn, the per-connection hooks go to it (not to the
// Backend), HandshakeDone reaches it once, and the handshake is counted as
// resumed only if it completed after crypto/tls used the opened session.
func TestConnConfigRoutesToBackendConn(t *testing.T) {
	t.Parallel()
	st := &tls.SessionState{Extra: [][]byte{{extraTag, 0, 0, 0, 0, 0, 0, 0, 0}}}
	b := &connBackend{sidBackend: sidBackend{&fakeBackend{unwrap: st}}}
	l, m := newLayer(t, Config{Mode: "test", Backend: b, Now: func() time.Time { return time.Unix(0, 0) }})
	handshakes := func(result string) int {
		return int(testutil.ToFloat64(m.handshakes.WithLabelValues("test", result)))
	}
	base := &tls.Config{}

	// Resumed and completed.
	c, rec := l.ConnConfig(base)
	if len(b.conns) != 1 {
		t.Fatalf("%d BackendConns after one ConnConfig; want 1", len(b.conns))
	}
	bc := b.conns[0]
	if ss, _ := c.UnwrapSession([]byte("old"), tls.ConnectionState{}); ss == nil {
		t.Fatal("unwrap through the BackendConn failed")
	}
	id, _ := c.WrapSession(tls.ConnectionState{DidResume: true}, &tls.SessionState{})
	if string(id) != "conn" || rec.SessionID() != "conn-sid" || bc.wraps != 1 || bc.unwraps != 1 {
		t.Fatalf("identity %q, SessionID %q, %d wraps, %d unwraps; want the BackendConn's, once each", id, rec.SessionID(), bc.wraps, bc.unwraps)
	}
	rec.HandshakeDone(nil)
	rec.HandshakeDone(nil)
	if len(bc.done) != 1 || bc.done[0] != nil {
		t.Fatalf("BackendConn saw HandshakeDone %v; want once, nil", bc.done)
	}
	// An opened session crypto/tls did not use (full handshake), and a
	// failed handshake.
	c2, rec2 := l.ConnConfig(base)
	c2.UnwrapSession([]byte("old"), tls.ConnectionState{})
	c2.WrapSession(tls.ConnectionState{}, &tls.SessionState{})
	rec2.HandshakeDone(nil)
	_, rec3 := l.ConnConfig(base)
	errAbort := errors.New("client left")
	rec3.HandshakeDone(errAbort)
	if got := b.conns[2].done; len(got) != 1 || got[0] != errAbort {
		t.Fatalf("BackendConn of the failed handshake saw %v; want its error", got)
	}
	for result, want := range map[string]int{HandshakeResumed: 1, HandshakeFull: 1, HandshakeFailed: 1} {
		if got := handshakes(result); got != want {
			t.Errorf("handshakes{result=%s} = %d; want %d", result, got, want)
		}
	}
	if got := unwraps(m, "test", ResultOpened); got != 2 {
		t.Errorf("opened = %d; want 2 (unwraps, not resumptions)", got)
	}
	// The plain hooks do not go through a BackendConn.
	plain := &tls.Config{}
	l.Configure(plain)
	plain.UnwrapSession([]byte("x"), tls.ConnectionState{})
	if len(b.conns) != 3 {
		t.Fatalf("the plain hooks made a BackendConn")
	}
	var nilRec *ConnSession
	nilRec.HandshakeDone(nil) // must not panic
}

// swapRing is a RingSource whose ring a test replaces (a rotation).
type swapRing struct {
	r atomic.Pointer[ticketkeys.Ring]
}

func (s *swapRing) Ring() *ticketkeys.Ring { return s.r.Load() }

// ticketCache is a client session cache that records every ticket the
// server sends.
type ticketCache struct {
	tls.ClientSessionCache
	mu      sync.Mutex
	tickets [][]byte
}

func (c *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	if cs != nil {
		if ticket, _, err := cs.ResumptionState(); err == nil {
			c.mu.Lock()
			c.tickets = append(c.tickets, ticket)
			c.mu.Unlock()
		}
	}
	c.ClientSessionCache.Put(key, cs)
}

func (c *ticketCache) last() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tickets) == 0 {
		return nil
	}
	return c.tickets[len(c.tickets)-1]
}

// TestTLS12ResumptionReissuesTicket: a TLS 1.2 resumption with a ticket
// sealed under the ring's current key gets that ticket back as its new one
// (nothing sealed, as OpenSSL sends none); under an older key still in the
// ring, a fresh ticket under the current key. TLS 1.3 tickets stay fresh.
func TestTLS12ResumptionReissuesTicket(t *testing.T) {
	t.Parallel()
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tlsName(v), func(t *testing.T) {
			t.Parallel()
			ring := &swapRing{}
			old := testRing(t).r
			ring.r.Store(old)
			tickets, err := NewTickets(TicketsConfig{Keys: ring})
			if err != nil {
				t.Fatal(err)
			}
			layer, m := newLayer(t, Config{Mode: ModeTickets, Backend: tickets})
			base := &tls.Config{Certificates: []tls.Certificate{testCert(t, "a.test")}, MinVersion: v, MaxVersion: v}
			perConn := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				c, _ := layer.ConnConfig(base)
				return c, nil
			}}
			cache := &ticketCache{ClientSessionCache: tls.NewLRUClientSessionCache(1)}
			client := &tls.Config{ServerName: "a.test", InsecureSkipVerify: true, ClientSessionCache: cache, MinVersion: v, MaxVersion: v}
			keyName := func(ticket []byte) ticketkeys.Name {
				return ticketkeys.Name(ticket[ticketNameOff:ticketSaltOff])
			}

			if handshake(t, perConn, client) {
				t.Fatal("first connection resumed")
			}
			t1 := cache.last()
			if !handshake(t, perConn, client) {
				t.Fatal("second connection did not resume")
			}
			t2 := cache.last()
			if same := bytes.Equal(t1, t2); same != (v == tls.VersionTLS12) {
				t.Fatalf("ticket after a resumption equal to the one presented: %v, want %v", same, v == tls.VersionTLS12)
			}

			// Rotate: a new current key, the old one still opens tickets.
			k := &ticketkeys.Key{}
			rand.Read(k.Name[:])
			rand.Read(k.Secret[:])
			rotated, err := ticketkeys.NewRing(k, old.Current())
			if err != nil {
				t.Fatal(err)
			}
			ring.r.Store(rotated)
			if !handshake(t, perConn, client) {
				t.Fatal("no resumption with a ticket under the previous key")
			}
			t3 := cache.last()
			if bytes.Equal(t3, t2) || keyName(t3) != k.Name {
				t.Fatalf("resumed under the previous key: new ticket under key %s (same as presented: %v), want a fresh one under %s", keyName(t3), bytes.Equal(t3, t2), k.Name)
			}
			if !handshake(t, perConn, client) {
				t.Fatal("no resumption with a ticket under the current key")
			}
			if same := bytes.Equal(cache.last(), t3); same != (v == tls.VersionTLS12) {
				t.Fatalf("after the rotation: ticket equal to the one presented: %v, want %v", same, v == tls.VersionTLS12)
			}
			if got := testutil.ToFloat64(m.wrap.WithLabelValues(ModeTickets, "ok")); got != 4 {
				t.Fatalf("wrap ok = %v, want 4 (a ticket sent back counts as handed out)", got)
			}
		})
	}
}
