package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/config"
)

func testParams() params {
	p := newParams("/work/dir", 3000)
	p.Port, p.UpstreamPort = 18443, 18080
	return p
}

// TestTemplatesRender renders every peer's configuration and checks that the
// settings that make the peers equivalent are in it.
func TestTemplatesRender(t *testing.T) {
	t.Parallel()
	common := []string{"18080"}
	tests := []struct {
		template string
		want     []string
	}{
		{"upstream.nginx.conf", []string{"listen 127.0.0.1:18443", `return 200 "ok"`, "access_log off", "keepalive_requests"}},
		{"nginx.conf", append([]string{"listen 127.0.0.1:18443 ssl http2", "worker_processes 2;", "access_log off;",
			"keepalive 128;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`, "keepalive_requests 10000000;",
			"ssl_session_ticket_key /work/dir/ticket.key;", "ssl_ecdh_curve X25519:prime256v1;",
			"ssl_certificate /work/dir/cert.pem;", "worker_connections 4024;"}, common...)},
		{"haproxy.cfg", append([]string{"bind 127.0.0.1:18443 ssl crt /work/dir/haproxy.pem", "nbthread 2", "http-reuse always",
			"alpn h2,http/1.1", "curves X25519:P-256", "tls-ticket-keys /work/dir/haproxy-ticket.keys", "maxconn 4024"}, common...)},
		{"Caddyfile", append([]string{":18443 {", "bind 127.0.0.1", "auto_https off", "tls /work/dir/cert.pem /work/dir/key.pem",
			"curves x25519 secp256r1", "protocols h1 h2", "reverse_proxy 127.0.0.1:18080"}, common...)},
		{"edgeproxy.yaml", append([]string{"listen: 127.0.0.1:18443", "access: false", "source: file",
			"files: [/work/dir/ticket.key]", "max_connections_per_ip: 4024"}, common...)},
	}
	for _, tt := range tests {
		t.Run(tt.template, func(t *testing.T) {
			t.Parallel()
			p := testParams()
			if tt.template == upstreamPeer.template {
				p.UpstreamPort = p.Port
			}
			b, err := render(tt.template, p)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if tt.template == upstreamPeer.template && w == "18080" {
					continue
				}
				if !bytes.Contains(b, []byte(w)) {
					t.Errorf("rendered %s lacks %q:\n%s", tt.template, w, b)
				}
			}
			if bytes.Contains(b, []byte("<no value>")) || bytes.Contains(b, []byte("{{")) {
				t.Errorf("rendered %s has an unfilled field:\n%s", tt.template, b)
			}
		})
	}
}

// TestEdgeproxyConfigValid checks the rendered edgeproxy.yaml against
// edgeproxy's own configuration loader: unknown fields and bad values fail.
func TestEdgeproxyConfigValid(t *testing.T) {
	t.Parallel()
	b, err := render("edgeproxy.yaml", testParams())
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("rendered edgeproxy.yaml does not validate: %v\n%s", err, b)
	}
	if c.Log.Access == nil || *c.Log.Access {
		t.Errorf("access log not off: %v", c.Log.Access)
	}
	if c.Resumption.TicketKeys.Source != "file" || len(c.Resumption.TicketKeys.Files) != 1 {
		t.Errorf("ticket keys = %+v, want the one shared file", c.Resumption.TicketKeys)
	}
	if len(c.Routes) != 1 || len(c.Routes[0].Upstreams) != 1 || c.Routes[0].Upstreams[0] != "http://127.0.0.1:18080" {
		t.Errorf("routes = %+v, want one route to the common upstream", c.Routes)
	}
	if c.Admin == nil || *c.Admin != "" {
		t.Errorf("admin listener not off: %v", c.Admin)
	}
}

func TestHAProxyTicketKeys(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, 80)
	b, err := haproxyTicketKeys(key)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != haproxyTicketSlots {
		t.Fatalf("%d lines, want %d", len(lines), haproxyTicketSlots)
	}
	for _, l := range lines {
		got, err := base64.StdEncoding.DecodeString(l)
		if err != nil || !bytes.Equal(got, key) {
			t.Errorf("line %q does not decode to the key (%v)", l, err)
		}
	}
	if _, err := haproxyTicketKeys(key[:47]); err == nil {
		t.Error("47-byte key accepted")
	}
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The testdata files are real outputs of the tools, from a harness run.
func TestParseWrk(t *testing.T) {
	t.Parallel()
	l, err := parseWrk(readTestdata(t, "wrk.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Count != 9971 || l.Rate != 8950.19 || l.P50Ms != 2.18 || l.P99Ms != 77.09 || l.Errors != 0 {
		t.Errorf("got %+v", l)
	}
	errs := "  10 requests in 1.00s, 1KB read\n  Socket errors: connect 1, read 2, write 3, timeout 4\n  Non-2xx or 3xx responses: 5\nRequests/sec:   10.00\n"
	l, err = parseWrk([]byte(errs))
	if err != nil || l.Errors != 15 {
		t.Errorf("errors = %d, %v; want 15", l.Errors, err)
	}
	if _, err := parseWrk([]byte("unable to connect to 127.0.0.1:1 Connection refused\n")); err == nil {
		t.Error("output without figures accepted")
	}
}

func TestParseH2load(t *testing.T) {
	t.Parallel()
	l, err := parseH2load(readTestdata(t, "h2load.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Count != 7225 || l.Rate != 7225 || l.Errors != 0 || l.ALPN != "h2" ||
		l.Cipher != "TLSv1.3 TLS_AES_128_GCM_SHA256" || l.KeyExchange != "X25519" {
		t.Errorf("got %+v", l)
	}
	if _, err := parseH2load([]byte("No protocol negotiated\n")); err == nil {
		t.Error("output without figures accepted")
	}
}

func TestParseBench(t *testing.T) {
	t.Parallel()
	l, err := parseBench(readTestdata(t, "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	// 2057 measured connections plus 8 warm-up ones.
	if l.Count != 2065 || l.Resumed != 1 || l.P50Ms != 1.417 || l.P99Ms != 6.324 || l.Errors != 0 {
		t.Errorf("got %+v", l)
	}
	if _, err := parseBench([]byte(`{"runs":[]}`)); err == nil {
		t.Error("zero runs accepted")
	}
}

func TestParseStat(t *testing.T) {
	t.Parallel()
	// A command name with spaces and parentheses; utime 150, stime 50 ticks.
	line := "4242 (a) b (c) S 17 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 3 0 1000 1000000 500 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.ppid != 17 || st.cpu != 2*time.Second {
		t.Errorf("got ppid %d cpu %v, want 17 and 2s", st.ppid, st.cpu)
	}
	if _, err := parseStat([]byte("4242 (x) S 1")); err == nil {
		t.Error("short line accepted")
	}
}

// TestSampleSelf reads this test process from /proc: its CPU time grows
// with work and its RSS is not zero.
func TestSampleSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	pid := os.Getpid()
	a := sample(pid)
	if a.Procs < 1 || a.RSS <= 0 || a.Peak < a.RSS {
		t.Fatalf("sample = %+v", a)
	}
	// utime+stime counts in 10 ms ticks: spin until it moves, bounded.
	x := 0
	for range 10000 {
		for i := range 1 << 16 {
			x += i
		}
		if sample(pid).CPU > a.CPU {
			return
		}
	}
	t.Errorf("CPU time did not grow from %v (%s)", a.CPU, strconv.Itoa(x))
}

// TestSummarizeFailedPass checks that a pass that measured nothing is an
// error, not a zero that halves the mean.
func TestSummarizeFailedPass(t *testing.T) {
	t.Parallel()
	recs := []record{
		{Section: sectionHandshake, Cell: "c", Server: "nginx", load: load{Count: 100, Rate: 1000}, ServerCPU: 10 * time.Millisecond},
		{Section: sectionHandshake, Cell: "c", Server: "nginx", Error: "boom"},
		{Section: sectionHandshake, Cell: "c", Server: "edgeproxy", load: load{Count: 100, Rate: 500}, ServerCPU: 20 * time.Millisecond},
	}
	recs = append(recs, record{Section: sectionHandshake, Cell: "c", Server: "edgeproxy", load: load{Count: 100, Rate: 700}, ServerCPU: 20 * time.Millisecond})
	sum := summarize(recs)
	if len(sum) != 2 {
		t.Fatalf("%d summaries, want 2", len(sum))
	}
	n := sum[0]
	if n.Passes != 1 || n.Rate != 1000 || n.ServerCPUus != 100 || n.Errors != 1 || len(n.Messages) != 1 {
		t.Errorf("nginx = %+v", n)
	}
	var b bytes.Buffer
	writeLoad(&b, sectionHandshake, sum)
	if !strings.Contains(b.String(), "| c | edgeproxy | 600 | 17% | 0.60× |") || !strings.Contains(b.String(), "| 200 | 2.00× |") {
		t.Errorf("table:\n%s", b.String())
	}
}

// TestScriptParses runs bash -n on the harness script.
func TestScriptParses(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	if out, err := exec.Command("bash", "-n", "../../scripts/bench-peers.sh").CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v: %s", err, out)
	}
}

// TestTaking: a peer is measured only in its sections (gofloor proxies
// nothing: no GET or keep-alive cells), in -servers order.
func TestTaking(t *testing.T) {
	h := &harness{o: &options{servers: []string{"nginx", "gofloor", "edgeproxy"}}}
	for sec, want := range map[string][]string{
		sectionHandshake: {"nginx", "gofloor", "edgeproxy"},
		sectionGet:       {"nginx", "edgeproxy"},
		sectionKeepAlive: {"nginx", "edgeproxy"},
		sectionIdle:      {"nginx", "gofloor", "edgeproxy"},
	} {
		if got := h.taking(sec); !slices.Equal(got, want) {
			t.Errorf("taking(%s) = %v, want %v", sec, got, want)
		}
	}
}
