package resumption

import (
	"crypto/tls"
	"testing"
	"time"
)

// sidBackend is a Backend with session identifiers, to test ConnConfig's
// recording without a store.
type sidBackend struct{ *fakeBackend }

func (sidBackend) SessionID(identity []byte) string { return "sid:" + string(identity) }

func TestConnConfigRecordsSessionID(t *testing.T) {
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
	if rec.ID() != "" {
		t.Fatalf("ID before any hook = %q", rec.ID())
	}
	if ss, _ := c.UnwrapSession([]byte("old"), tls.ConnectionState{}); ss == nil {
		t.Fatal("unwrap through the per-connection config failed")
	}
	if rec.ID() != "sid:old" {
		t.Fatalf("after unwrap ID = %q, want sid:old", rec.ID())
	}
	if base.UnwrapSession != nil {
		t.Fatal("ConnConfig modified the base config")
	}
	// A Backend without identifiers: the base config, no record.
	l2, _ := New(Config{Backend: &fakeBackend{}})
	if c, rec := l2.ConnConfig(base); c != base || rec != nil || l2.TracksSessions() {
		t.Fatal("a backend without SessionID got a per-connection config")
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
