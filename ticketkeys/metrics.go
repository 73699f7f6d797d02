package ticketkeys

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/promreg"
)

// Metrics holds the Prometheus collectors of the key sources. Sources attach
// themselves at Start and detach at Close; gauges are computed at scrape time
// from each source's current ring, so key age never goes stale.
//
// Exposed series, all labelled by source ("generate", "file", "redis"):
//
//	edgeproxy_ticketkeys_ring_size                 keys in the current ring
//	edgeproxy_ticketkeys_current_key_age_seconds   age of the sealing key (omitted when unknown)
//	edgeproxy_ticketkeys_degraded                  1 while the source is degraded
//	edgeproxy_ticketkeys_rotations_total{result}   ring updates: rotations, reloads and refreshes, "success" or "failure"
//
// A nil *Metrics is valid and records nothing. Metrics is safe for
// concurrent use.
type Metrics struct {
	rotations *prometheus.CounterVec
	ringSize  *prometheus.Desc
	keyAge    *prometheus.Desc
	degraded  *prometheus.Desc

	// mu protects sources.
	mu      sync.Mutex
	sources map[*runner]struct{}
}

// NewMetrics creates the collectors and registers them with reg. If reg is
// nil they are not registered; Metrics is itself a prometheus.Collector that
// the caller may register later. It returns an error if registration fails,
// for example because NewMetrics was already registered with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		rotations: promreg.CounterVec("edgeproxy_ticketkeys_rotations_total", "Ticket key ring updates (rotations, reloads, refreshes) by source and result.", "source", "result"),
		ringSize: prometheus.NewDesc("edgeproxy_ticketkeys_ring_size",
			"Number of keys in the current ticket key ring.", []string{"source"}, nil),
		keyAge: prometheus.NewDesc("edgeproxy_ticketkeys_current_key_age_seconds",
			"Age of the key that seals new tickets.", []string{"source"}, nil),
		degraded: prometheus.NewDesc("edgeproxy_ticketkeys_degraded",
			"1 if the key source is degraded (serving its last good ring), else 0.", []string{"source"}, nil),
		sources: make(map[*runner]struct{}),
	}
	if reg != nil {
		if err := reg.Register(m); err != nil {
			return nil, fmt.Errorf("ticketkeys: registering metrics: %w", err)
		}
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.rotations.Describe(ch)
	ch <- m.ringSize
	ch <- m.keyAge
	ch <- m.degraded
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.rotations.Collect(ch)
	m.mu.Lock()
	srcs := make([]*runner, 0, len(m.sources))
	for r := range m.sources {
		srcs = append(srcs, r)
	}
	m.mu.Unlock()
	for _, r := range srcs {
		st := r.Status()
		deg := 0.0
		if st.Degraded {
			deg = 1
		}
		ch <- prometheus.MustNewConstMetric(m.degraded, prometheus.GaugeValue, deg, r.source)
		ring := r.holder.Ring()
		if ring == nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(m.ringSize, prometheus.GaugeValue, float64(ring.Len()), r.source)
		if c := ring.Current().Created; !c.IsZero() {
			age := r.now().Sub(c).Seconds()
			ch <- prometheus.MustNewConstMetric(m.keyAge, prometheus.GaugeValue, max(age, 0), r.source)
		}
	}
}

func (m *Metrics) attach(r *runner) {
	if m == nil {
		return
	}
	for _, res := range []string{"success", "failure"} {
		m.rotations.WithLabelValues(r.source, res) // start at 0
	}
	m.mu.Lock()
	m.sources[r] = struct{}{}
	m.mu.Unlock()
}

func (m *Metrics) detach(r *runner) {
	if m == nil {
		return
	}
	m.mu.Lock()
	delete(m.sources, r)
	m.mu.Unlock()
}

func (m *Metrics) rotation(source string, err error) {
	if m == nil {
		return
	}
	res := "success"
	if err != nil {
		res = "failure"
	}
	m.rotations.WithLabelValues(source, res).Inc()
}
