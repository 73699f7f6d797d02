package resumption

import (
	"crypto/tls"
	"slices"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/sessioncache"
)

// statefulBenchStores starts the stores the benchmarks compare: the local
// LRU alone (sticky), and real redis-server and memcached processes.
func statefulBenchStores(b *testing.B) []struct {
	name  string
	cfg   StatefulConfig
	store sessioncache.Store
} {
	b.Helper()
	_, rs := statefulRedis(b)
	_, ms := statefulMemcached(b)
	return []struct {
		name  string
		cfg   StatefulConfig
		store sessioncache.Store
	}{
		{"sticky", StatefulConfig{Mode: ModeSticky}, nil},
		{"redis", StatefulConfig{Mode: ModeRedis, Store: rs}, rs},
		{"memcached", StatefulConfig{Mode: ModeMemcached, Store: ms}, ms},
	}
}

// statefulReportLatency times n more calls of f, outside the benchmark's
// timer, and reports their median and 99th percentile in microseconds.
func statefulReportLatency(b *testing.B, n int, f func()) {
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

// BenchmarkStatefulWrap measures WrapSession: sealing plus the store and
// local cache puts. Metrics are on, as in production.
func BenchmarkStatefulWrap(b *testing.B) {
	ss := ticketTestSession(b, tls.VersionTLS13)
	for _, st := range statefulBenchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			cfg := st.cfg
			cfg.Metrics = NewStatefulMetrics(nil)
			s, err := NewStateful(cfg)
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
			statefulReportLatency(b, 1000, wrap)
		})
	}
}

// BenchmarkStatefulUnwrap measures UnwrapSession of one handle: the store
// get and the decryption.
func BenchmarkStatefulUnwrap(b *testing.B) {
	ss := ticketTestSession(b, tls.VersionTLS13)
	for _, st := range statefulBenchStores(b) {
		b.Run(st.name, func(b *testing.B) {
			cfg := st.cfg
			cfg.Metrics = NewStatefulMetrics(nil)
			s, err := NewStateful(cfg)
			if err != nil {
				b.Fatal(err)
			}
			h := statefulMustWrap(b, s, ss)
			unwrap := func() {
				if _, err := s.UnwrapSession(h, tls.ConnectionState{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				unwrap()
			}
			statefulReportLatency(b, 1000, unwrap)
		})
	}
}

// BenchmarkStatefulHandshakeResumed measures a whole resumed connection
// (TCP loopback connect, both TLS handshakes, one byte) through the Layer,
// both ends in this process: one store get and one put (the fresh ticket)
// per connection. Compare with BenchmarkHandshakeFullVsResumed.
func BenchmarkStatefulHandshakeResumed(b *testing.B) {
	l := newTicketLoopback(b)
	for _, st := range statefulBenchStores(b) {
		for _, v := range ticketTestVersions {
			b.Run(st.name+"/"+v.name, func(b *testing.B) {
				n := newStatefulNode(b, st.cfg, v.version)
				cli := statefulClient(b, v.version)
				l.connect(b, cli, n.tls)
				b.ReportAllocs()
				for b.Loop() {
					if !l.connect(b, cli, n.tls).DidResume {
						b.Fatal("did not resume")
					}
				}
			})
		}
	}
}
