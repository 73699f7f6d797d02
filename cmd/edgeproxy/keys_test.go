package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/edgeproxy/edgeproxy/internal/app"
	"github.com/edgeproxy/edgeproxy/internal/config"
	"github.com/edgeproxy/edgeproxy/proxy"
)

// TestEveryKeysGenFileLoadsInServe runs `keys gen` for every count 1..5 and
// size, with no other option, and starts a node on each file the way
// `serve --ticket-keys FILE` does (#14: --count 3 used to write 240 bytes
// that serve refused).
func TestEveryKeysGenFileLoadsInServe(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, size := range []string{"", "48", "80"} {
		for count := 1; count <= 5; count++ {
			f := filepath.Join(dir, fmt.Sprintf("k%s-%d", size, count))
			args := []string{"keys", "gen", "--out", f, "--count", fmt.Sprint(count)}
			if size != "" {
				args = append(args, "--size", size)
			}
			if code, _, e := runCmd(t, args...); code != 0 {
				t.Fatalf("%q: code %d, %s", args, code, e)
			}
			if got := serveRingSize(t, f); got != count {
				t.Errorf("%q: serve loaded %d keys, want %d", args, got, count)
			}
		}
	}
	// An ambiguous binary layout is refused at generation, not at start.
	f := filepath.Join(dir, "bin")
	if code, _, e := runCmd(t, "keys", "gen", "--format", "binary", "--count", "3", "--out", f); code != 1 || !strings.Contains(e, "use the base64 format") {
		t.Fatalf("binary --count 3: code %d, %q; want a refusal pointing to base64", code, e)
	}
}

// serveRingSize starts a node with the key file as serve's --ticket-keys
// sets it and returns the size of the ring it loaded.
func serveRingSize(t *testing.T, keyFile string) int {
	t.Helper()
	off := ""
	cfg := config.Config{
		Listen: "127.0.0.1:0", Admin: &off,
		Routes:     []proxy.RouteConfig{{Upstreams: []string{"http://127.0.0.1:1"}}},
		Resumption: config.Resumption{TicketKeys: config.TicketKeys{Source: "file", Files: []string{keyFile}}},
	}
	a, err := app.New(app.Options{Config: &cfg, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatalf("start with %s: %v", keyFile, err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	}()
	mfs, err := a.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "edgeproxy_ticketkeys_ring_size" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("no edgeproxy_ticketkeys_ring_size metric")
	return 0
}
