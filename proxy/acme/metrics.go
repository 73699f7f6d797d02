package acme

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/promreg"
)

// metrics counts obtain and renew outcomes per host and reports, at each
// scrape, how long each host's certificate has left.
type metrics struct {
	m        *Manager
	outcomes *prometheus.CounterVec
	expiry   *prometheus.Desc

	// mu protects names, the hosts whose expiry is reported: configured
	// hosts and every name a certificate was cached for (on-demand names
	// are bounded by their guards).
	mu    sync.Mutex
	names map[string]bool
}

func newMetrics(reg prometheus.Registerer, m *Manager) (*metrics, error) {
	mt := &metrics{
		m:        m,
		outcomes: promreg.CounterVec("edgeproxy_acme_certificates_total", "ACME certificate obtain and renew attempts by host, action (obtain, renew) and result (success, failure).", "host", "action", "result"),
		expiry: prometheus.NewDesc("edgeproxy_certificate_expiry_seconds",
			"Seconds until the ACME certificate served for host expires (negative: expired).", []string{"host"}, nil),
		names: map[string]bool{},
	}
	for h := range m.hosts {
		mt.names[h] = true
	}
	if reg != nil {
		if err := reg.Register(mt); err != nil {
			return nil, fmt.Errorf("acme: registering metrics: %w", err)
		}
	}
	return mt, nil
}

func (mt *metrics) outcome(host, action, result string) {
	mt.outcomes.WithLabelValues(host, action, result).Inc()
}

func (mt *metrics) seen(names []string) {
	mt.mu.Lock()
	defer mt.mu.Unlock()
	for _, n := range names {
		mt.names[strings.ToLower(n)] = true
	}
}

func (mt *metrics) Describe(ch chan<- *prometheus.Desc) {
	mt.outcomes.Describe(ch)
	ch <- mt.expiry
}

func (mt *metrics) Collect(ch chan<- prometheus.Metric) {
	mt.outcomes.Collect(ch)
	mt.mu.Lock()
	names := make([]string, 0, len(mt.names))
	for n := range mt.names {
		names = append(names, n)
	}
	mt.mu.Unlock()
	now := time.Now()
	for _, n := range names {
		var latest time.Time
		for _, c := range mt.m.cache.AllMatchingCertificates(n) {
			if c.Leaf != nil && c.Leaf.NotAfter.After(latest) {
				latest = c.Leaf.NotAfter
			}
		}
		if !latest.IsZero() {
			ch <- prometheus.MustNewConstMetric(mt.expiry, prometheus.GaugeValue, latest.Sub(now).Seconds(), n)
		}
	}
}
