package stateful

import (
	"crypto/tls"
	"slices"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/resumption"
	"github.com/edgeproxy/edgeproxy/resumption/internal/tlstest"
	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// benchStores starts the stores the benchmarks compare: the local
// LRU alone (sticky), and real redis-server and memcached processes.
func benchStores(b *testing.B) []struct {
	name  string
	cfg   Config
	store sessioncache.Store
} {
	b.Helper()
	_, rs := startRedis(b)
	_, ms := startMemcached(b)
	return []struct {
		name  string
		cfg   Config
		store sessioncache.Store
	}{
		{"sticky", Config{Mode: resumption.ModeSticky}, nil},
		{"redis", Config{Mode: resumption.ModeRedis, Store: rs}, rs},
		{"memcached", Config{Mode: resumption.ModeMemcached, Store: ms}, ms},
	}
}

// reportLatency times n more calls of f, outside the benchmark's
// timer, and reports their median and 99th percentile in microseconds.
func reportLatency(b *testing.B, n int, f func()) {
	b.Helper()
	b.StopTimer()
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		f()
		d[i] = time.Since(start)
	}
	slices.Sort(d)
	us := func(q float64) float64 { return float64(d[int(q*float64(n-1))]) / float64(time.Microsecond) }
	b.ReportMetric(us(0.5), "p50-µs")
	b.ReportMetric(us(0.99), "p99-µs")
}

// BenchmarkWrap measures WrapSession: sealing plus the store and
// local cache puts. Metrics are on, as in production.
func BenchmarkWrap(b *testing.B) {
	ss := tlstest.Session(b, tls.VersionTLS13)
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			cfg := st.cfg
			cfg.Metrics = mustMetrics(b, nil)
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			wrap := func() {
				if _, err := s.WrapSession(tls.ConnectionState{}, ss); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				wrap()
			}
			reportLatency(b, 1000, wrap)
		})
	}
}

// BenchmarkUnwrap measures UnwrapSession of one handle: the store
// get and the decryption.
func BenchmarkUnwrap(b *testing.B) {
	ss := tlstest.Session(b, tls.VersionTLS13)
	for _, st := range benchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			cfg := st.cfg
			cfg.Metrics = mustMetrics(b, nil)
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			h := mustWrap(b, s, ss)
			unwrap := func() {
				if _, err := s.UnwrapSession(h, tls.ConnectionState{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				unwrap()
			}
			reportLatency(b, 1000, unwrap)
		})
	}
}

// BenchmarkHandshakeResumed measures a whole resumed connection
// (TCP loopback connect, both TLS handshakes, one byte) through the Layer,
// both ends in this process: one store get and one put (the fresh ticket)
// per connection. Compare with BenchmarkHandshakeFullVsResumed.
func BenchmarkHandshakeResumed(b *testing.B) {
	l := tlstest.NewLoopback(b)
	for _, st := range benchStores(b) {
		for _, v := range tlstest.Versions {
			b.Run(st.name+"/"+v.Name, func(b *testing.B) {
				n := newNode(b, st.cfg, v.Version)
				cli := newClient(b, v.Version)
				l.Connect(b, cli, n.tls)
				b.ReportAllocs()
				for b.Loop() {
					if !l.Connect(b, cli, n.tls).DidResume {
						b.Fatal("did not resume")
					}
				}
			})
		}
	}
}
