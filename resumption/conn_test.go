package resumption

import (
	"crypto/tls"
	"testing"
	"time"
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
