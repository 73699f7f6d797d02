package stateful

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
	"github.com/edgeproxy/edgeproxy/sessioncache/storetest"
)

// connNode is a node whose hooks come from Layer.ConnConfig, one per
// connection, as edgeproxy's listener installs them.
type connNode struct {
	s     *Backend
	layer *resumption.Layer
	base  *tls.Config
}

func newConnNode(tb testing.TB, cfg Config) *connNode {
	tb.Helper()
	cfg.Metrics = mustMetrics(tb, prometheus.NewRegistry())
	s, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	layer, err := resumption.New(resumption.Config{Mode: cfg.Mode, Backend: s})
	if err != nil {
		tb.Fatal(err)
	}
	return &connNode{s: s, layer: layer, base: &tls.Config{Certificates: []tls.Certificate{tlstest.Cert(tb)}}}
}

// connect runs one connection through n's per-connection hooks, ends the
// handshake as the listener does (HandshakeDone), and returns whether the
// client resumed.
func (n *connNode) connect(tb testing.TB, l *tlstest.Loopback, cli *tls.Config) bool {
	tb.Helper()
	cc, sc := l.Pair(tb)
	cfg, rec := n.layer.ConnConfig(n.base)
	srv := tls.Server(sc, cfg)
	errc := make(chan error, 1)
	go func() {
		defer srv.Close()
		err := srv.Handshake()
		rec.HandshakeDone(err)
		if err == nil {
			_, err = srv.Write([]byte{1})
		}
		errc <- err
	}()
	c := tls.Client(cc, cli)
	var b [1]byte
	err := c.Handshake()
	if err == nil {
		_, err = io.ReadFull(c, b[:])
	}
	c.Close()
	if serr := <-errc; serr != nil {
		tb.Fatalf("server: %v", serr)
	}
	if err != nil {
		tb.Fatalf("client: %v", err)
	}
	return c.ConnectionState().DidResume
}

// TestTLS12ReissuesHandle checks that a TLS 1.2 resumption hands the
// client its own handle back, with no store write, on the issuing node and
// on another one; that revoking the session still ends it everywhere; and
// that TLS 1.3 and single use still issue a fresh handle each time.
func TestTLS12ReissuesHandle(t *testing.T) {
	t.Parallel()
	_, redis := startRedis(t)
	l := tlstest.NewLoopback(t)
	for _, tt := range []struct {
		name      string
		version   uint16
		singleUse bool
		reissued  bool
	}{
		{"tls12", tls.VersionTLS12, false, true},
		{"tls12/single_use", tls.VersionTLS12, true, false},
		{"tls13", tls.VersionTLS13, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store := storetest.NewRecorder(redis)
			cfg := Config{Mode: resumption.ModeRedis, Store: store, Prefix: tt.name + "/", SingleUse: tt.singleUse, Timeout: loadedCITimeout}
			a, b := newConnNode(t, cfg), newConnNode(t, cfg)
			cache := tlstest.NewRecordingCache()
			cli := tlstest.ClientConfig(t, tt.version, cache)
			if a.connect(t, l, cli) {
				t.Fatal("first connection resumed")
			}
			_, _, first := cache.Last(t)
			puts := store.Count(storetest.OpPut)
			for i, n := range []*connNode{a, b, a} {
				if !n.connect(t, l, cli) {
					t.Fatalf("reconnect %d did not resume", i)
				}
				_, _, ticket := cache.Last(t)
				if same := bytes.Equal(ticket, first); same != tt.reissued {
					t.Fatalf("reconnect %d: new ticket equals the first: %v; want %v", i, same, tt.reissued)
				}
			}
			wrote := store.Count(storetest.OpPut) - puts
			if tt.reissued && wrote != 0 {
				t.Fatalf("%d store writes for 3 resumptions that re-issued their handle; want 0", wrote)
			}
			if !tt.reissued && wrote != 3 {
				t.Fatalf("%d store writes for 3 resumptions; want 3", wrote)
			}
			// Revocation, on the other node, ends the session everywhere.
			_, _, last := cache.Last(t)
			if err := b.s.Revoke(context.Background(), a.s.SessionID(last)); err != nil {
				t.Fatal(err)
			}
			if a.connect(t, l, cli) {
				t.Fatal("the revoked session resumed on its issuing node")
			}
		})
	}
}
