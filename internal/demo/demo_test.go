package demo

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/demoapp"
	"github.com/edgeproxy/edgeproxy/internal/testserver"
)

var resumedRE = regexp.MustCompile(`summary: resumed (\d+\.\d+)% of handshakes`)

func resumedPercent(t *testing.T, out string) float64 {
	t.Helper()
	m := resumedRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no summary line in:\n%s", out)
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	return f
}

func TestDemoTickets(t *testing.T) {
	for _, tv := range []struct {
		name string
		v    uint16
	}{{"1.2", tls.VersionTLS12}, {"1.3", tls.VersionTLS13}} {
		v := tv.v
		t.Run(tv.name, func(t *testing.T) {
			var out bytes.Buffer
			sum, err := Run(context.Background(), Options{
				TLSVersion: v, BenchConns: 300, Concurrency: 4, Serve: time.Millisecond,
			}, &out)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", out.String())
			if p := resumedPercent(t, out.String()); p < 99 {
				t.Fatalf("demo printed %.2f%% resumed, want >= 99%%", p)
			}
			if sum.Resume.ResumedRatio() < 0.99 || sum.Full.Resumed != 0 || sum.Full.Full != 300 {
				t.Fatalf("summary: resume %d/%d, full run %d full %d resumed", sum.Resume.Resumed, sum.Resume.Connections, sum.Full.Full, sum.Full.Resumed)
			}
			if sum.Resume.CrossNode == 0 {
				t.Fatal("no resumption crossed nodes")
			}
			for _, want := range []string{"3 proxy nodes", "node 3    https://127.0.0.1:", "handshakes/s", "latency p50",
				"openssl s_client -connect 127.0.0.1:", "-reconnect", "curl -k https://127.0.0.1:", "edgeproxy bench --targets 127.0.0.1:"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q", want)
				}
			}
		})
	}
}

func TestDemoOff(t *testing.T) {
	var out bytes.Buffer
	sum, err := Run(context.Background(), Options{
		FleetOptions: FleetOptions{Mode: "off", Nodes: 2}, BenchConns: 60, Concurrency: 2, Serve: time.Millisecond,
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if p := resumedPercent(t, out.String()); p != 0 || sum.Resume.Resumed != 0 || sum.Resume.Full != 60 {
		t.Fatalf("mode off: printed %.2f%%, %d resumed of %d", p, sum.Resume.Resumed, sum.Resume.Connections)
	}
	if !strings.Contains(out.String(), "2 proxy nodes") {
		t.Fatalf("output:\n%s", out.String())
	}
}

func TestDemoSharedStores(t *testing.T) {
	for _, mode := range []string{"redis", "memcached"} {
		t.Run(mode, func(t *testing.T) {
			fo := FleetOptions{Mode: mode}
			if mode == "redis" {
				fo.Redis = testserver.Redis(t).Addr
			} else {
				fo.Memcached = testserver.Memcached(t).Addr
			}
			var out bytes.Buffer
			sum, err := Run(context.Background(), Options{FleetOptions: fo, BenchConns: 120, Concurrency: 4, Serve: time.Millisecond}, &out)
			if err != nil {
				t.Fatal(err)
			}
			if p := resumedPercent(t, out.String()); p < 99 || sum.Resume.CrossNode == 0 {
				t.Fatalf("mode %s: %.2f%% resumed, %d across nodes; want >= 99%% across nodes\n%s", mode, p, sum.Resume.CrossNode, out.String())
			}
		})
	}
}

// TestDemoStickyUnderRoundRobin shows what the docs say: node-local
// sessions do not survive round robin across nodes.
func TestDemoStickyUnderRoundRobin(t *testing.T) {
	var out bytes.Buffer
	sum, err := Run(context.Background(), Options{FleetOptions: FleetOptions{Mode: "sticky"}, BenchConns: 90, Concurrency: 3, Serve: time.Millisecond}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Resume.CrossNode != 0 {
		t.Fatalf("sticky: %d resumptions on another node", sum.Resume.CrossNode)
	}
	if sum.Resume.Connections != sum.Resume.Resumed+sum.Resume.Full+sum.Resume.Errors {
		t.Fatalf("sticky: counts do not add up: %+v", sum.Resume)
	}
}

func TestModeSwitch(t *testing.T) {
	tests := []struct {
		mode, want string
	}{
		{"", ""},
		{"tickets", ""},
		{"off", ""},
		{"sticky", ""},
		{"redis", "demo: mode redis needs --redis HOST:PORT"},
		{"memcached", "demo: mode memcached needs --memcached HOST:PORT"},
		{"psk", `demo: mode "psk": must be tickets, sticky, off, redis or memcached`},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			o := FleetOptions{Mode: tt.mode}
			err := o.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate: %v, want %q", err, tt.want)
			}
			if _, err := StartFleet(context.Background(), o); err == nil {
				t.Fatal("StartFleet accepted the mode")
			}
		})
	}
	if err := (&FleetOptions{Nodes: MaxNodes + 1}).Validate(); err == nil {
		t.Fatal("too many nodes accepted")
	}
}

// signalWriter collects output and closes ready once it contains marker.
type signalWriter struct {
	mu     sync.Mutex // mu protects b and fired
	b      bytes.Buffer
	marker string
	fired  bool
	ready  chan struct{}
}

func (s *signalWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	if !s.fired && strings.Contains(s.b.String(), s.marker) {
		s.fired = true
		close(s.ready)
	}
	return len(p), nil
}

func (s *signalWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDemoServesUntilCancelled checks the serving phase: the nodes answer
// through the proxy while the demo waits, and it ends when ctx does.
func TestDemoServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &signalWriter{marker: "serving until Ctrl-C", ready: make(chan struct{})}
	var progress bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, Options{
			FleetOptions: FleetOptions{Admin: true}, BenchConns: 30, Concurrency: 2, Progress: &progress,
		}, w)
		done <- err
	}()
	select {
	case <-w.ready:
	case err := <-done:
		t.Fatalf("demo ended before serving: %v\n%s", err, w.String())
	}
	out := w.String()
	m := regexp.MustCompile(`curl -k (https://\S+)/hello`).FindStringSubmatch(out)
	if m == nil || !strings.Contains(out, "/metrics") {
		t.Fatalf("no curl line or metrics address in:\n%s", out)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	resp, err := c.Get(m[1] + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var reply demoapp.Reply
	if err := json.Unmarshal(body, &reply); err != nil || resp.StatusCode != 200 || reply.App != "demo-upstream" || reply.Path != "/hello" {
		t.Fatalf("GET through the demo: %d %s (%v)", resp.StatusCode, body, err)
	}
	c.CloseIdleConnections()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("demo ended with %v", err)
	}
	if !strings.Contains(w.String(), "stopping") {
		t.Fatal("demo did not say it was stopping")
	}
	if !strings.Contains(progress.String(), "resume: done") {
		t.Fatalf("progress output: %q", progress.String())
	}
}
