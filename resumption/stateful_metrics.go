package resumption

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StatefulStoreBuckets are the buckets, in seconds, of
// edgeproxy_session_store_duration_seconds: 100µs to 1s.
var StatefulStoreBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// Label values of the op and result labels of
// edgeproxy_session_store_calls_total, indexed by the statefulOp* and
// statefulResult* constants.
var (
	statefulOps     = [...]string{"get", "put", "delete"}
	statefulResults = [...]string{"ok", "miss", "error", "timeout", "skipped"}
	statefulFalls   = [...]string{"hit", "miss", "local_only"}
)

const (
	statefulOpGet = iota
	statefulOpPut
	statefulOpDelete
)

const (
	statefulResultOK      = iota
	statefulResultMiss    // sessioncache.ErrMiss
	statefulResultError   // any other error
	statefulResultTimeout // Timeout or a socket deadline passed
	statefulResultSkipped // the breaker was open: no call was made
)

const (
	statefulFallbackHit       = iota // store failed, Local had the session
	statefulFallbackMiss             // store failed, Local did not have it
	statefulFallbackLocalOnly        // store missed a session whose write had failed; Local had it
)

// StatefulMetrics holds the Prometheus collectors of Stateful backends. One
// StatefulMetrics may serve several backends; series are labelled by mode,
// and the gauges sum over the backends of a mode. A nil *StatefulMetrics
// counts nothing.
//
// The collectors are:
//
//   - edgeproxy_session_store_calls_total{mode,op,result}: calls to the
//     session store (in sticky mode, the local cache), op get, put or
//     delete, result ok, miss, error, timeout, or skipped (breaker open);
//   - edgeproxy_session_store_duration_seconds{mode,op}: their latency,
//     skipped calls excluded;
//   - edgeproxy_session_local_fallback_total{mode,result}: local cache reads
//     in the shared modes: hit or miss after the store failed, or
//     local_only, a session whose store write had failed;
//   - edgeproxy_session_store_breaker_open{mode}: backends whose breaker is
//     open or half-open;
//   - edgeproxy_session_local_entries{mode}: entries in the local caches
//     that report a Len, read at scrape time.
type StatefulMetrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	fallback *prometheus.CounterVec
	gauges   *statefulGauges
}

// NewStatefulMetrics creates the collectors and registers them with reg, if
// reg is not nil.
func NewStatefulMetrics(reg prometheus.Registerer) *StatefulMetrics {
	m := &StatefulMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_session_store_calls_total",
			Help: "Calls to the session store, by mode, op (get, put, delete) and result (ok, miss, error, timeout, skipped: breaker open).",
		}, []string{"mode", "op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edgeproxy_session_store_duration_seconds",
			Help:    "Latency of session store calls, by mode and op; skipped calls are not observed.",
			Buckets: StatefulStoreBuckets,
		}, []string{"mode", "op"}),
		fallback: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_session_local_fallback_total",
			Help: "Local cache reads in shared modes, by result: hit or miss after a store failure, local_only for a session whose store write had failed.",
		}, []string{"mode", "result"}),
		gauges: &statefulGauges{
			breakerOpen: prometheus.NewDesc("edgeproxy_session_store_breaker_open",
				"Stateful backends whose session store circuit breaker is open or half-open, by mode.", []string{"mode"}, nil),
			localEntries: prometheus.NewDesc("edgeproxy_session_local_entries",
				"Entries in the node-local session caches, expired ones not yet removed included, by mode.", []string{"mode"}, nil),
			backends: make(map[*Stateful]struct{}),
		},
	}
	if reg != nil {
		reg.MustRegister(m.calls, m.duration, m.fallback, m.gauges)
	}
	return m
}

func (m *StatefulMetrics) attach(s *Stateful) {
	m.gauges.mu.Lock()
	m.gauges.backends[s] = struct{}{}
	m.gauges.mu.Unlock()
}

func (m *StatefulMetrics) detach(s *Stateful) {
	m.gauges.mu.Lock()
	delete(m.gauges.backends, s)
	m.gauges.mu.Unlock()
}

// statefulModeMetrics are one mode's series, resolved once per backend so
// that a handshake does no label lookup. A nil *statefulModeMetrics counts
// nothing.
type statefulModeMetrics struct {
	calls    [len(statefulOps)][len(statefulResults)]prometheus.Counter
	duration [len(statefulOps)]prometheus.Observer
	falls    [len(statefulFalls)]prometheus.Counter
}

func (m *StatefulMetrics) forMode(mode string) *statefulModeMetrics {
	mm := &statefulModeMetrics{}
	for op, opName := range statefulOps {
		for r, rName := range statefulResults {
			mm.calls[op][r] = m.calls.WithLabelValues(mode, opName, rName)
		}
		mm.duration[op] = m.duration.WithLabelValues(mode, opName)
	}
	for r, rName := range statefulFalls {
		mm.falls[r] = m.fallback.WithLabelValues(mode, rName)
	}
	return mm
}

// call counts a store call that was made, and observes its latency.
func (mm *statefulModeMetrics) call(op, result int, elapsed time.Duration) {
	if mm == nil {
		return
	}
	mm.calls[op][result].Inc()
	mm.duration[op].Observe(elapsed.Seconds())
}

// skip counts a store call the breaker skipped.
func (mm *statefulModeMetrics) skip(op int) {
	if mm == nil {
		return
	}
	mm.calls[op][statefulResultSkipped].Inc()
}

// fallback counts a local cache read in a shared mode.
func (mm *statefulModeMetrics) fallback(result int) {
	if mm == nil {
		return
	}
	mm.falls[result].Inc()
}

// statefulGauges computes the gauges at scrape time from the attached
// backends, as a GaugeFunc would, but summed per mode so that several
// backends (a reload, or several nodes in one process) can share one
// registry.
type statefulGauges struct {
	breakerOpen, localEntries *prometheus.Desc

	// mu protects backends, the Stateful backends attached by NewStateful
	// and not yet detached by Close.
	mu       sync.Mutex
	backends map[*Stateful]struct{}
}

func (g *statefulGauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.breakerOpen
	ch <- g.localEntries
}

func (g *statefulGauges) Collect(ch chan<- prometheus.Metric) {
	type sums struct {
		open, entries float64
		sized         bool
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
		if l, ok := s.local.(interface{ Len() int }); ok {
			m.entries += float64(l.Len())
			m.sized = true
		}
	}
	g.mu.Unlock()
	for mode, m := range byMode {
		ch <- prometheus.MustNewConstMetric(g.breakerOpen, prometheus.GaugeValue, m.open, mode)
		if m.sized {
			ch <- prometheus.MustNewConstMetric(g.localEntries, prometheus.GaugeValue, m.entries, mode)
		}
	}
}
