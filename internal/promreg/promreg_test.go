package promreg

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterAllOrNothing(t *testing.T) {
	t.Parallel()
	if err := Register(nil, prometheus.NewCounter(prometheus.CounterOpts{Name: "a"})); err != nil {
		t.Fatalf("nil registry: %v", err)
	}
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "b"})
	if err := Register(reg, a, b); err != nil {
		t.Fatal(err)
	}
	// A second set with "c" and a clashing "b": the error is returned, and
	// "c" is not left registered.
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "c"})
	b2 := prometheus.NewCounter(prometheus.CounterOpts{Name: "b"})
	err := Register(reg, c, b2)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Fatalf("clash: %v; want AlreadyRegisteredError", err)
	}
	if !reg.Unregister(a) || reg.Unregister(c) {
		t.Fatal("after a failed Register, a must still be registered and c must not be")
	}
}
