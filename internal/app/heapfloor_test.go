package app

import (
	"os"
	"testing"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/heapfloor"
)

// TestStartHeapFloor: serve starts the configured heap floor, unless GOGC
// is set in the environment (the operator chose the pacing).
func TestStartHeapFloor(t *testing.T) {
	// Not parallel: it sets GOGC and the process's GC percent.
	if v, ok := os.LookupEnv("GOGC"); ok {
		t.Skipf("GOGC=%s is set for the whole test run", v)
	}
	f := startHeapFloor(zap.NewNop(), heapfloor.Config{})
	if f == nil {
		t.Fatal("no floor started with GOGC unset")
	}
	f.Stop()
	t.Setenv("GOGC", "100")
	if f := startHeapFloor(zap.NewNop(), heapfloor.Config{}); f != nil {
		f.Stop()
		t.Fatal("a floor started with GOGC set")
	}
}
