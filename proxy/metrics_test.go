package proxy

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func mustTLSMetrics(t *testing.T, reg prometheus.Registerer) *TLSMetrics {
	t.Helper()
	m, err := NewTLSMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestTLSMetricsRegisterTwice: a second TLSMetrics on one registry is an
// error, not a panic.
func TestTLSMetricsRegisterTwice(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := NewTLSMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if m, err := NewTLSMetrics(reg); err == nil || m != nil {
		t.Fatalf("second registration = %v, %v; want an error", m, err)
	}
	if m, err := NewTLSMetrics(nil); err != nil || m == nil {
		t.Fatalf("nil registry = %v, %v; want metrics that are not registered", m, err)
	}
}
