package config

import (
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/heapfloor"
)

// TestGCField: gc.min_heap_bytes decodes, defaults, turns off with -1, and
// a bad value is refused naming the field.
func TestGCField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, gc string
		want     int64
	}{
		{"absent", "", heapfloor.DefaultMinHeapBytes},
		{"set", "gc: {min_heap_bytes: 67108864}\n", 64 << 20},
		{"off", "gc: {min_heap_bytes: -1}\n", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse(strings.NewReader(tt.gc + goodRoute))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.GC.Floor(); got != tt.want {
				t.Errorf("floor %d, want %d", got, tt.want)
			}
		})
	}
	_, err := Parse(strings.NewReader("gc: {min_heap_bytes: -2}\n" + goodRoute))
	if want := "gc.min_heap_bytes: must be positive, or -1 for no floor, got -2"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Parse error = %v; want it to contain %q", err, want)
	}
}
