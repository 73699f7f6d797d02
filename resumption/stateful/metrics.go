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
	resultNames   = [...]string{"ok", "miss", "error", "timeout", "skipped"}
	fallbackNames = [...]string{"hit", "miss", "local_only"}
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
type Metrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	fallback *prometheus.CounterVec
	gauges   *gauges
}

// NewMetrics creates the collectors and registers them with reg, if reg is
// not nil. It returns an error if registration fails, for example because
// another Metrics is registered with reg already.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgeproxy_session_store_calls_total",
			Help: "Calls to the session store, by mode, op (get, put, delete) and result (ok, miss, error, timeout, skipped: breaker open).",
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
		gauges: &gauges{
			breakerOpen: prometheus.NewDesc("edgeproxy_session_store_breaker_open",
				"Backend backends whose session store circuit breaker is open or half-open, by mode.", []string{"mode"}, nil),
			localEntries: prometheus.NewDesc("edgeproxy_session_local_entries",
				"Entries in the node-local session caches, expired ones not yet removed included, by mode.", []string{"mode"}, nil),
			backends: make(map[*Backend]struct{}),
		},
	}
	if err := promreg.Register(reg, m.calls, m.duration, m.fallback, m.gauges); err != nil {
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

// fallback counts a local cache read in a shared mode.
func (mm *modeMetrics) fallback(result int) {
	if mm == nil {
		return
	}
	mm.falls[result].Inc()
}

// gauges computes the gauges at scrape time from the attached
// backends, as a GaugeFunc would, but summed per mode so that several
// backends (a reload, or several nodes in one process) can share one
// registry.
type gauges struct {
	breakerOpen, localEntries *prometheus.Desc

	// mu protects backends, the Backends attached by New
	// and not yet detached by Close.
	mu       sync.Mutex
	backends map[*Backend]struct{}
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) {
	ch <- g.breakerOpen
	ch <- g.localEntries
}

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
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
