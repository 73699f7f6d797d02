package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/demo"
)

// demoFleet starts 3 in-process nodes sharing a generated ticket key ring.
func demoFleet(t *testing.T) []string {
	t.Helper()
	f, err := demo.StartFleet(context.Background(), demo.FleetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.Close(ctx)
	})
	return f.Addrs()
}

func TestBenchCommand(t *testing.T) {
	addrs := demoFleet(t)
	chart := filepath.Join(t.TempDir(), "bench.svg")
	code, o, e := runCmd(t, "bench", "--targets", strings.Join(addrs, ","), "--mode", "both", "--conns", "90",
		"--concurrency", "3", "--insecure", "--sni", "localhost", "--json", "--chart", chart)
	if code != 0 {
		t.Fatalf("bench: code %d, stderr %s", code, e)
	}
	var rep struct {
		Runs []struct {
			Mode         string  `json:"mode"`
			Connections  int64   `json:"connections"`
			Full         int64   `json:"full"`
			Resumed      int64   `json:"resumed"`
			Errors       int64   `json:"errors"`
			ResumedRatio float64 `json:"resumed_ratio"`
		} `json:"runs"`
		Speedup float64 `json:"speedup"`
	}
	if err := json.Unmarshal([]byte(o), &rep); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, o)
	}
	if len(rep.Runs) != 2 || rep.Runs[0].Mode != "full" || rep.Runs[1].Mode != "resume" {
		t.Fatalf("runs: %+v", rep.Runs)
	}
	for _, r := range rep.Runs {
		if r.Connections != 90 || r.Full+r.Resumed+r.Errors != 90 {
			t.Fatalf("%s: counts do not add up: %+v", r.Mode, r)
		}
	}
	if rep.Runs[0].Resumed != 0 || rep.Runs[1].ResumedRatio < 0.99 {
		t.Fatalf("full resumed %d, resume ratio %.3f: want 0 and >= 0.99", rep.Runs[0].Resumed, rep.Runs[1].ResumedRatio)
	}
	if !strings.Contains(e, "resume: done") {
		t.Fatalf("no progress lines on stderr: %q", e)
	}
	svg, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		XMLName xml.Name `xml:"svg"`
	}
	if err := xml.Unmarshal(svg, &doc); err != nil || !strings.Contains(string(svg), `id="latency-resume"`) {
		t.Fatalf("chart: %v", err)
	}

	// Text output, one mode, bounded by duration.
	code, o, e = runCmd(t, "bench", "--targets", addrs[0], "--mode", "full", "--duration", "200ms", "--concurrency", "2", "--insecure", "--tls", "1.2", "--quiet")
	if code != 0 || !strings.Contains(o, "handshakes/s") || !strings.Contains(o, "TLS 1.2") || e != "" {
		t.Fatalf("text bench: code %d\n%s\nstderr %q", code, o, e)
	}
}

func TestBenchCommandErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "full"}, "--targets is required"},
		{[]string{"--targets", "127.0.0.1:1", "--mode", "half"}, `--mode "half"`},
		{[]string{"--targets", "127.0.0.1:1", "--duration", "1s", "--conns", "5"}, "exclude each other"},
		{[]string{"--targets", "127.0.0.1:1", "--tls", "1.1"}, `--tls "1.1"`},
		{[]string{"--targets", "nohost"}, `targets[0]: "nohost"`},
		{[]string{"--targets", "127.0.0.1:1", "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		code, _, e := runCmd(t, append([]string{"bench"}, tt.args...)...)
		if code != 1 || !strings.Contains(e, tt.want) {
			t.Errorf("bench %q: code %d, stderr %q; want 1 and %q", tt.args, code, e, tt.want)
		}
	}
}
