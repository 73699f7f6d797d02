package ticketkeys

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func counterValue(t testing.TB, m *Metrics, source, result string) float64 {
	t.Helper()
	var pb dto.Metric
	if err := m.rotations.WithLabelValues(source, result).Write(&pb); err != nil {
		t.Fatal(err)
	}
	return pb.GetCounter().GetValue()
}

// gathered returns the value of every series of reg as name{source}.
func gathered(t testing.TB, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering twice must fail")
	}
	clock := newFakeClock(time.Unix(1_800_000_000, 0))
	h := NewHolder(HolderConfig{})
	defer h.Close()
	s, err := NewGenerateSource(h, GenerateConfig{Now: clock.Now, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	clock.Add(90 * time.Second)
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	clock.Add(30 * time.Second)

	got := gathered(t, reg)
	want := map[string]float64{
		"edgeproxy_ticketkeys_ring_size,source=generate":                      2,
		"edgeproxy_ticketkeys_current_key_age_seconds,source=generate":        30,
		"edgeproxy_ticketkeys_degraded,source=generate":                       0,
		"edgeproxy_ticketkeys_rotations_total,result=success,source=generate": 2,
		"edgeproxy_ticketkeys_rotations_total,result=failure,source=generate": 0,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}

	s.Close()
	got = gathered(t, reg)
	if _, ok := got["edgeproxy_ticketkeys_ring_size,source=generate"]; ok {
		t.Error("a closed source still reports its ring")
	}
}

func TestNilMetricsIsSafe(t *testing.T) {
	t.Parallel()
	var m *Metrics
	m.rotation("x", nil)
	m.attach(nil)
	m.detach(nil)
}
