package demo

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// TestEveryListedModeRuns: each mode the help lists is accepted and runs a
// fleet (#14: the help said "tickets or off" while all five work).
func TestEveryListedModeRuns(t *testing.T) {
	t.Parallel()
	for _, mode := range Modes {
		o := FleetOptions{Mode: mode, Nodes: 1}
		switch mode {
		case "redis":
			o.Redis = deadAddr(t) // nodes start even when the store is down
		case "memcached":
			o.Memcached = deadAddr(t)
		}
		f, err := StartFleet(context.Background(), o)
		if err != nil {
			t.Fatalf("mode %s: %v", mode, err)
		}
		if f.Mode != mode || len(f.Nodes) != 1 {
			t.Errorf("mode %s: fleet runs mode %q with %d nodes", mode, f.Mode, len(f.Nodes))
		}
		f.Close(context.Background())
	}
}

// TestDemoUnreachableStore: with the store down nothing resumes, and the
// summary says so plainly instead of printing a speed-up between two runs
// of full handshakes (#14).
func TestDemoUnreachableStore(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"redis", "memcached"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			fo := FleetOptions{Mode: mode, Nodes: 2}
			if mode == "redis" {
				fo.Redis = deadAddr(t)
			} else {
				fo.Memcached = deadAddr(t)
			}
			var out bytes.Buffer
			sum, err := Run(context.Background(), Options{FleetOptions: fo, BenchConns: 40, Concurrency: 2, Serve: time.Millisecond}, &out)
			if err != nil {
				t.Fatal(err)
			}
			text := out.String()
			if sum.Resume.Resumed != 0 || resumedPercent(t, text) != 0 {
				t.Fatalf("store down: %d resumed\n%s", sum.Resume.Resumed, text)
			}
			if !strings.Contains(text, "no handshake resumed") || !strings.Contains(text, "is the "+mode+" store reachable?") {
				t.Errorf("summary does not say plainly that nothing resumed:\n%s", text)
			}
			if strings.Contains(text, "handshakes/s (") || strings.Contains(text, "resume ÷ full") || strings.Contains(text, "fewer than 99%") {
				t.Errorf("summary shows a ratio although nothing resumed:\n%s", text)
			}
		})
	}
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
