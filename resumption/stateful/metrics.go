package stateful

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/promreg"
)

// StoreBuckets are the buckets, in seconds, of
// edgeproxy_session_store_duration_seconds: 100µs to 1s.
var StoreBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// Label values of the op and result labels of
// edgeproxy_session_store_calls_total, indexed by the op* and
// result* constants.
var (
	opNames       = [...]string{"get", "put", "delete"}
	resultNames   = [...]string{"ok", "miss", "error", "timeout", "skipped", "local"}
	fallbackNames = [...]string{"hit", "miss", "local_only"}
	commitNames   = [...]string{"ok", "dropped", "overflow", "error", "reissued"}
	consumeNames  = [...]string{"ok", "error"}
)

// CommitBuckets are the buckets, in seconds, of
// edgeproxy_session_commit_delay_seconds: 10µs to 1s.
var CommitBuckets = []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .1, 1}

const (
	commitOK       = iota // stored in Store (sticky: in Local)
	commitDropped         // the handshake failed: nothing stored
	commitOverflow        // the writers' queue was full, or the Backend closed: Local only
	commitError           // the store write failed or was skipped: Local only
	commitReissued        // a TLS 1.2 resumption re-issued the stored handle: nothing written
)

const (
	consumeOK    = iota // deleted
	consumeError        // Store could not delete it: it may resume again
)

const (
	opGet = iota
	opPut
	opDelete
)

const (
	resultOK      = iota
	resultMiss    // sessioncache.ErrMiss
	resultError   // any other error
	resultTimeout // Timeout or a socket deadline passed
	resultSkipped // the breaker was open: no call was made
	resultLocal   // read-through: Local had a verified copy, no call was made
)

const (
	fallbackHit       = iota // store failed, Local had the session
	fallbackMiss             // store failed, Local did not have it
	fallbackLocalOnly        // store missed a session whose write had failed; Local had it
)

// Metrics holds the Prometheus collectors of stateful Backends. One
// Metrics may serve several backends; series are labelled by mode,
// and the gauges sum over the backends of a mode. A nil *Metrics
// counts nothing.
//
// The collectors are:
//
//   - edgeproxy_session_store_calls_total{mode,op,result}: calls to the
//     session store (in sticky mode, the local cache), op get, put or
//     delete, result ok, miss, error, timeout, skipped (breaker open), or
//     local (get only: ReadThrough found a verified copy, no call made);
//   - edgeproxy_session_store_duration_seconds{mode,op}: their latency,
//     skipped calls excluded;
//   - edgeproxy_session_local_fallback_total{mode,result}: local cache reads
//     in the shared modes: hit or miss after the store failed, or
//     local_only, a session whose store write had failed;
//   - edgeproxy_session_commits_total{mode,result}: sessions issued through
//     NewConn whose handshake ended: ok (stored; in sticky mode, in the
//     local cache), dropped (the handshake failed, nothing was stored),
//     overflow (the writers' queue was full: local cache only), error (the
//     store write failed or the breaker skipped it: local cache only),
//     reissued (a TLS 1.2 resumption handed back the handle it resumed,
//     still in the store: nothing to write);
//   - edgeproxy_session_commit_delay_seconds{mode}: from the completed
//     handshake to the store's acknowledgement, for ok commits in the
//     shared modes: the window in which another node misses the session;
//   - edgeproxy_session_single_use_consumed_total{mode,result}: single-use
//     sessions deleted after a completed resumption, ok or error;
//   - edgeproxy_session_commit_queue{mode}: sessions waiting for the store
//     writers, read at scrape time;
//   - edgeproxy_session_store_breaker_open{mode}: backends whose breaker is
//     open or half-open;
//   - edgeproxy_session_local_entries{mode}: entries in the local caches
//     that report a Len, read at scrape time.
type Metrics struct {
	calls       *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	fallback    *prometheus.CounterVec
	commits     *prometheus.CounterVec
	commitDelay *prometheus.HistogramVec
	consumed    *prometheus.CounterVec
	gauges      *gauges
}

// NewMetrics creates the collectors and registers them with reg, if reg is
// not nil. It returns an error if registration fails, for example because
// another Metrics is registered with reg already.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_session_store_calls_total",
			Help: "Calls to the session store, by mode, op (get, put, delete) and result (ok, miss, error, timeout, skipped: breaker open, local: read through the node-local cache, no call made).",
		}, []string{"mode", "op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgeproxy_session_store_duration_seconds",
			Help:    "Latency of session store calls, by mode and op; skipped calls are not observed.",
			Buckets: StoreBuckets,
		}, []string{"mode", "op"}),
		fallback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_session_local_fallback_total",
			Help: "Local cache reads in shared modes, by result: hit or miss after a store failure, local_only for a session whose store write had failed.",
		}, []string{"mode", "result"}),
		commits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_session_commits_total",
			Help: "Sessions issued whose handshake ended, by mode and result: ok (stored), dropped (handshake failed, nothing stored), overflow (writer queue full: local cache only), error (store write failed or skipped: local cache only), reissued (TLS 1.2 resumption handed back the stored handle: nothing written).",
		}, []string{"mode", "result"}),
		commitDelay: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgeproxy_session_commit_delay_seconds",
			Help:    "Time from a completed handshake to the shared store's acknowledgement of its session, by mode: the window in which another node misses it.",
			Buckets: CommitBuckets,
		}, []string{"mode"}),
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_session_single_use_consumed_total",
			Help: "Single-use sessions deleted after a completed resumption, by mode and result (ok, error: the store did not delete it).",
		}, []string{"mode", "result"}),
		gauges: &gauges{
			breakerOpen: prometheus.NewDesc("edgeproxy_session_store_breaker_open",
				"Backend backends whose session store circuit breaker is open or half-open, by mode.", []string{"mode"}, nil),
			commitQueue: prometheus.NewDesc("edgeproxy_session_commit_queue",
				"Sessions of completed handshakes waiting for the store writers, by mode.", []string{"mode"}, nil),
			localEntries: prometheus.NewDesc("edgeproxy_session_local_entries",
				"Entries in the node-local session caches, expired ones not yet removed included, by mode.", []string{"mode"}, nil),
			backends: make(map[*Backend]struct{}),
		},
	}
	if err := promreg.Register(reg, m.calls, m.duration, m.fallback, m.commits, m.commitDelay, m.consumed, m.gauges); err != nil {
		return nil, fmt.Errorf("stateful: registering metrics: %w", err)
	}
	return m, nil
}

func (m *Metrics) attach(s *Backend) {
	m.gauges.mu.Lock()
	m.gauges.backends[s] = struct{}{}
	m.gauges.mu.Unlock()
}

func (m *Metrics) detach(s *Backend) {
	m.gauges.mu.Lock()
	delete(m.gauges.backends, s)
	m.gauges.mu.Unlock()
}

// modeMetrics are one mode's series, resolved once per backend so
// that a handshake does no label lookup. A nil *modeMetrics counts
// nothing.
type modeMetrics struct {
	calls    [len(opNames)][len(resultNames)]prometheus.Counter
	duration [len(opNames)]prometheus.Observer
	falls    [len(fallbackNames)]prometheus.Counter
	commits  [len(commitNames)]prometheus.Counter
	delay    prometheus.Observer
	consumes [len(consumeNames)]prometheus.Counter
}

func (m *Metrics) forMode(mode string) *modeMetrics {
	mm := &modeMetrics{}
	for op, opName := range opNames {
		for r, rName := range resultNames {
			mm.calls[op][r] = m.calls.WithLabelValues(mode, opName, rName)
		}
		mm.duration[op] = m.duration.WithLabelValues(mode, opName)
	}
	for r, rName := range fallbackNames {
		mm.falls[r] = m.fallback.WithLabelValues(mode, rName)
	}
	for r, rName := range commitNames {
		mm.commits[r] = m.commits.WithLabelValues(mode, rName)
	}
	mm.delay = m.commitDelay.WithLabelValues(mode)
	for r, rName := range consumeNames {
		mm.consumes[r] = m.consumed.WithLabelValues(mode, rName)
	}
	return mm
}

// call counts a store call that was made, and observes its latency.
func (mm *modeMetrics) call(op, result int, elapsed time.Duration) {
	if mm == nil {
		return
	}
	mm.calls[op][result].Inc()
	mm.duration[op].Observe(elapsed.Seconds())
}

// skip counts a store call the breaker skipped.
func (mm *modeMetrics) skip(op int) {
	if mm == nil {
		return
	}
	mm.calls[op][resultSkipped].Inc()
}

// readThrough counts a get that Local answered without a store call.
func (mm *modeMetrics) readThrough() {
	if mm == nil {
		return
	}
	mm.calls[opGet][resultLocal].Inc()
}

// fallback counts a local cache read in a shared mode.
func (mm *modeMetrics) fallback(result int) {
	if mm == nil {
		return
	}
	mm.falls[result].Inc()
}

// commit counts a commit's result.
func (mm *modeMetrics) commit(result int) {
	if mm == nil {
		return
	}
	mm.commits[result].Inc()
}

// commitDone counts a commit Store acknowledged, delay after its handshake.
func (mm *modeMetrics) commitDone(delay time.Duration) {
	if mm == nil {
		return
	}
	mm.commits[commitOK].Inc()
	mm.delay.Observe(delay.Seconds())
}

// consumed counts a single-use consumption.
func (mm *modeMetrics) consumed(result int) {
	if mm == nil {
		return
	}
	mm.consumes[result].Inc()
}

// gauges computes the gauges at scrape time from the attached
// backends, as a GaugeFunc would, but summed per mode so that several
// backends (a reload, or several nodes in one process) can share one
// registry.
type gauges struct {
	breakerOpen, commitQueue, localEntries *prometheus.Desc

	// mu protects backends, the Backends attached by New
	// and not yet detached by Close.
	mu       sync.Mutex
	backends map[*Backend]struct{}
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.breakerOpen
	ch <- g.commitQueue
	ch <- g.localEntries
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	type sums struct {
		open, queued, entries float64
		sized                 bool
	}
	byMode := make(map[string]*sums)
	g.mu.Lock()
	for s := range g.backends {
		m := byMode[s.mode]
		if m == nil {
			m = &sums{}
			byMode[s.mode] = m
		}
		if s.shared != nil && s.breaker.isOpen() {
			m.open++
		}
		m.queued += float64(len(s.writer.queue))
		if l, ok := s.local.(interface{ Len() int }); ok {
			m.entries += float64(l.Len())
			m.sized = true
		}
	}
	g.mu.Unlock()
	for mode, m := range byMode {
		ch <- prometheus.MustNewConstMetric(g.breakerOpen, prometheus.GaugeValue, m.open, mode)
		ch <- prometheus.MustNewConstMetric(g.commitQueue, prometheus.GaugeValue, m.queued, mode)
		if m.sized {
			ch <- prometheus.MustNewConstMetric(g.localEntries, prometheus.GaugeValue, m.entries, mode)
		}
	}
}
