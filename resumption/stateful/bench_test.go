package stateful

import (
	"context"
	"crypto/tls"
	"slices"
	"sync/atomic"
	"syscall"
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

// BenchmarkCommit measures what a TLS 1.3 resumption adds to a handshake
// in the shared modes (#12): sealing the fresh ticket crypto/tls issues,
// and its commit (Local put, queue, writers, store put, the wait for the
// store's acknowledgement), 8 connections at a time. Besides ns/op and
// allocs/op it reports the CPU per commit of this process (node-µs/op,
// seal included) and of the store's (store-µs/op, from /proc), and how many sessions a store round trip carried
// (sessions/write).
func BenchmarkCommit(b *testing.B) {
	ss := tlstest.Session(b, tls.VersionTLS13)
	cs := tls.ConnectionState{Version: tls.VersionTLS13, DidResume: true}
	for _, k := range storeKinds {
		b.Run(k.name, func(b *testing.B) {
			srv, st := k.start(b)
			cst := &countingStore{Store: st}
			cfg := Config{Mode: k.mode, Store: cst, Metrics: mustMetrics(b, nil)}
			if bp, ok := st.(batchPutter); ok {
				cfg.Store = &countingBatchStore{cst, bp}
			}
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			cpu0, self0 := srv.CPU(), selfCPU()
			b.ReportAllocs()
			b.SetParallelism(4) // 8 goroutines on 2 cores
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c := s.NewConn()
					if _, _, err := c.WrapSessionID(cs, ss); err != nil {
						b.Error(err)
						return
					}
					c.HandshakeDone(nil)
				}
			})
			b.StopTimer()
			perOp := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(b.N) }
			b.ReportMetric(perOp(srv.CPU()-cpu0), "store-µs/op")
			b.ReportMetric(perOp(selfCPU()-self0), "node-µs/op")
			if w := cst.writes.Load(); w > 0 {
				b.ReportMetric(float64(cst.sessions.Load())/float64(w), "sessions/write")
			}
		})
	}
}

// selfCPU returns the user plus system CPU time of this process.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countingStore counts the round trips of puts, and the sessions they
// carried.
type countingStore struct {
	sessioncache.Store
	writes, sessions atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	c.writes.Add(1)
	c.sessions.Add(1)
	return c.Store.Put(ctx, key, val, ttl)
}

// countingBatchStore is a countingStore over a store that writes batches.
type countingBatchStore struct {
	*countingStore
	bp batchPutter
}

func (c *countingBatchStore) PutBatch(ctx context.Context, entries []sessioncache.Entry, ttl time.Duration) error {
	c.writes.Add(1)
	c.sessions.Add(int64(len(entries)))
	return c.bp.PutBatch(ctx, entries, ttl)
}
