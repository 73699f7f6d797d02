package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testserver"
	"github.com/edgeproxy/edgeproxy/proxy"
)

var versions = []struct {
	name string
	v    uint16
}{{"1.2", tls.VersionTLS12}, {"1.3", tls.VersionTLS13}}

func TestCountsAddUp(t *testing.T) {
	good, dead := goServer(t, false), deadAddr(t)
	for _, mode := range []string{ModeFull, ModeResume} {
		t.Run(mode, func(t *testing.T) {
			r, err := Run(context.Background(), Config{
				Targets: []string{good, dead}, Mode: mode, Conns: 120, Concurrency: 4, Insecure: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			checkCounts(t, r, 120)
			if r.Errors == 0 || r.ErrorsByKind["dial_refused"] != r.Errors {
				t.Fatalf("errors %d by kind %v: want only dial_refused, some", r.Errors, r.ErrorsByKind)
			}
			if r.Full+r.Resumed == 0 {
				t.Fatal("no connection to the live target succeeded")
			}
			if mode == ModeFull && r.Resumed != 0 {
				t.Fatalf("mode full resumed %d connections", r.Resumed)
			}
			if mode == ModeResume && (r.Warmup != 4 || r.WarmupErrors != 2) {
				t.Fatalf("warm-up %d (%d failed), want 4 (2 to the dead target)", r.Warmup, r.WarmupErrors)
			}
			if r.ErrorExamples["dial_refused"] == "" {
				t.Fatal("no example message for dial_refused")
			}
		})
	}
}

func TestResumeAgainstTicketsOff(t *testing.T) {
	addr := goServer(t, true)
	for _, tv := range versions {
		t.Run(tv.name, func(t *testing.T) {
			r, err := Run(context.Background(), Config{
				Targets: []string{addr}, Mode: ModeResume, TLSVersion: tv.v, Conns: 100, Concurrency: 4, Insecure: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			checkCounts(t, r, 100)
			if r.Resumed != 0 || r.Full != 100 || r.ResumedRatio() != 0 {
				t.Fatalf("tickets off: full %d, resumed %d (%.1f%%); want 100 full, 0%% resumed", r.Full, r.Resumed, 100*r.ResumedRatio())
			}
		})
	}
}

func TestResumeAcrossThreeNodes(t *testing.T) {
	nodes := fleet(t, 3)
	for _, tv := range versions {
		for _, httpGet := range []bool{false, true} {
			name := tv.name
			if httpGet {
				name += "/http"
			}
			t.Run(name, func(t *testing.T) {
				r, err := Run(context.Background(), Config{
					Targets: nodes, Mode: ModeResume, TLSVersion: tv.v, Conns: 300, Concurrency: 4,
					ServerName: "localhost", Insecure: true, HTTP: httpGet,
				})
				if err != nil {
					t.Fatal(err)
				}
				checkCounts(t, r, 300)
				t.Logf("TLS %s: %d/%d resumed, %d on another node than the one that issued the session",
					tv.name, r.Resumed, r.Connections, r.CrossNode)
				if r.Errors != 0 {
					t.Fatalf("errors: %v %v", r.ErrorsByKind, r.ErrorExamples)
				}
				if r.ResumedRatio() < 0.99 {
					t.Fatalf("resumed %.2f%%, want >= 99%% across 3 nodes sharing keys", 100*r.ResumedRatio())
				}
				if r.CrossNode < r.Resumed/2 {
					t.Fatalf("only %d of %d resumptions crossed nodes", r.CrossNode, r.Resumed)
				}
				if r.ResumedStats.BytesReceived <= 0 || r.ResumedStats.BytesSent <= 0 {
					t.Fatalf("no bytes counted: %+v", r.ResumedStats)
				}
			})
		}
	}
}

// TestFullAgainstFleet checks mode full: no connection offers a session,
// and a full handshake receives more bytes (the certificate) than a resumed
// one.
func TestFullAgainstFleet(t *testing.T) {
	nodes := fleet(t, 3)
	cfg := Config{Targets: nodes, Conns: 60, Concurrency: 3, Insecure: true, TLSVersion: tls.VersionTLS12}
	full, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, full, 60)
	cfg.Mode = ModeResume
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if full.Full != 60 || full.Resumed != 0 {
		t.Fatalf("full mode: %d full, %d resumed", full.Full, full.Resumed)
	}
	if full.FullStats.BytesReceived <= res.ResumedStats.BytesReceived {
		t.Fatalf("full handshake received %.0f bytes, resumed %.0f: want more for full", full.FullStats.BytesReceived, res.ResumedStats.BytesReceived)
	}
	var text bytes.Buffer
	if err := WriteText(&text, full, res); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"handshakes/s", "full / resumed / errors", "60 / 0 / 0", "latency p99", "bytes received / handshake", "client CPU share", "resume ÷ full"} {
		if !strings.Contains(text.String(), want) {
			t.Fatalf("text report lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, full, res); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Runs []struct {
			Mode           string           `json:"mode"`
			Connections    int64            `json:"connections"`
			Full           int64            `json:"full"`
			Resumed        int64            `json:"resumed"`
			Errors         int64            `json:"errors"`
			ResumedRatio   float64          `json:"resumed_ratio"`
			ErrorsByKind   map[string]int64 `json:"errors_by_kind"`
			ClientCPUShare *float64         `json:"client_cpu_share"`
			LatencyMs      struct {
				P99 float64 `json:"p99"`
			} `json:"latency_ms"`
		} `json:"runs"`
		Speedup float64 `json:"speedup"`
	}
	if err := json.Unmarshal(js.Bytes(), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, js.String())
	}
	if len(rep.Runs) != 2 || rep.Runs[0].Mode != "full" || rep.Runs[1].Mode != "resume" || rep.Speedup <= 0 {
		t.Fatalf("JSON report: %+v", rep)
	}
	for _, r := range rep.Runs {
		if r.Connections != r.Full+r.Resumed+r.Errors || r.ErrorsByKind == nil || r.ClientCPUShare == nil || r.LatencyMs.P99 <= 0 {
			t.Fatalf("JSON run: %+v", r)
		}
	}
}

func TestDurationBound(t *testing.T) {
	addr := goServer(t, false)
	var last Progress
	calls := 0
	r, err := Run(context.Background(), Config{
		Targets: []string{addr}, Duration: 300 * time.Millisecond, Concurrency: 2, Insecure: true,
		Progress: func(p Progress) { last = p; calls++ }, ProgressEvery: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Connections == 0 {
		t.Fatal("no connection in 300ms")
	}
	checkCounts(t, r, r.Connections)
	if calls == 0 || !last.Final || last.Done != r.Connections || last.Duration != 300*time.Millisecond {
		t.Fatalf("progress: %d calls, last %+v; want a final call with %d done", calls, last, r.Connections)
	}
}

func TestCancelledContext(t *testing.T) {
	addr := goServer(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, mode := range []string{ModeFull, ModeResume} {
		r, err := Run(ctx, Config{Targets: []string{addr}, Mode: mode, Conns: 1000, Insecure: true})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: err %v, want context.Canceled", mode, err)
		}
		if r == nil || r.Connections != 0 || r.ErrorsByKind == nil {
			t.Fatalf("%s: result %+v: want an empty result", mode, r)
		}
	}
}

func TestCertificateErrorKind(t *testing.T) {
	addr := goServer(t, false)
	r, err := Run(context.Background(), Config{Targets: []string{addr}, Conns: 4, Concurrency: 1, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if r.ErrorsByKind["handshake_certificate"] != 4 {
		t.Fatalf("errors %v: want 4 handshake_certificate (self-signed, no --insecure)", r.ErrorsByKind)
	}
	var text bytes.Buffer
	WriteText(&text, r)
	if !strings.Contains(text.String(), "--insecure") {
		t.Fatalf("text report does not suggest --insecure:\n%s", text.String())
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" means valid
	}{
		{"minimal", Config{Targets: []string{"127.0.0.1:1"}}, ""},
		{"no targets", Config{}, "at least one"},
		{"bad target", Config{Targets: []string{"localhost"}}, `targets[0]: "localhost"`},
		{"bad mode", Config{Targets: []string{"a:1"}, Mode: "both"}, `mode: "both"`},
		{"bad version", Config{Targets: []string{"a:1"}, TLSVersion: tls.VersionTLS11}, "tls version"},
		{"negative conns", Config{Targets: []string{"a:1"}, Conns: -1}, "conns"},
		{"negative duration", Config{Targets: []string{"a:1"}, Duration: -time.Second}, "duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "bench: ") {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestProgressWriter(t *testing.T) {
	var plain bytes.Buffer
	p := &ProgressWriter{W: &plain, Label: "full"}
	for i := 1; i <= 8; i++ {
		p.Update(Progress{Elapsed: time.Duration(i) * 250 * time.Millisecond, Duration: 2 * time.Second, Done: int64(i * 10)})
	}
	p.Update(Progress{Elapsed: 2 * time.Second, Duration: 2 * time.Second, Done: 90, Resumed: 45, Final: true})
	lines := strings.Split(strings.TrimSpace(plain.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[2], "full: done") || strings.Contains(plain.String(), "\r") {
		t.Fatalf("plain progress: want a line per second and a final line, got %q", plain.String())
	}
	if !strings.Contains(lines[2], "resumed 50.0%") {
		t.Fatalf("final line %q lacks the resumed ratio", lines[2])
	}
	var tty bytes.Buffer
	p = &ProgressWriter{W: &tty, TTY: true, Label: "resume"}
	p.Update(Progress{Elapsed: time.Second, Conns: 100, Done: 50})
	p.Update(Progress{Elapsed: 2 * time.Second, Conns: 100, Done: 100, Final: true})
	out := tty.String()
	if strings.Count(out, "\r") != 2 || !strings.Contains(out, "[############............]  50%") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("terminal progress: %q", out)
	}
}

// TestFirstVisitIsIssuedASession: mode first makes full handshakes only,
// yet the server issues a session on every one of them (WrapSession runs),
// where mode full offers no resumption and is issued none: the full
// handshake a resumption saves, ticket included.
func TestFirstVisitIsIssuedASession(t *testing.T) {
	t.Parallel()
	certs, err := proxy.SelfSignedCerts()
	if err != nil {
		t.Fatal(err)
	}
	for _, tv := range versions {
		for _, mode := range []string{ModeFull, ModeFirst} {
			t.Run(tv.name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				var wrapped atomic.Int64
				srv := &tls.Config{GetCertificate: certs.GetCertificate}
				srv.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
					wrapped.Add(1)
					return srv.EncryptTicket(cs, ss)
				}
				addr := testserver.TLSDiscard(t, srv)
				r, err := Run(context.Background(), Config{
					Targets: []string{addr}, Mode: mode, TLSVersion: tv.v, Conns: 40, Concurrency: 2, Insecure: true,
				})
				if err != nil {
					t.Fatal(err)
				}
				checkCounts(t, r, 40)
				if r.Full != 40 || r.Resumed != 0 {
					t.Fatalf("full %d, resumed %d: want 40 full", r.Full, r.Resumed)
				}
				want := int64(0)
				if mode == ModeFirst {
					want = 40
				}
				if got := wrapped.Load(); got < want || mode == ModeFull && got != 0 {
					t.Fatalf("server issued %d sessions over 40 connections in mode %s, want %d", got, mode, want)
				}
			})
		}
	}
}
