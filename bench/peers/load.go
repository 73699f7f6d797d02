package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// load is what one load generator run measured, before the server's side
// is added.
type load struct {
	// Count is the connections (handshake cells, warm-up included) or
	// requests (keep-alive cells) the server served.
	Count int64 `json:"count"`
	// Rate is handshakes or requests per second.
	Rate float64 `json:"rate"`
	// P50Ms and P99Ms are latency percentiles, 0 when the tool gives none.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	// Resumed is the share of resumed handshakes (handshake cells).
	Resumed float64 `json:"resumed_ratio"`
	// Errors counts failed connections or requests.
	Errors int64 `json:"errors"`
	// ALPN, Cipher and KeyExchange are what h2load reports it negotiated.
	ALPN        string `json:"alpn,omitempty"`
	Cipher      string `json:"cipher,omitempty"`
	KeyExchange string `json:"key_exchange,omitempty"`
	// RSSBefore and RSSAfter are the server's RSS before and with the idle
	// connections open; BytesPerConn is their difference per connection.
	RSSBefore    int64   `json:"rss_before,omitempty"`
	RSSAfter     int64   `json:"rss_after,omitempty"`
	BytesPerConn float64 `json:"bytes_per_conn,omitempty"`
	// ClientCPU is the load generator's utime+stime.
	ClientCPU time.Duration `json:"client_cpu_ns"`
	// Raw is the tool's output: bench's JSON, or wrk's and h2load's text.
	Raw json.RawMessage `json:"raw"`
}

// runTool runs argv with extra environment and returns its stdout and its
// CPU time; a non-zero exit is an error carrying its stderr.
func runTool(env []string, argv ...string) ([]byte, time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	if err != nil {
		return out.Bytes(), cpu, fmt.Errorf("%s: %w: %s", argv[0], err, strings.TrimSpace(lastLine(errb.String())))
	}
	return out.Bytes(), cpu, nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// benchJSON is the part of `edgeproxy bench --json` the harness reads.
type benchJSON struct {
	Runs []struct {
		Connections         int64   `json:"connections"`
		Warmup              int64   `json:"warmup_connections"`
		Errors              int64   `json:"errors"`
		WarmupErrors        int64   `json:"warmup_errors"`
		HandshakesPerSecond float64 `json:"handshakes_per_second"`
		ResumedRatio        float64 `json:"resumed_ratio"`
		LatencyMs           struct {
			P50 float64 `json:"p50"`
			P99 float64 `json:"p99"`
		} `json:"latency_ms"`
	} `json:"runs"`
}

// parseBench reads one run of edgeproxy bench's JSON.
func parseBench(out []byte) (load, error) {
	var b benchJSON
	if err := json.Unmarshal(out, &b); err != nil {
		return load{}, fmt.Errorf("edgeproxy bench output: %w", err)
	}
	if len(b.Runs) != 1 {
		return load{}, fmt.Errorf("edgeproxy bench output: %d runs, want 1", len(b.Runs))
	}
	r := b.Runs[0]
	return load{
		Count: r.Connections + r.Warmup - r.WarmupErrors, Rate: r.HandshakesPerSecond,
		P50Ms: r.LatencyMs.P50, P99Ms: r.LatencyMs.P99, Resumed: r.ResumedRatio,
		Errors: r.Errors + r.WarmupErrors, Raw: json.RawMessage(out),
	}, nil
}

var (
	wrkRequests = regexp.MustCompile(`(?m)^\s*(\d+) requests in `)
	wrkRate     = regexp.MustCompile(`(?m)^Requests/sec:\s+([\d.]+)`)
	wrkPct      = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$`)
	wrkNon2xx   = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses: (\d+)`)
	wrkSockErr  = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads wrk --latency's text output.
func parseWrk(out []byte) (load, error) {
	s := string(out)
	m := wrkRequests.FindStringSubmatch(s)
	r := wrkRate.FindStringSubmatch(s)
	if m == nil || r == nil {
		return load{}, fmt.Errorf("wrk output: no request count or rate in %q", s)
	}
	l := load{Raw: mustJSON(s)}
	l.Count, _ = strconv.ParseInt(m[1], 10, 64)
	l.Rate, _ = strconv.ParseFloat(r[1], 64)
	for _, p := range wrkPct.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		switch p[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if p[1] == "50" {
			l.P50Ms = v
		} else {
			l.P99Ms = v
		}
	}
	if e := wrkNon2xx.FindStringSubmatch(s); e != nil {
		n, _ := strconv.ParseInt(e[1], 10, 64)
		l.Errors += n
	}
	if e := wrkSockErr.FindStringSubmatch(s); e != nil {
		for _, x := range e[1:] {
			n, _ := strconv.ParseInt(x, 10, 64)
			l.Errors += n
		}
	}
	return l, nil
}

var (
	h2Rate   = regexp.MustCompile(`(?m)^finished in [\d.]+m?s, ([\d.]+) req/s`)
	h2Reqs   = regexp.MustCompile(`(?m)^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2Status = regexp.MustCompile(`(?m)^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
	h2ALPN   = regexp.MustCompile(`(?m)^Application protocol: (\S+)`)
	h2Cipher = regexp.MustCompile(`(?m)^TLS Protocol: (\S+)\s+Cipher: (\S+)\s+Server Temp Key: (\S+)`)
)

// parseH2load reads h2load's text output. It gives no latency percentiles.
func parseH2load(out []byte) (load, error) {
	s := string(out)
	r := h2Rate.FindStringSubmatch(s)
	q := h2Reqs.FindStringSubmatch(s)
	if r == nil || q == nil {
		return load{}, fmt.Errorf("h2load output: no rate or request counts in %q", s)
	}
	l := load{Raw: mustJSON(s)}
	l.Rate, _ = strconv.ParseFloat(r[1], 64)
	l.Count, _ = strconv.ParseInt(q[1], 10, 64)
	for _, x := range q[2:] {
		n, _ := strconv.ParseInt(x, 10, 64)
		l.Errors += n
	}
	if st := h2Status.FindStringSubmatch(s); st != nil {
		for _, x := range st[2:] {
			n, _ := strconv.ParseInt(x, 10, 64)
			l.Errors += n
		}
	}
	if a := h2ALPN.FindStringSubmatch(s); a != nil {
		l.ALPN = a[1]
	}
	if c := h2Cipher.FindStringSubmatch(s); c != nil {
		l.Cipher, l.KeyExchange = c[1]+" "+c[2], c[3]
	}
	return l, nil
}

func mustJSON(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
