// Package promreg registers Prometheus collectors the one way edgeproxy's
// packages do: with Registerer.Register, returning the error, never
// panicking (no MustRegister).
package promreg

import "github.com/prometheus/client_golang/prometheus"

// Register registers cs with reg, in order. If reg is nil it does nothing.
// If one fails, those it registered before are unregistered, so a caller
// may retry or give up without leaving half its collectors behind; the
// error is the registry's (a prometheus.AlreadyRegisteredError when a
// collector with the same descriptors is registered already).
func Register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return err
		}
	}
	return nil
}

// CounterVec returns a new counter vector, in one line where a
// prometheus.CounterOpts literal would take four.
func CounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// GaugeVec returns a new gauge vector.
func GaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
}

// HistogramVec returns a new histogram vector with the given buckets.
func HistogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
}
